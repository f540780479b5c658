"""Train the extraction study's own victim architectures with copymark, at reduced scale, on CPU.

Two victims (issue 13 item 3), each a copymark training run whose exported net is served like
any victim (``copymark serve --victim RUN``):

* ``cyclegan-photo2monet``: CycleGAN (two ResNet generators, two PatchGANs, LSGAN, cycle and
  identity losses) from landscape photos to Monet paintings on ``../shared/data/monet_photo``;
* ``ugatit-selfie2anime``: U-GAT-IT light (CAM attention, AdaLIN) from selfies to anime faces on
  ``../shared/data/selfie2anime``.

Splits (sorted file names, disjoint, the same ones ``configs/reproduce/cpu.json`` names):

==================  ==================================  ===================================
set                 photo2monet                         selfie2anime
==================  ==================================  ===================================
victim training     photo[0:180] + monet[0:240]         trainA[0:120] + trainB (240)
attacker            (Tiny-ImageNet val, another source) trainA[120:180]
benchmark           photo[180:240]                      trainA[180:240]
test                photo[240:300]                      testA (60)
target style        monet[240:300]                      testB (60)
==================  ==================================  ===================================

Images are 256 px; the victims train at ``--size`` (64 by default) on bicubic-resized copies
(``resize_policy="resize"``), so a victim's test and target-style sets are resized the same way
(``image_size`` in the reproduce config).

Each victim's own quality (table A: victim outputs vs the target-style set, beside the identity
map) is measured through its API by ``copymark reproduce extraction-tables --config
configs/reproduce/cpu.json`` (settings ``monet-cyclegan-copymark`` and ``anime-ugatit-copymark``),
which also states the training recorded here (procedure, iterations, batch, size) in its
conditions table.

Each phase resumes: a finished training run is not trained again, an interrupted one continues
from its last checkpoint (``--save-every``). Run one victim at a time, niced, in the background::

    nohup nice -n 10 python benchmarks/train_victims.py --victim cyclegan-photo2monet --victim ugatit-selfie2anime \
        --out runs/victims --iters 400 --save-every 50 --quiet > runs/victims/train.log 2>&1 &

Prints one JSON object per victim (also ``--out/<victim>/result.json``): the training status, its
wall time this run, the run's metrics (iterations, images per second, final losses) and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COPYMARK_SHARED_DATA", ROOT.parent / "shared" / "data"))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# victim -> (dataset folder, {split: (subfolder, start, stop)}, procedure, procedure overrides at 64 px)
SPLITS: dict[str, dict[str, tuple[str, int | None, int | None]]] = {
    "cyclegan-photo2monet": {
        "trainA": ("monet_photo/photo", 0, 180),
        "trainB": ("monet_photo/monet", 0, 240),
        "benchmark": ("monet_photo/photo", 180, 240),
        "test": ("monet_photo/photo", 240, 300),
        "style": ("monet_photo/monet", 240, 300),
    },
    "ugatit-selfie2anime": {
        "trainA": ("selfie2anime/trainA", 0, 120),
        "trainB": ("selfie2anime/trainB", None, None),
        "attacker": ("selfie2anime/trainA", 120, 180),
        "benchmark": ("selfie2anime/trainA", 180, 240),
        "test": ("selfie2anime/testA", None, None),
        "style": ("selfie2anime/testB", None, None),
    },
}
PROCEDURE = {"cyclegan-photo2monet": "cyclegan", "ugatit-selfie2anime": "ugatit"}


def net_overrides(victim: str, size: int, ngf: int) -> dict[str, Any]:
    """The reduced architecture: ``ngf`` filters; U-GAT-IT light with a global D shallow enough for ``size``."""
    if PROCEDURE[victim] == "cyclegan":
        return {"generator": {"ngf": ngf, "n_blocks": 6}, "discriminator": {"ndf": ngf}}
    # the global discriminator halves the map n_layers - 1 times; keep at least 2 x 2 for its padding
    n_global = 7 if size >= 128 else 6
    return {
        "generator": {"ngf": ngf, "n_blocks": 4, "light": True},
        "global_discriminator": {"ndf": ngf, "n_layers": n_global},
        "local_discriminator": {"ndf": ngf, "n_layers": 5},
        "lr": 2e-4,
    }


def sorted_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def make_splits(victim: str, data_root: Path, out: Path) -> dict[str, Path]:
    """Symlink folders of each split under ``out/data`` (the shared data is never copied)."""
    folders: dict[str, Path] = {}
    for split, (sub, start, stop) in SPLITS[victim].items():
        files = sorted_images(data_root / sub)[start:stop]
        dest = out / "data" / split
        dest.mkdir(parents=True, exist_ok=True)
        names = {f.name for f in files}
        for stale in dest.iterdir():
            if stale.name not in names:
                stale.unlink()
        for f in files:
            link = dest / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
        folders[split] = dest
    train = out / "data" / "train"
    train.mkdir(exist_ok=True)
    for side in ("trainA", "trainB"):
        link = train / side
        if not link.exists():
            link.symlink_to(folders[side].resolve(), target_is_directory=True)
    folders["train"] = train
    return folders


def train_victim(victim: str, folders: dict[str, Path], run_dir: Path, o: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume, or skip when finished) the victim's run; returns what it trained."""
    from copymark.checkpoints import latest_checkpoint, read_meta
    from copymark.train.api import make_train_config, resume, train

    t0 = time.perf_counter()
    status = "trained"
    if (run_dir / "config.json").is_file():
        planned = json.loads((run_dir / "config.json").read_text())["loop"]["iters"]
        if planned != o.iters:
            raise SystemExit(
                f"{run_dir} was started with --iters {planned}: rerun with --iters {planned} to continue it "
                "(its learning-rate schedule is fixed), or choose another --out"
            )
        latest = latest_checkpoint(run_dir)
        done = latest is not None and int(read_meta(latest)["iteration"]) >= o.iters
        if done:
            status = "already trained"
        else:
            resume(run_dir, device=o.device, progress=not o.quiet)
            status = "resumed"
    else:
        cfg = make_train_config(
            PROCEDURE[victim],
            folders["train"],
            net_overrides(victim, o.size, o.ngf),
            size=o.size,
            resize_policy="resize",
            iters=o.iters,
            batch_size=o.batch_size,
            seed=o.seed,
            device=o.device,
            progress=not o.quiet,
            log_every=max(1, o.iters // 100),
            save_every=o.save_every,
            sample_every=max(1, o.iters // 4),
        )
        train(cfg, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    return {"status": status, "seconds_this_run": round(time.perf_counter() - t0, 1), "run_metrics": metrics}


def served_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The checkpoint the run serves (its latest) against its schedule, and the training's wall
    time read from the run's log (first to last line, over every resume)."""
    from copymark.checkpoints import latest_checkpoint, read_meta

    if not (run_dir / "config.json").is_file():
        return {"trained_iters": None}
    latest = latest_checkpoint(run_dir)
    out: dict[str, Any] = {
        "schedule_iters": json.loads((run_dir / "config.json").read_text())["loop"]["iters"],
        "trained_iters": None if latest is None else int(read_meta(latest)["iteration"]),
        "folder": None if latest is None else latest.name,
    }
    lines = (run_dir / "log.txt").read_text().splitlines() if (run_dir / "log.txt").is_file() else []
    stamps = [ln[:19] for ln in lines if ln[:4].isdigit()]
    if stamps:
        out["log_first_last"] = [stamps[0], stamps[-1]]
        out["resumed"] = sum("resumed run" in ln for ln in lines)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--victim", choices=sorted(SPLITS), action="append", required=True, help="repeatable")
    p.add_argument("--out", type=Path, required=True, help="folder of the victims' runs (runs/victims)")
    p.add_argument("--data-root", type=Path, default=SHARED)
    p.add_argument("--size", type=int, default=64, help="training (and serving) image side")
    p.add_argument("--ngf", type=int, default=16, help="generator / discriminator filters")
    p.add_argument("--iters", type=int, default=360)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--save-every", type=int, default=40, help="checkpoint every N iterations (resume point)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-train", action="store_true", help="only (re)write the splits and result.json")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    o = parse_args(argv)
    for victim in o.victim:
        out = o.out / victim
        folders = make_splits(victim, o.data_root, out)
        run_dir = out / "run"
        result: dict[str, Any] = {"victim": victim, "procedure": PROCEDURE[victim], "size": o.size}
        if not o.skip_train:
            result["training"] = train_victim(victim, folders, run_dir, o)
        result["checkpoint"] = served_checkpoint(run_dir)
        result["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
        (out / "result.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
