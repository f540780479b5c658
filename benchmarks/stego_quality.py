"""Quality of the learned steganography codecs on held-out real images, as JSON on stdout.

For one data set (``--dataset cifar10``: 32 px; ``tiny_imagenet``: 64 px, from
``../shared/data``) the script trains each requested setting through the same code as
``copymark stego train`` (:func:`copymark.stego.training.train_codec`), then reports on held-out
cover/secret pairs that no training step saw: stego-vs-cover PSNR/SSIM and revealed-vs-secret
PSNR/SSIM (mean, std, n; on 8-bit values, the stego rounded to 8 bits before revealing, as a PNG
holds it), the tint (mean absolute per-channel mean of ``stego - cover``, in 8-bit levels), the
training wall time and iterations, a learning curve (the same report at every checkpoint), and
whether the figures clear the targets (stego PSNR >= 35 dB, revealed-secret PSNR > 26 dB: the
security study's extractor figure).

Settings (``--settings``, comma-separated):

* ``recommended``: :data:`copymark.train.stego.RECOMMENDED` (residual En2D with a wider decoder,
  batch 2, cosine schedule) for ``--iters``, then :data:`~copymark.train.stego.RECOMMENDED_FINETUNE`
  (beta 0.25, lr 5e-4) from that codec for ``--finetune-iters``; ``--init-from`` starts the first
  stage run from a codec run (e.g. 64 px from the 32 px run: ``--iters 0 --finetune-iters N``),
  whose recorded wall time goes into the JSON beside this run's;
* ``baseline``: today's default (``stego_train_config("en2d")``: the paper's En2D, lr 1e-3,
  beta 1, constant lr, the study's batch 30) for the same number of training images
  (``iters x batch``) as ``recommended``, from scratch;
* ``lsb``: the classical LSB codec with 3 and 4 bits (no training), for reference.

Data (disjoint covers and secrets, held-out pairs never seen in training):

* ``cifar10``: covers are train images of classes 0-4 (airplane ... deer), secrets of classes
  5-9 (dog ... truck), taken round-robin over the classes; held-out pairs are test images of the
  same class halves (cover i with secret i).
* ``tiny_imagenet``: covers are images of classes 0-49, secrets of classes 50-99, round-robin;
  the first ``--n-train`` of each set train, the next ``--n-eval`` are held out.

Example (the recorded runs; each JSON in benchmarks/results/ holds its exact command)::

    python benchmarks/stego_quality.py --dataset cifar10 --iters 50000 --finetune-iters 10000 \\
        --work-dir runs/sq32 --out benchmarks/results/stego_quality_cifar10_32px.json
    python benchmarks/stego_quality.py --dataset tiny_imagenet --iters 0 --finetune-iters 16000 \\
        --init-from runs/sq32/recommended-finetune --work-dir runs/sq64 \\
        --out benchmarks/results/stego_quality_tiny_imagenet_64px.json
    python benchmarks/stego_quality.py --iters 200 --settings recommended,lsb --n-train 300   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
SIZES = {"cifar10": 32, "tiny_imagenet": 64}
TARGET_STEGO_PSNR_DB = 35.0
STUDY_SECRET_PSNR_DB = 26.0
CURVE_POINTS = 8


def round_robin(per_class: list[list[Path]]) -> list[Path]:
    """Image i of every class in turn (so any prefix covers all classes evenly)."""
    out: list[Path] = []
    for i in range(max(len(x) for x in per_class)):
        out += [x[i] for x in per_class if i < len(x)]
    return out


def select(data: Path, dataset: str, n_train: int, n_eval: int) -> tuple[list[Path], list[Path], dict[str, Any]]:
    """Cover and secret file lists, each ``n_train`` training files followed by ``n_eval`` held-out ones."""

    def need(files: list[Path], n: int, what: str) -> list[Path]:
        if len(files) < n:
            raise SystemExit(f"{what}: need {n} images, only {len(files)} available")
        return files[:n]

    if dataset == "cifar10":
        root = data / "cifar10"
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        half = len(classes) // 2

        def pick(split: str, cls: list[str]) -> list[Path]:
            return round_robin([sorted((root / split / c).glob("*.jpg")) for c in cls])

        covers = need(pick("train", classes[:half]), n_train, "cifar10 train covers")
        covers += need(pick("test", classes[:half]), n_eval, "cifar10 test covers")
        secrets = need(pick("train", classes[half:]), n_train, "cifar10 train secrets")
        secrets += need(pick("test", classes[half:]), n_eval, "cifar10 test secrets")
        info = {"covers": f"classes {classes[:half]}", "secrets": f"classes {classes[half:]}",
                "train_split": "train/", "held_out_split": "test/"}  # fmt: skip
    else:
        root = data / "tiny_imagenet"
        wnids = (root / "wnids.txt").read_text().split()
        half = len(wnids) // 2

        def pick_t(cls: list[str]) -> list[Path]:
            per = [sorted((root / "val" / w).glob("*.JPEG"), key=lambda p: int(p.stem.split("_")[1])) for w in cls]
            return round_robin(per)

        covers = need(pick_t(wnids[:half]), n_train + n_eval, "tiny_imagenet covers")
        secrets = need(pick_t(wnids[half:]), n_train + n_eval, "tiny_imagenet secrets")
        info = {"covers": f"classes 0-{half - 1} of wnids.txt", "secrets": f"classes {half}-{len(wnids) - 1}",
                "held_out": f"the {n_eval} images after the first {n_train} of each set (round-robin order)"}  # fmt: skip
    return covers, secrets, info


def link_folder(files: list[Path], folder: Path) -> Path:
    """A flat folder of symlinks ``00000_<name>`` keeping the list order (path order = list order)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        (folder / f"{i:05d}_{f.name}").symlink_to(f.resolve())
    return folder


def brief(q: dict[str, Any]) -> dict[str, Any]:
    return {
        k: ({kk: vv for kk, vv in v.items() if kk != "values"} if isinstance(v, dict) and "values" in v else v)
        for k, v in q.items()
    }


def evaluate(codec: Any, covers: Any, secrets: Any, out_dir: Path | None = None) -> dict[str, Any]:
    """The quality report (8-bit stego) plus the tint of the stego images."""
    from copymark.stego.quality import quality_report, run_codec

    q = brief(quality_report(codec, covers, secrets, out_dir=out_dir))
    stegos, _ = run_codec(codec, covers, secrets)
    q["tint_levels"] = float((stegos - covers).mean(dim=(2, 3)).abs().mean() * 255)
    q["meets_targets"] = {
        f"stego_psnr_ge_{TARGET_STEGO_PSNR_DB:g}db": q["stego_psnr"]["mean"] >= TARGET_STEGO_PSNR_DB,
        f"secret_psnr_gt_{STUDY_SECRET_PSNR_DB:g}db": q["secret_psnr"]["mean"] > STUDY_SECRET_PSNR_DB,
    }
    return q


def curve(run: Path, covers: Any, secrets: Any) -> list[dict[str, Any]]:
    """Held-out PSNRs of every checkpoint the run kept (the learning curve)."""
    from copymark.stego.codecs import load_codec
    from copymark.stego.quality import quality_report

    points = []
    for ck in sorted((run / "checkpoints").glob("iter-*")):
        q = quality_report(load_codec(ck / "nets" / "codec"), covers, secrets)
        points.append(
            {
                "iteration": int(ck.name.split("-")[1]),
                "stego_psnr": round(q["stego_psnr"]["mean"], 3),
                "secret_psnr": round(q["secret_psnr"]["mean"], 3),
            }  # fmt: skip
        )
    return points


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(SIZES), default="cifar10")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    ap.add_argument(
        "--settings", default="recommended,baseline,lsb", help="comma-separated: recommended, baseline, lsb"
    )
    ap.add_argument("--iters", type=int, default=2000, help="iterations of the recommended setting's first stage")
    ap.add_argument(
        "--finetune-iters", type=int, default=0, help="iterations of its second stage (RECOMMENDED_FINETUNE; 0: none)"
    )
    ap.add_argument("--batch-size", type=int, default=None, help="of the recommended setting (default: its own)")
    ap.add_argument("--init-from", type=Path, default=None, help="codec run the recommended setting starts from")
    ap.add_argument("--n-train", type=int, default=2400, help="training images per set")
    ap.add_argument("--n-eval", type=int, default=100, help="held-out cover/secret pairs")
    ap.add_argument("--seed", type=int, default=2022)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core box)")
    ap.add_argument("--work-dir", type=Path, default=None, help="where runs go (default: a temp folder, deleted)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    import torch

    from copymark.files import atomic_write_json
    from copymark.stego.codecs import LSBCodec, LSBCodecConfig, load_codec
    from copymark.stego.imagesets import load_image_set
    from copymark.stego.training import StegoDataConfig, StegoRunConfig, train_codec
    from copymark.train.loop import LoopConfig
    from copymark.train.stego import RECOMMENDED, STUDY_DEFAULTS, recommended_train_config, stego_train_config

    if args.iters + args.finetune_iters < 1 and "recommended" in args.settings:
        print("--iters and --finetune-iters are both 0: nothing to train", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    if not args.data.is_dir() or not (args.data / args.dataset).is_dir():
        print(
            json.dumps(
                {"skipped": f"{args.data / args.dataset} not found (the shared data folder beside the checkout)"}
            )
        )
        return 0
    size = SIZES[args.dataset]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = sorted(set(settings) - {"recommended", "baseline", "lsb"})
    if unknown:
        print(f"unknown settings {unknown} (use recommended, baseline, lsb)", file=sys.stderr)
        return 2
    tmp = None
    work = args.work_dir
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="stego-quality-")
        work = Path(tmp.name)
    cover_files, secret_files, data_info = select(args.data, args.dataset, args.n_train, args.n_eval)
    covers = link_folder(cover_files, work / "covers")
    secrets = link_folder(secret_files, work / "secrets")
    held_c = load_image_set(covers, size).floats()[-args.n_eval :]
    held_s = load_image_set(secrets, size).floats()[-args.n_eval :]
    rec_bs = args.batch_size or int(RECOMMENDED["batch_size"])
    images = (args.iters + args.finetune_iters) * rec_bs
    results: dict[str, Any] = {
        "command": shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "git_commit": git_commit(),
        "data": {"dataset": args.dataset, "source": f"{args.dataset} (under the shared data folder)", "size": size,
                 "n_train": args.n_train, "n_eval": args.n_eval, **data_info},
        "budget": {"recommended_iters": [args.iters, args.finetune_iters], "recommended_batch": rec_bs,
                   "training_images": images,
                   "baseline": "today's default config for the same number of training images, from scratch"},
        "device": args.device, "seed": args.seed, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "targets": {"stego_psnr_db": TARGET_STEGO_PSNR_DB, "secret_psnr_db": STUDY_SECRET_PSNR_DB},
        "settings": {},
    }  # fmt: skip

    def train_stage(name: str, proc: Any, bs: int, iters: int, init: Path | None) -> dict[str, Any]:
        loop = LoopConfig(iters=iters, batch_size=bs, seed=args.seed, device=args.device, progress=False,
                          save_every=max(1, iters // CURVE_POINTS), keep_checkpoints=0)  # fmt: skip
        data = StegoDataConfig(covers=str(covers), secrets=str(secrets), size=size, holdout=args.n_eval)
        cfg = StegoRunConfig(procedure=proc, loop=loop, data=data, init_from=str(init) if init else None)
        run = work / name
        out = train_codec(cfg, run)
        return {
            "procedure": proc.model_dump(mode="json"),
            "batch_size": bs,
            "iterations": out["iterations"],
            "train_seconds": round(out["train_seconds"], 1),
            "init_from": str(init) if init else None,
            **evaluate(load_codec(run / "codec"), held_c, held_s, out_dir=run),
            "learning_curve": curve(run, held_c, held_s),
            "run": str(run),
        }

    for name in settings:
        t0 = time.perf_counter()
        if name == "lsb":
            for bits in (3, 4):
                entry: dict[str, Any] = {"bits": bits, **evaluate(LSBCodec(LSBCodecConfig(bits=bits)), held_c, held_s)}
                results["settings"][f"lsb{bits}"] = entry
            continue
        if name == "recommended":
            stages, init = [], args.init_from
            if init is not None:
                src = json.loads((init / "metrics.json").read_text()) if (init / "metrics.json").is_file() else {}
                results["init_from"] = {"path": str(init), "train_seconds": src.get("train_seconds"),
                                        "iterations": src.get("iterations")}  # fmt: skip
            for stage, iters in (("train", args.iters), ("finetune", args.finetune_iters)):
                if iters:
                    stages.append(
                        train_stage(f"recommended-{stage}", recommended_train_config(stage), rec_bs, iters, init)
                    )
                    init = Path(stages[-1]["run"])
            entry = {**{k: v for k, v in stages[-1].items() if k not in ("procedure", "learning_curve", "run")},
                     "stages": stages, "iterations": sum(st["iterations"] for st in stages),
                     "train_seconds": round(sum(st["train_seconds"] for st in stages), 1)}  # fmt: skip
        else:
            bs = int(STUDY_DEFAULTS["en2d"]["batch_size"])
            entry = train_stage("baseline", stego_train_config("en2d"), bs, max(1, round(images / bs)), None)
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        results["settings"][name] = entry
        print(json.dumps({name: {k: entry[k] for k in ("stego_psnr", "secret_psnr", "seconds")}}), file=sys.stderr)
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    rec, base = results["settings"].get("recommended"), results["settings"].get("baseline")
    if rec and base:
        results["recommended_minus_baseline_db"] = {
            k: round(rec[k]["mean"] - base[k]["mean"], 2) for k in ("stego_psnr", "secret_psnr")
        }
    print(json.dumps(results, indent=2))
    if args.out is not None:
        atomic_write_json(args.out, results)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
