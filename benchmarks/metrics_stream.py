"""Streaming memory and speed of ``compare_folders`` on many image pairs.

Writes ``--n`` pairs of ``--size`` x ``--size`` PNGs (smooth random images and noisy copies)
into a temporary folder, then scores them with PSNR + SSIM (Y channel, crop 4), SWD and, with a
tiny injected feature net, FID + KID, ``--batch`` pairs at a time. Prints JSON: seconds, pairs/s,
the process's peak RSS before and after scoring, and what holding all pairs as float32 tensors
would take, to show that the images stream (the peak grows by far less than that).

    python benchmarks/metrics_stream.py                 # 1000 pairs of 256 x 256
    python benchmarks/metrics_stream.py --n 200 --size 128
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from copymark import images
from copymark.metrics import compare_folders


class TinyFeatures(torch.nn.Module):
    """A stand-in feature net (64-d), so the benchmark needs no Inception weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 32, 5, stride=4)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--metrics", default="psnr,ssim,fid,kid,swd", help="comma-separated subset")
    ap.add_argument("--data", default=None, help="reuse/keep the generated pairs in this folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    want = set(args.metrics.split(","))
    g = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp)
        pred, ref = root / "pred", root / "ref"
        t0 = time.perf_counter()
        for i in range(args.n):
            if (ref / f"{i:05d}.png").exists() and (pred / f"{i:05d}.png").exists():
                continue
            r = images.resize_bicubic(torch.rand(3, 16, 16, generator=g), size=(args.size, args.size)).clamp(0, 1)
            p = (r + 0.03 * torch.randn(r.shape, generator=g)).clamp(0, 1)
            images.save_image(r, ref / f"{i:05d}.png")
            images.save_image(p, pred / f"{i:05d}.png")
        t_write = time.perf_counter() - t0
        rss_before = peak_rss_mb()
        t0 = time.perf_counter()
        res = compare_folders(
            pred, ref, y_channel=True, crop_border=4, psnr="psnr" in want, ssim="ssim" in want,
            fid="fid" in want, kid="kid" in want, swd="swd" in want,
            feature_net=TinyFeatures(), batch_size=args.batch,
        )  # fmt: skip
        t_score = time.perf_counter() - t0
        rss_after = peak_rss_mb()
    all_pairs_mb = args.n * 2 * 3 * args.size * args.size * 4 / 2**20
    print(
        json.dumps(
            {
                "pairs": args.n,
                "size": args.size,
                "batch_size": args.batch,
                "torch_threads": args.threads,
                "write_s": round(t_write, 2),
                "score_s": round(t_score, 2),
                "pairs_per_s": round(args.n / t_score, 2),
                "peak_rss_mb_before_scoring": round(rss_before, 1),
                "peak_rss_mb_after_scoring": round(rss_after, 1),
                "peak_rss_growth_mb": round(rss_after - rss_before, 1),
                "all_pairs_as_float32_mb": round(all_pairs_mb, 1),
                "metrics": sorted(want),
                "psnr_y_mean": res.psnr and round(res.summary(res.psnr).mean, 4),
                "ssim_y_mean": res.ssim and round(res.summary(res.ssim).mean, 6),
                "fid_tiny": res.fid and round(res.fid, 6),
                "kid_tiny_mean": res.kid and round(res.kid.mean, 6),
                "swd_x1e3_avg": res.swd and round(res.swd.avg, 4),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
