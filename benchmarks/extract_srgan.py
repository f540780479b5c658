"""Extract a real pretrained victim: the SRGAN x4 generator of leftthomas/SRGAN, through its HTTP API.

The whole attack of the extraction study on a real, pretrained super-resolution model:

1. **victim**: :func:`copymark.nets.victims.load_srgan_x4` builds the SRGAN x4 generator and loads
   ``netG_epoch_4_100.pth`` strictly (see ``../shared/data/weights/srgan_x4/MANIFEST.md``); it is
   exported to TorchScript (``torch.jit.script``), reloaded, and checked against the eager module.
2. **in-process reference**: the eager module's 8-bit outputs on Set5 (and Set14 with
   ``--in-process-sets Set5,Set14``) give the PSNR/SSIM (Y, crop 4, 8-bit protocol) the owner
   would measure; the issue quotes 30.66 dB on Set5 and 27.69 dB on Set14.
3. **serving**: the ``.pt`` file is the victim SPEC of the real API (``create_app`` on uvicorn,
   127.0.0.1, a free port, API keys with budgets); from here on the attacker and the evaluator
   reach it only through HTTP.
4. **extraction**: ``run_campaign`` sends ``--queries`` low-resolution queries taken from
   ``../shared/data/tiny_imagenet`` (64 px photos; ``--size`` px crops of them, or the whole
   image with ``--size 64``) and stores every answer.
5. **surrogate**: an SRResNet (``--blocks``, ``--nf``) trained with the pixel MSE on the
   (query, answer) pairs for ``--iters`` iterations (``copymark.train``).
6. **evaluation**: tables A (victim vs ground truth), B (surrogate vs victim), C (surrogate vs
   ground truth) on Set5 (the test set) and Set14 (the benchmark set), with the bicubic
   baselines (``copymark.images.upscale_bicubic`` vs the victim, to read B against, and vs the
   ground truth, to read A and C against) and the untrained-surrogate baseline; victim answers
   come through the API and are kept in ``store/evaluation/``.

With ``--reuse RUN`` the earlier run's store is copied and the surrogate trains on its first
``--queries`` answers (the order they were answered in), so a 1,000-query record of a 3,000-answer
store really trains on 1,000 pairs; ``queries.pairs_trained_on`` states the number.

Paths in the record name data relative to the repository (``benchmarks/...``) or to the shared
data folder beside it (``../shared/data/...``), never by the absolute paths of the machine that
made it; outputs are named relative to ``--out``.

Prints one JSON object (also written to ``--out/result.json``): the A/B/C means (psnr_y, ssim_y,
psnr_rgb), the gap C - A per set, the goal check (C within 0.5 dB of A; the extraction study's
gap was 1.43 dB), the API-vs-in-process agreement, the queries spent and the wall time of each
phase. The surrogate run, the query store and the evaluation run (with the images) stay in
``--out``.

Examples::

    python benchmarks/extract_srgan.py --out runs/extract-srgan                  # full scale

    # measured on 2 CPU cores in 38 min (benchmarks/results/extract_srgan_cpu_3000q.json):
    # C within 0.19 dB (Set5) and 0.12 dB (Set14) of A; B 36.05 / 35.46 dB vs bicubic 30.77 / 29.97
    python benchmarks/extract_srgan.py --out runs/x --queries 3000 --size 32 --iters 2500 \
        --batch-size 16 --blocks 8 --nf 48 --no-bn --image-skip --lr 5e-4 --decay-start 0.7 --train-size 96
    python benchmarks/extract_srgan.py --queries 1000 --iters 3000 --out /tmp/x  # moderate CPU run
    python benchmarks/extract_srgan.py --device cuda --queries 5000 --iters 100000 --out runs/x
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COPYMARK_SHARED_DATA", ROOT.parent / "shared" / "data"))
ISSUE_FIGURES = {"Set5": 30.66, "Set14": 27.69}  # issue 5 item 8: this victim, Y channel, crop 4
STUDY_GAP_DB = 1.43  # the extraction study's C-vs-A gap
GOAL_GAP_DB = 0.5
# torch.jit.script / load are deprecated in recent torch but remain the TorchScript victim format
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\..*")
ATTACKER_KEY = "attacker-srgan-key"
EVALUATOR_KEY = "evaluator-srgan-key"


@dataclass
class Options:
    """Every knob of the pipeline (the CLI flags)."""

    out: Path
    weights: Path = SHARED / "weights" / "srgan_x4" / "netG_epoch_4_100.pth"
    attacker_data: Path = SHARED / "tiny_imagenet" / "val"
    test_set: Path = SHARED / "sr" / "Set5"
    benchmark_set: Path = SHARED / "sr" / "Set14"
    queries: int = 5000
    size: int = 64  # LR query side in pixels (64 = the whole Tiny-ImageNet image)
    strategy: str = "random"
    iters: int = 20000
    batch_size: int = 16
    train_size: int = 0  # HR training crop; 0 = the whole answer (4 x size)
    blocks: int = 16
    nf: int = 64
    batch_norm: bool = True
    image_skip: bool = False  # surrogate predicts a residual on the bicubic upscale
    lr: float = 1e-4
    decay_start: float = 0.5  # step schedule: x0.1 from this fraction of iters on
    device: str = "cpu"
    seed: int = 0
    n_boot: int = 1000
    in_process_sets: tuple[str, ...] = ("Set5",)
    untrained_baseline: bool = True  # False: evaluate a TorchScript copy of the surrogate (no untrained net)
    concurrency: int = 4
    progress: bool = True
    log_phases: bool = True  # one stderr line per finished phase
    reuse: Path | None = None  # an earlier --out: reuse its TorchScript victim and its query store
    extra: dict[str, Any] = field(default_factory=dict)


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values))


def portable(path: Path | str) -> str:
    """A path for a record: relative to the repository, or ``../shared/data/...`` for the shared
    data folder (wherever it is on this machine), else the path as given."""
    p = Path(path)
    try:
        resolved = p.resolve()
    except OSError:
        return str(p)
    for root, prefix in ((SHARED.resolve(), Path("..") / "shared" / "data"), (ROOT.resolve(), Path("."))):
        if resolved.is_relative_to(root):
            return (prefix / resolved.relative_to(root)).as_posix()
    return str(p)


def portable_out(path: Path | str, out: Path) -> str:
    """An output path relative to ``--out`` (the record travels without the machine's paths)."""
    p = Path(path).resolve()
    return p.relative_to(out.resolve()).as_posix() if p.is_relative_to(out.resolve()) else portable(p)


def first_pairs(store_dir: Path, out_dir: Path, victim_id: str, n: int) -> int:
    """Lay out the store's first ``n`` answered pairs (answer order) for SR training; returns how many."""
    from copymark.client.store import QueryStore

    with QueryStore(store_dir) as store:
        pairs = store.pairs(victim_id)[:n]
    for sub in ("LR_x4", "HR"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    for inp, ans in pairs:
        for src, sub in ((inp, "LR_x4"), (ans, "HR")):
            dst = out_dir / sub / f"{inp.stem}.png"
            if not dst.exists():
                try:
                    os.link(src, dst)
                except OSError:
                    import shutil

                    shutil.copyfile(src, dst)
    (out_dir / "source.json").write_text(
        json.dumps({"store": str(store_dir), "victim_id": victim_id, "pairs": len(pairs)})
    )
    return len(pairs)


def export_torchscript(net: torch.nn.Module, path: Path, probe: torch.Tensor, export: bool = True) -> dict[str, float]:
    """Script ``net`` into ``path`` (unless ``export`` is False: an earlier export is reused),
    reload it and compare it with the eager module on ``probe``."""
    if export:
        scripted = torch.jit.script(net)
        path.parent.mkdir(parents=True, exist_ok=True)
        scripted.save(str(path))
    loaded = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.inference_mode():
        a = net(probe)
        b = loaded(probe)
    from copymark import images as I

    return {
        "max_abs_diff": float((a - b).abs().max()),
        "differing_8bit_values": int((I.to_uint8(a.clamp(0, 1)) != I.to_uint8(b.clamp(0, 1))).sum()),
        "probe_shape": list(probe.shape),
    }


def in_process_outputs(net: torch.nn.Module, set_dir: Path, device: str) -> dict[str, Any]:
    """The eager victim's 8-bit outputs on a benchmark set and their PSNR/SSIM (Y, crop 4) vs HR."""
    from copymark import images as I
    from copymark.metrics.fidelity import psnr, ssim

    outs: dict[str, torch.Tensor] = {}
    per: dict[str, dict[str, float]] = {}
    for f in I.list_images(set_dir / "LR_x4"):
        x = I.load_image(f).unsqueeze(0).to(device)
        with torch.inference_mode():
            y = I.quantize(net(x).clamp(0, 1))[0].cpu()
        g = I.load_image(set_dir / "HR" / f.name)
        outs[f.stem] = y
        per[f.stem] = {
            "psnr_y": float(psnr(y, g, y_channel=True, crop_border=4)[0]),
            "ssim_y": float(ssim(y, g, y_channel=True, crop_border=4)[0]),
        }
    return {
        "outputs": outs,
        "per_image": per,
        "psnr_y": _mean([v["psnr_y"] for v in per.values()]),
        "ssim_y": _mean([v["ssim_y"] for v in per.values()]),
    }


def compare_answers(api_dir: Path, outs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """8-bit API answers (saved by the evaluation) vs the in-process 8-bit outputs, pixel by pixel."""
    from copymark import images as I

    max_diff, differing, total = 0, 0, 0
    for stem, y in outs.items():
        a = I.to_uint8(I.load_image(api_dir / f"{stem}.png")).int()
        b = I.to_uint8(y).int()
        if a.shape != b.shape:
            raise RuntimeError(f"{stem}: API answer {tuple(a.shape)} vs in-process {tuple(b.shape)}")
        d = (a - b).abs()
        max_diff = max(max_diff, int(d.max()))
        differing += int((d > 0).sum())
        total += d.numel()
    return {"max_abs_diff_levels": max_diff, "differing_values": differing, "values": total}


def _earlier_extract_time(run: Path | None) -> float | None:
    """The extraction wall time recorded by an earlier run (``--reuse``), if it wrote one."""
    try:
        return float(json.loads((Path(run) / "result.json").read_text())["wall_s"]["extract"]) if run else None
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _metric(result: dict[str, Any], table: str, key: str) -> float | None:
    m = result["tables"].get(table, {}).get("metrics", {}).get(key)
    return None if m is None else m.get("mean")


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    """The A/B/C means, baselines and the C-vs-A gap per set from ``run_evaluation``'s metrics."""
    names = {"test": "Set5", "benchmark": "Set14"}
    out: dict[str, Any] = {}
    for key, res in metrics["sets"].items():
        tabs = {
            t: {k: _metric(res, t, k) for k in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")} for t in ("A", "B", "C")
        }
        base = {
            name: {k: (v.get(k) or {}).get("mean") for k in ("psnr_y", "ssim_y")}
            for name, v in res["baselines"].items()
        }  # bicubic_vs_victim (read B against), bicubic_vs_gt (read A and C against), untrained_vs_victim
        a, c = tabs["A"]["psnr_y"], tabs["C"]["psnr_y"]
        gap = None if a is None or c is None else a - c
        out[names.get(key, key)] = {
            "n": res["n"],
            "tables": tabs,
            "baselines": base,
            "gap_C_vs_A_db": gap,
            "goal_within_0.5_db": None if gap is None else bool(gap <= GOAL_GAP_DB),
        }
    return out


def run(o: Options) -> dict[str, Any]:
    """The whole pipeline (see the module docstring); returns the result dict."""
    from copymark import images as I
    from copymark.extraction.campaign import CampaignConfig, run_campaign
    from copymark.extraction.evaluate import EvaluateConfig, run_evaluation
    from copymark.nets.victims import load_srgan_x4
    from copymark.serving.app import create_app
    from copymark.serving.models import load_model
    from copymark.serving.server import BackgroundServer
    from copymark.serving.settings import ServeSettings
    from copymark.train.api import make_train_config, train

    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t_all = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[name] = round(now - t, 2)
        t = now
        if o.log_phases:
            print(f"[extract_srgan] {name}: {times[name]:.1f} s", file=sys.stderr, flush=True)

    # 1. the victim: strict load, TorchScript export, TorchScript == eager
    net = load_srgan_x4(o.weights).to(o.device)
    n_params = sum(p.numel() for p in net.parameters())
    probe_file = I.list_images(o.test_set / "LR_x4")[0]
    probe = I.load_image(probe_file).unsqueeze(0)
    ts_path = out / "victim" / "srgan_x4.pt"
    if o.reuse is not None:  # an earlier run's TorchScript file and query store: no query is paid twice
        import shutil

        if not (o.reuse / "victim" / "srgan_x4.pt").is_file() or not (o.reuse / "store" / "index.sqlite").is_file():
            raise SystemExit(f"--reuse {o.reuse}: needs victim/srgan_x4.pt and store/ of an earlier run")
        ts_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(o.reuse / "victim" / "srgan_x4.pt", ts_path)
        shutil.copytree(o.reuse / "store", out / "store", dirs_exist_ok=True)
    ts_check = export_torchscript(net.cpu(), ts_path, probe, export=o.reuse is None)
    ts_check["probe"] = probe_file.name
    net = net.to(o.device)
    lap("victim_export")

    # 2. the in-process reference (8-bit outputs)
    sets = {"Set5": o.test_set, "Set14": o.benchmark_set}
    inproc = {name: in_process_outputs(net, sets[name], o.device) for name in o.in_process_sets}
    lap("in_process_reference")

    # 3. serve the TorchScript file through the real API
    keys = out / "server" / "keys.json"
    keys.parent.mkdir(parents=True, exist_ok=True)
    n_eval = sum(len(I.list_images(d / "LR_x4")) for d in sets.values())
    keys.write_text(
        json.dumps(
            {
                ATTACKER_KEY: {"budget": o.queries, "rate_per_s": 10000, "burst": 10000},
                EVALUATOR_KEY: {"budget": 4 * n_eval, "rate_per_s": 10000, "burst": 10000},
            }
        )
    )
    victim = load_model(str(ts_path), o.device)
    settings = ServeSettings(
        keys_file=keys, request_log=out / "server" / "requests.jsonl", inference_timeout_s=600.0, max_pixels=1024 * 1024
    )
    del net
    with BackgroundServer(create_app(victim, settings)) as server:
        lap("serve_start")
        # 4. extraction
        campaign = run_campaign(
            CampaignConfig(
                victim_url=server.url,
                data_dir=o.attacker_data,
                budget=o.queries,
                store_dir=out / "store",
                strategy=o.strategy,
                size=o.size,
                seed=o.seed,
                concurrency=o.concurrency,
            ),
            ATTACKER_KEY,
            progress=o.progress,
        )
        lap("extract")
        # 5. the surrogate, on the first --queries answers (a reused store may hold more)
        n_pairs = first_pairs(out / "store", out / "surrogate_data", campaign.victim_id, o.queries)
        train_size = o.train_size or 4 * o.size
        overrides = {
            "generator": {"n_blocks": o.blocks, "nf": o.nf, "batch_norm": o.batch_norm, "image_skip": o.image_skip},
            "lr": o.lr,
            "decay_start": o.decay_start,
        }
        cfg = make_train_config(
            "srresnet",
            out / "surrogate_data",
            overrides,
            size=train_size,
            iters=o.iters,
            batch_size=o.batch_size,
            seed=o.seed,
            device=o.device,
            progress=o.progress,
            log_every=max(1, o.iters // 50),
        )
        trained = train(cfg, out / "surrogate")
        lap("train")
        # 6. tables A/B/C through the API
        sur_path = out / "surrogate"
        if not o.untrained_baseline:  # the same trained net, as a file evaluate cannot rebuild untrained
            from copymark.translate import load_translation_model

            sur_path = out / "surrogate.pt"
            torch.jit.script(load_translation_model(out / "surrogate", "cpu").net).save(str(sur_path))
        metrics = run_evaluation(
            EvaluateConfig(
                victim_url=server.url,
                api_key=EVALUATOR_KEY,
                surrogate=sur_path,
                test=o.test_set,
                benchmark=o.benchmark_set,
                run_dir=out / "eval",
                store=out / "store",
                device=o.device,
                n_boot=o.n_boot,
                seed=o.seed,
                concurrency=o.concurrency,
                progress=o.progress,
            )
        )
        lap("evaluate")

    sets_out = summarize(metrics)
    set_dirs = {"Set5": "test", "Set14": "benchmark"}
    api_vs_inproc: dict[str, Any] = {}
    for name, ref in inproc.items():
        api_psnr = sets_out[name]["tables"]["A"]["psnr_y"]
        api_vs_inproc[name] = {
            "psnr_y_api": api_psnr,
            "psnr_y_in_process": ref["psnr_y"],
            "ssim_y_in_process": ref["ssim_y"],
            "diff_db": None if api_psnr is None else api_psnr - ref["psnr_y"],
            "pixels": compare_answers(out / "eval" / "outputs" / set_dirs[name] / "victim", ref["outputs"]),
            "per_image_in_process": ref["per_image"],
        }
    goal = {name: s["goal_within_0.5_db"] for name, s in sets_out.items()}
    times["total"] = round(time.perf_counter() - t_all, 2)
    result: dict[str, Any] = {
        "paths": "data relative to the repository or ../shared/data; outputs relative to --out",
        "victim": {
            "weights": portable(o.weights),
            "params": n_params,
            "torchscript": ts_path.relative_to(out).as_posix(),
            "torchscript_vs_eager": ts_check,
            "victim_id": campaign.victim_id,
        },
        "reference_figures_issue": ISSUE_FIGURES,
        "api_vs_in_process": api_vs_inproc,
        "sets": sets_out,
        "goal": {
            "target_gap_db": GOAL_GAP_DB,
            "study_gap_db": STUDY_GAP_DB,
            "met": goal,
            "all_met": all(bool(v) for v in goal.values()),
        },
        "queries": {
            "spent": campaign.answered_total,
            "budget": o.queries,
            "pairs_trained_on": n_pairs,
            "store_answers": campaign.answered_total,
            "size_lr": o.size,
            "size_hr": 4 * o.size,
            "strategy": o.strategy,
            "data": portable(o.attacker_data),
            "failed": campaign.counts.get("failed", 0),
            "new_this_run": campaign.answered_total - campaign.already_answered,
            "reused_store_of": str(o.reuse) if o.reuse else None,
            "reused_run_extract_wall_s": _earlier_extract_time(o.reuse),
        },
        "evaluation_queries": {
            **metrics["provenance"]["evaluation"],
            "answers_store": portable_out(metrics["provenance"]["evaluation"]["answers_store"], out),
        },
        "sets_data": {"Set5": portable(o.test_set), "Set14": portable(o.benchmark_set)},
        "surrogate": {
            "kind": "srresnet",
            "blocks": o.blocks,
            "nf": o.nf,
            "batch_norm": o.batch_norm,
            "image_skip": o.image_skip,
            "iters": o.iters,
            "batch_size": o.batch_size,
            "train_size_hr": train_size,
            "lr": o.lr,
            "decay_start": o.decay_start,
            "pairs": n_pairs,
            "last_losses": trained.last_losses,
            "train_seconds": round(trained.seconds, 1),
            "images_per_second": round(trained.images_per_second, 2),
        },
        "device": o.device,
        "torch_threads": torch.get_num_threads(),
        "seed": o.seed,
        "wall_s": times,
        "out": str(o.out),
        **o.extra,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (store, surrogate run, evaluation, result.json)"
    )
    p.add_argument("--queries", type=int, default=5000, help="attacker queries (Tiny-ImageNet has 5000 images)")
    p.add_argument("--size", type=int, default=64, help="LR query side (64: whole Tiny-ImageNet images; HR = 4x)")
    p.add_argument("--strategy", choices=("random", "diverse"), default="random")
    p.add_argument("--iters", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--train-size", type=int, default=0, help="HR training crop (multiple of 4); 0: the whole answer")
    p.add_argument("--blocks", type=int, default=16, help="SRResNet residual blocks")
    p.add_argument("--nf", type=int, default=64, help="SRResNet channels")
    p.add_argument("--no-bn", action="store_true", help="SRResNet without BatchNorm")
    p.add_argument(
        "--image-skip",
        action="store_true",
        help="SRResNet predicts a residual on the bicubic upscale (learns far faster on CPU)",
    )
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument(
        "--decay-start", type=float, default=0.5, help="LR x0.1 from this fraction of --iters on (1: constant)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--no-untrained-baseline", action="store_true", help="skip the untrained-surrogate baseline")
    p.add_argument("--in-process-sets", default="Set5", help="comma list of Set5,Set14 checked in-process too")
    p.add_argument("--weights", type=Path, default=Options.weights)
    p.add_argument("--attacker-data", type=Path, default=Options.attacker_data)
    p.add_argument("--test-set", type=Path, default=Options.test_set, help="HR/ + LR_x4/ folder (the Set5 role)")
    p.add_argument(
        "--benchmark-set", type=Path, default=Options.benchmark_set, help="HR/ + LR_x4/ folder (the Set14 role)"
    )
    p.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="an earlier run's --out: reuse its TorchScript victim and query store (answers already paid for)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    sets = tuple(s for s in a.in_process_sets.split(",") if s)
    if not set(sets) <= {"Set5", "Set14"}:
        p.error("--in-process-sets takes Set5 and/or Set14")
    return Options(
        out=a.out,
        weights=a.weights,
        attacker_data=a.attacker_data,
        test_set=a.test_set,
        benchmark_set=a.benchmark_set,
        queries=a.queries,
        size=a.size,
        strategy=a.strategy,
        iters=a.iters,
        batch_size=a.batch_size,
        train_size=a.train_size,
        blocks=a.blocks,
        nf=a.nf,
        batch_norm=not a.no_bn,
        image_skip=a.image_skip,
        lr=a.lr,
        decay_start=a.decay_start,
        device=a.device,
        seed=a.seed,
        n_boot=a.n_boot,
        in_process_sets=sets,
        progress=not a.quiet,
        untrained_baseline=not a.no_untrained_baseline,
        reuse=a.reuse,
        extra={"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])},
    )


def main(argv: list[str] | None = None) -> int:
    o = parse_args(argv)
    result = run(o)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
