"""Quality of the steganography codecs on a fixed data set, as JSON on stdout.

Data: Tiny-ImageNet validation images (64 x 64) from ``../shared/data/tiny_imagenet``. Covers
come from the first 50 of its 100 classes and secrets from the other 50, so the two sets are
disjoint; within each, images are taken in a fixed order (every class in turn). The first
``--n-train`` of each set train the learned codecs, the next ``--n-eval`` are held out and paired
(cover i with secret i) for the report.

For each codec (``--codecs en2d,gglnet,lsb``) the script trains (learned codecs, with the study's
lr/batch unless overridden) through the same code as ``copymark stego train`` into
``--work-dir/<codec>``, then reports, on the held-out pairs: cover-vs-stego PSNR/SSIM,
secret-vs-revealed PSNR/SSIM (mean, std, n), whether the revealed-secret PSNR clears the study's
26 dB, training time and the visibility image path.

Example::

    python benchmarks/stego_quality.py --iters 2000 --device cuda
    python benchmarks/stego_quality.py --codecs lsb          # the classical baseline only, seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tiny_imagenet"
STUDY_SECRET_PSNR_DB = 26.0


def select(data: Path, n: int) -> tuple[list[Path], list[Path]]:
    """Disjoint cover and secret file lists: classes 0-49 vs 50-99, round-robin over classes."""
    wnids = (data / "wnids.txt").read_text().split()
    if len(wnids) < 2:
        raise SystemExit(f"{data}/wnids.txt lists fewer than 2 classes")
    half = len(wnids) // 2

    def pick(classes: list[str]) -> list[Path]:
        per = [sorted((data / "val" / w).glob("*.JPEG"), key=lambda p: int(p.stem.split("_")[1])) for w in classes]
        out: list[Path] = []
        for i in range(max(len(x) for x in per)):
            out += [x[i] for x in per if i < len(x)]
        if len(out) < n:
            raise SystemExit(f"need {n} images per set, only {len(out)} available")
        return out[:n]

    return pick(wnids[:half]), pick(wnids[half:])


def link_folder(files: list[Path], folder: Path) -> Path:
    """A flat folder of symlinks ``0000_<name>`` keeping the chosen order (path order = list order)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        (folder / f"{i:05d}_{f.name}").symlink_to(f.resolve())
    return folder


def brief(q: dict) -> dict:
    return {
        k: ({kk: vv for kk, vv in v.items() if kk != "values"} if isinstance(v, dict) and "values" in v else v)
        for k, v in q.items()
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--codecs", default="en2d,gglnet,lsb", help="comma-separated: en2d, gglnet, lsb")
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--n-train", type=int, default=1000, help="training images per set")
    ap.add_argument("--n-eval", type=int, default=100, help="held-out cover/secret pairs")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the study's (En2D 30, GglNet 20)")
    ap.add_argument("--lr", type=float, default=None, help="default: the study's (En2D 1e-3, GglNet 1e-4)")
    ap.add_argument("--seed", type=int, default=2022)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="off")
    ap.add_argument("--lsb-bits", type=int, default=4)
    ap.add_argument("--work-dir", type=Path, default=None, help="where runs go (default: a temp folder, deleted)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)

    import torch

    from copymark.stego.codecs import LSBCodec, LSBCodecConfig
    from copymark.stego.imagesets import load_image_set
    from copymark.stego.quality import quality_report
    from copymark.stego.training import StegoDataConfig, StegoRunConfig, train_codec
    from copymark.train.loop import LoopConfig
    from copymark.train.stego import STUDY_DEFAULTS, stego_train_config

    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.data / "val").is_dir():
        print(json.dumps({"skipped": f"{args.data} not found (the shared data folder beside the checkout)"}))
        return 0
    n = args.n_train + args.n_eval
    tmp = None
    work = args.work_dir
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="stego-quality-")
        work = Path(tmp.name)
    cover_files, secret_files = select(args.data, n)
    covers = link_folder(cover_files, work / "covers")
    secrets = link_folder(secret_files, work / "secrets")
    results: dict = {
        "data": {"source": str(args.data), "size": 64, "covers": "classes 0-49", "secrets": "classes 50-99",
                 "n_train": args.n_train, "n_eval": args.n_eval},
        "device": args.device, "iters": args.iters, "seed": args.seed,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "study_secret_psnr_db": STUDY_SECRET_PSNR_DB, "codecs": {},
    }  # fmt: skip
    for kind in [c.strip() for c in args.codecs.split(",") if c.strip()]:
        t0 = time.perf_counter()
        if kind == "lsb":
            cs = load_image_set(covers, 64)
            ss = load_image_set(secrets, 64)
            (work / "lsb").mkdir(exist_ok=True)
            q = quality_report(
                LSBCodec(LSBCodecConfig(bits=args.lsb_bits)),
                cs.floats()[-args.n_eval :],
                ss.floats()[-args.n_eval :],
                out_dir=work / "lsb",
            )
            entry = {"bits": args.lsb_bits, **brief(q)}
        elif kind in STUDY_DEFAULTS:
            bs = args.batch_size or int(STUDY_DEFAULTS[kind]["batch_size"])
            cfg = StegoRunConfig(
                procedure=stego_train_config(kind, lr=args.lr),
                loop=LoopConfig(
                    iters=args.iters, batch_size=bs, seed=args.seed, device=args.device, amp=args.amp, progress=False
                ),  # type: ignore[arg-type]
                data=StegoDataConfig(covers=str(covers), secrets=str(secrets), size=64, holdout=args.n_eval),
            )
            out = train_codec(cfg, work / kind)
            entry = {"lr": cfg.procedure.lr, "batch_size": bs, "beta": cfg.procedure.beta, "train_seconds": round(out["train_seconds"], 1),
                     **brief(out["quality"]), "run": str(work / kind) if tmp is None else None}  # fmt: skip
        else:
            print(f"unknown codec {kind!r} (use en2d, gglnet, lsb)", file=sys.stderr)
            return 2
        entry["secret_psnr_above_study_26db"] = entry["secret_psnr"]["mean"] > STUDY_SECRET_PSNR_DB
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        results["codecs"][kind] = entry
    print(json.dumps(results, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
