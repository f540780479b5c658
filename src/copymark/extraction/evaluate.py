"""Evaluate an extraction: tables A, B and C (the extraction study's protocol).

* **A** victim vs ground truth: how good the victim is (the owner's baseline).
* **B** surrogate vs victim: how close the copy is (the only table the attacker can compute).
* **C** surrogate vs ground truth: how good the copy is.

The victim is reached only through its HTTP API (:class:`~copymark.client.http.ApiClient`);
the surrogate runs in-process (:func:`copymark.translate.load_translation_model`). Every image is
processed one at a time and only per-image numbers, distribution-metric accumulators and the
saved PNGs are kept, so sets of any size stream.

Metrics:

* per-image (paired): PSNR/SSIM on RGB, and for super-resolution also on the Y channel
  (BT.601) with a border crop equal to the scale (the SR protocol); all on 8-bit values. Each
  comes with mean, std, n and a percentile-bootstrap 95% CI of the mean.
* per-set (distribution): SWD always (no pretrained net), FID and KID when a feature net
  (Inception weights) is given. For style tasks the ground truth is usually a folder of
  target-style images that are *not* paired with the inputs; then A and C hold only the
  distribution metrics, as in the study's FID tables.

Trivial baselines put table B in context: the *identity* map (the input itself, bicubic
upscaled for SR) and, when the surrogate's architecture can be rebuilt, an *untrained*
surrogate of the same architecture.

Victim answers and surrogate outputs are written to ``outputs/<set>/{input,victim,surrogate,gt}``
in the run folder; a rerun reuses victim answers already saved there (no query is paid twice).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from copymark import images as I
from copymark.errors import DataError

Task = Literal["style", "sr"]
Net = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# sets to evaluate


@dataclass
class EvalSet:
    """Inputs (by stem) and optional ground truth: paired by stem, or an unpaired reference set."""

    name: str
    inputs: dict[str, Path]
    gt: dict[str, Path] = field(default_factory=dict)

    @property
    def paired(self) -> bool:
        return bool(self.gt) and set(self.gt) >= set(self.inputs)


def _folder_images(d: Path, what: str) -> dict[str, Path]:
    if not d.exists():
        raise DataError(f"{what} folder not found: {d}", hint="check the path")
    if not d.is_dir():
        raise DataError(f"{what} must be a folder of images: {d}")
    files = I.list_images(d)
    if not files:
        raise DataError(f"{what} folder has no images (png/jpg/webp/bmp/tif): {d}")
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise DataError(f"{what} folder {d} has two files with stem {f.stem!r}", hint="rename one")
        out[f.stem] = f
    return out


def make_set(name: str, inputs: Path, gt: Path | None, task: Task, scale: int) -> EvalSet:
    """Build an :class:`EvalSet`. For SR, ``inputs`` may be a benchmark folder with ``HR/`` and
    ``LR_x<scale>/`` (the Set5/Set14 layout); otherwise inputs and gt are plain folders."""
    inputs = Path(inputs)
    if task == "sr" and gt is None and (inputs / "HR").is_dir():
        lr = inputs / f"LR_x{scale}"
        if not lr.is_dir():
            raise DataError(f"{inputs} has HR/ but no LR_x{scale}/", hint=f"add LR_x{scale} or pass LR and --gt HR")
        gt, inputs = inputs / "HR", lr
    s = EvalSet(name, _folder_images(inputs, f"{name} input"))
    if gt is not None:
        s.gt = _folder_images(Path(gt), f"{name} ground-truth")
        if task == "sr":
            missing = sorted(set(s.inputs) - set(s.gt))
            if missing:
                raise DataError(
                    f"{name}: {len(missing)} inputs have no ground truth with the same stem in {gt}: {missing[:5]}",
                    hint="super-resolution ground truth is paired by file stem",
                )
    return s


# ---------------------------------------------------------------------------------------------
# summaries


def summary(values: list[float], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean, std (ddof 1), n and bootstrap 95% CI of per-image values (inf-safe)."""
    from copymark.stats.bootstrap import bootstrap_ci

    arr = np.asarray(values, dtype=np.float64)
    if arr.size and not np.isfinite(arr).any():  # e.g. PSNR of outputs identical to the reference
        return {"mean": float(arr[0]) if np.all(arr == arr[0]) else None, "std": 0.0, "n": int(arr.size), "ci95": None}
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "ci95": None}
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if n > 1 else None
    ci = list(bootstrap_ci(arr, n_boot=n_boot, seed=seed)) if n > 1 and np.isfinite(arr).all() else None
    return {"mean": mean, "std": std, "n": n, "ci95": ci}


class _Table:
    """Per-image paired metrics plus set-level distribution metrics for one comparison."""

    def __init__(self, title: str, task: Task, scale: int, paired: bool, features: Any, seed: int):
        from copymark.metrics.sliced_wasserstein import SWD

        self.title, self.task, self.scale, self.paired = title, task, scale, paired
        self.values: dict[str, list[float]] = {}
        self.swd = SWD(seed=seed)
        self.features = features
        self.n_pred = 0

    def add_pair(self, pred: torch.Tensor, ref: torch.Tensor) -> None:
        from copymark.metrics.fidelity import psnr, ssim

        p, r = pred.unsqueeze(0), ref.unsqueeze(0)
        vals = {
            "psnr_rgb": float(psnr(p, r)[0]),
            "ssim_rgb": float(ssim(p, r)[0]),
        }
        if self.task == "sr":
            vals["psnr_y"] = float(psnr(p, r, y_channel=True, crop_border=self.scale)[0])
            vals["ssim_y"] = float(ssim(p, r, y_channel=True, crop_border=self.scale)[0])
        for k, v in vals.items():
            self.values.setdefault(k, []).append(v)

    def add_sets(self, pred: torch.Tensor | None, ref: torch.Tensor | None) -> None:
        p = [pred] if pred is not None else None
        r = [ref] if ref is not None else None
        self.swd.update(p, r)
        if self.features is not None:
            self.features.update(p, r)
        if pred is not None:
            self.n_pred += 1

    def result(self, n_boot: int, seed: int) -> dict[str, Any]:
        metrics: dict[str, Any] = {k: summary(v, n_boot, seed) for k, v in self.values.items()}
        if self.n_pred == 0:  # a per-image-only comparison (the baselines)
            return {"title": self.title, "metrics": metrics}
        try:
            s = self.swd.compute()
            metrics["swd"] = {"value": s.avg, "levels": s.levels, "n": s.n_images}
        except Exception as err:  # too few / too small images for the pyramid
            metrics["swd"] = {"value": None, "n": self.n_pred, "error": str(err)}
        if self.features is not None:
            f = self.features.compute()
            if f.fid is not None:
                metrics["fid"] = {"value": f.fid, "n": f.n_pred, "n_ref": f.n_ref}
            if f.kid is not None:
                metrics["kid"] = {"mean": f.kid.mean, "std": f.kid.std, "n": f.n_pred, "n_ref": f.n_ref}
        return {"title": self.title, "metrics": metrics}


# ---------------------------------------------------------------------------------------------
# victim answers through the API


async def _fetch_victim(url: str, api_key: str, todo: list[tuple[str, bytes]], out_dir: Path, concurrency: int) -> None:
    from copymark.client.http import ApiClient
    from copymark.files import atomic_write_bytes

    async with ApiClient(url, api_key, concurrency=concurrency) as client:

        async def one(stem: str, png: bytes) -> None:
            ans = await client.translate(png)
            atomic_write_bytes(out_dir / f"{stem}.png", ans.png)  # saved the moment it arrives

        await asyncio.gather(*(one(s, p) for s, p in todo))


async def victim_info(url: str, api_key: str) -> dict[str, Any]:
    from copymark.client.http import ApiClient

    async with ApiClient(url, api_key, concurrency=1) as client:
        return await client.info()


def victim_outputs(
    url: str, api_key: str, inputs: dict[str, torch.Tensor], out_dir: Path, concurrency: int = 4
) -> None:
    """Query the victim for every input whose answer is not yet in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [(s, I.encode_png(x)) for s, x in inputs.items() if not (out_dir / f"{s}.png").exists()]
    if todo:
        asyncio.run(_fetch_victim(url, api_key, todo, out_dir, concurrency))


# ---------------------------------------------------------------------------------------------
# the evaluation


def _untrained_like(surrogate_path: Path | None, seed: int) -> Net | None:
    """A freshly initialised net of the surrogate's architecture (None if it cannot be rebuilt)."""
    if surrogate_path is None:
        return None
    try:
        from copymark.nets.build import build_net, load_net
        from copymark.translate import resolve_net_folder, wrap_module
    except ImportError:
        return None
    try:
        folder = resolve_net_folder(Path(surrogate_path))
        _, cfg = load_net(folder, "cpu")
    except Exception:
        return None
    torch.manual_seed(seed)
    net = build_net(cfg).eval()
    return wrap_module(net, source="untrained " + str(cfg.kind))


def evaluate_set(
    s: EvalSet,
    *,
    task: Task,
    scale: int,
    victim_url: str,
    api_key: str,
    surrogate: Net,
    out_root: Path,
    untrained: Net | None = None,
    feature_net: Any = None,
    kid: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    concurrency: int = 4,
    on_image: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Tables A/B/C (+ baselines) for one set; writes its images under ``out_root/<set>/``."""
    from copymark.metrics.distribution import FeatureDistances

    d = out_root / s.name
    for sub in ("input", "victim", "surrogate"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    inputs = {stem: I.load_image(p) for stem, p in s.inputs.items()}
    for stem, x in inputs.items():
        I.save_image(x, d / "input" / f"{stem}.png")
    victim_outputs(victim_url, api_key, inputs, d / "victim", concurrency)

    def feats() -> Any:
        if feature_net is None:
            return None
        return FeatureDistances(feature_net, fid=True, kid=kid, seed=seed)

    paired = s.paired
    has_gt = bool(s.gt)
    tab_a = _Table("victim vs ground truth", task, scale, paired, feats(), seed) if has_gt else None
    tab_b = _Table("surrogate vs victim", task, scale, True, feats(), seed)
    tab_c = _Table("surrogate vs ground truth", task, scale, paired, feats(), seed) if has_gt else None
    base_id = _Table("identity (input) vs victim", task, scale, True, None, seed)
    base_un = _Table("untrained surrogate vs victim", task, scale, True, None, seed) if untrained else None
    if has_gt and paired:
        (d / "gt").mkdir(parents=True, exist_ok=True)

    for stem, x in inputs.items():
        v = I.load_image(d / "victim" / f"{stem}.png")
        y = I.quantize(surrogate(x.unsqueeze(0))[0])
        if y.shape != v.shape:
            raise DataError(
                f"{s.name}/{stem}: surrogate output {tuple(y.shape)} differs from the victim's {tuple(v.shape)}",
                hint="is the surrogate trained for this task and scale?",
            )
        I.save_image(y, d / "surrogate" / f"{stem}.png")
        tab_b.add_pair(y, v)
        tab_b.add_sets(y, v)
        ident = I.quantize(I.upscale_bicubic(x, scale)) if scale > 1 else x
        base_id.add_pair(ident, v)
        if base_un is not None and untrained is not None:
            base_un.add_pair(I.quantize(untrained(x.unsqueeze(0))[0]), v)
        if paired and tab_a is not None and tab_c is not None:
            g = I.load_image(s.gt[stem])
            if g.shape != v.shape:
                raise DataError(
                    f"{s.name}/{stem}: ground truth {tuple(g.shape)} differs from the victim's output {tuple(v.shape)}",
                    hint="ground truth must be the size of the victim's output (HR for SR)",
                )
            I.save_image(g, d / "gt" / f"{stem}.png")
            tab_a.add_pair(v, g)
            tab_c.add_pair(y, g)
            tab_a.add_sets(v, g)
            tab_c.add_sets(y, g)
        elif tab_a is not None and tab_c is not None:
            tab_a.add_sets(v, None)
            tab_c.add_sets(y, None)
        if on_image is not None:
            on_image(stem)
    if has_gt and not paired and tab_a is not None and tab_c is not None:
        for p in s.gt.values():  # the unpaired reference (target-style) set
            g = I.load_image(p)
            tab_a.add_sets(None, g)
            tab_c.add_sets(None, g)

    tables = {"B": tab_b.result(n_boot, seed)}
    if tab_a is not None and tab_c is not None:
        tables["A"] = tab_a.result(n_boot, seed)
        tables["C"] = tab_c.result(n_boot, seed)
    baselines = {"identity_vs_victim": _with_paired_gain(base_id, tab_b, n_boot, seed)}
    if base_un is not None:
        baselines["untrained_vs_victim"] = _with_paired_gain(base_un, tab_b, n_boot, seed)
    return {
        "n": len(inputs),
        "paired_gt": paired,
        "n_gt": len(s.gt),
        "tables": {k: tables[k] for k in ("A", "B", "C") if k in tables},
        "baselines": baselines,
    }


def _with_paired_gain(base: _Table, tab_b: _Table, n_boot: int, seed: int) -> dict[str, Any]:
    """A baseline's metric summaries, each with ``paired_gain``: table B minus the baseline, image
    by image (mean, std, n, bootstrap 95% CI of the mean difference).

    Both score the same images against the same victim answers, so the paired difference is the
    right comparison: it removes the between-image spread that makes two separate CIs overlap.
    """
    metrics = base.result(n_boot, seed)["metrics"]
    for key, entry in metrics.items():
        b, v = tab_b.values.get(key), base.values.get(key)
        if not b or not v or len(b) != len(v):
            continue
        diffs = [x - y for x, y in zip(b, v) if math.isfinite(x) and math.isfinite(y)]
        entry["paired_gain"] = summary(diffs, n_boot, seed)
    return metrics


def headline(result: dict[str, Any], task: Task) -> dict[str, float | None]:
    """The numbers a reader looks at first: B's PSNR vs the identity baseline's."""
    key = "psnr_y" if task == "sr" else "psnr_rgb"
    b = result["tables"]["B"]["metrics"].get(key, {}).get("mean")
    i = result["baselines"]["identity_vs_victim"].get(key, {}).get("mean")
    u = result["baselines"].get("untrained_vs_victim", {}).get(key, {}).get("mean")
    gain = None if b is None or i is None or math.isinf(b) else b - i
    return {"metric": key, "surrogate_vs_victim": b, "identity_vs_victim": i, "untrained_vs_victim": u, "gain_db": gain}


# ---------------------------------------------------------------------------------------------
# the whole evaluation, into a run folder


def run_evaluation(
    *,
    victim_url: str,
    api_key: str,
    surrogate_path: Path,
    test_dir: Path,
    gt_dir: Path | None = None,
    benchmark_dir: Path | None = None,
    benchmark_gt_dir: Path | None = None,
    run_dir: Path,
    inception_weights: Path | None = None,
    kid: bool = False,
    device: str = "cpu",
    n_boot: int = 2000,
    seed: int = 0,
    concurrency: int = 4,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``surrogate_path`` against the victim at ``victim_url`` on the test set (and
    the benchmark set when given); write ``metrics.json``, ``tables.md`` and the images into
    ``run_dir`` (created, or reused when it already holds this evaluation's outputs)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from copymark.report.tables import tables_markdown
    from copymark.runs import CONFIG, create_run, open_run
    from copymark.translate import load_translation_model

    info = asyncio.run(victim_info(victim_url, api_key))
    task: Task = "sr" if info.get("task") == "sr" else "style"
    scale = int(info.get("scale", 1) or 1)
    surrogate = load_translation_model(surrogate_path, device)
    if surrogate.scale != scale:
        raise DataError(
            f"surrogate {surrogate_path} upscales x{surrogate.scale} but the victim x{scale}",
            hint="evaluate a surrogate trained on this victim's answers",
        )
    feature_net = None
    if inception_weights is not None:
        from copymark.metrics.inception import inception_v3_features

        feature_net = inception_v3_features(inception_weights)
    sets = [make_set("test", Path(test_dir), Path(gt_dir) if gt_dir else None, task, scale)]
    if benchmark_dir is not None:
        sets.append(
            make_set(
                "benchmark", Path(benchmark_dir), Path(benchmark_gt_dir) if benchmark_gt_dir else None, task, scale
            )
        )
    config = {
        "command": "evaluate",
        "victim_url": victim_url,
        "surrogate": str(surrogate_path),
        "test": str(test_dir),
        "gt": str(gt_dir) if gt_dir else None,
        "benchmark": str(benchmark_dir) if benchmark_dir else None,
        "benchmark_gt": str(benchmark_gt_dir) if benchmark_gt_dir else None,
        "inception_weights": str(inception_weights) if inception_weights else None,
        "kid": kid,
        "n_boot": n_boot,
        "seed": seed,
        "device": device,
    }
    run = open_run(run_dir) if (Path(run_dir) / CONFIG).exists() else create_run(run_dir, config, device, seed)
    untrained = _untrained_like(Path(surrogate_path), seed)
    results: dict[str, Any] = {}
    total = sum(len(s.inputs) for s in sets)
    with Progress(
        TextColumn("evaluating {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not progress,
        transient=True,
    ) as bar:
        t = bar.add_task("A/B/C", total=total)
        for s in sets:
            run.log(
                "evaluating set %s: %d inputs, %d ground truth (%s)",
                s.name,
                len(s.inputs),
                len(s.gt),
                "paired" if s.paired else "unpaired",
            )
            results[s.name] = evaluate_set(
                s,
                task=task,
                scale=scale,
                victim_url=victim_url,
                api_key=api_key,
                surrogate=surrogate,
                out_root=run.path / "outputs",
                untrained=untrained,
                feature_net=feature_net,
                kid=kid,
                n_boot=n_boot,
                seed=seed,
                concurrency=concurrency,
                on_image=lambda _s: bar.advance(t),
            )
    metrics: dict[str, Any] = {
        "task": task,
        "scale": scale,
        "victim": {"url": victim_url, "name": info.get("name"), "info": info},
        "surrogate": {"path": str(surrogate_path), "kind": surrogate.kind},
        "sets": results,
        "headline": {name: headline(r, task) for name, r in results.items()},
    }
    if extra:
        metrics.update(extra)
    run.update_metrics(metrics)
    metrics = run.metrics()
    (run.path / "tables.md").write_text(tables_markdown(metrics))
    run.log("wrote metrics.json and tables.md")
    return metrics
