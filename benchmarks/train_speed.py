"""Training speed of copymark's loop vs a plain fp32 eager loop, per model, in one run.

For each model the *same* procedure code (``copymark.train``: pix2pix, cyclegan, ugatit,
srresnet, srgan) runs one optimisation step at a time two ways:

* ``plain``: float32, eager, contiguous (NCHW) tensors, no cuDNN autotuning: how the reference
  implementations (junyanz/pytorch-CycleGAN-and-pix2pix, UGATIT-pytorch, SRGAN ports) train;
* ``copymark``: the loop's path: AMP (``--amp``; bf16 by default on CUDA, off on CPU where
  autocast only slows these nets down), ``channels_last`` and cuDNN autotuning on CUDA, and ``torch.compile`` with ``--compile``; the step is
  :func:`copymark.train.loop.train_step` on nets placed/wrapped by the loop's own functions.

Inputs are pre-generated random batches already on the device (the data pipeline is not
measured). After ``--warmup`` steps (compilation, autotuning), ``--steps`` steps are timed with
device synchronisation; images/s counts input images (pairs for paired procedures) and peak
memory is ``torch.cuda.max_memory_allocated`` on CUDA (process peak RSS on CPU, where it is
less meaningful). Prints JSON with the ratios ``copymark / plain``.

``--quality-steps N`` also trains pix2pix N steps both ways from the same initial weights on
the same batches of real photo crops (built-in samples, a fixed colour mapping as the target)
and reports the held-out L1 of each (photos never trained on), to show the fast path loses no
quality.

Examples::

    python benchmarks/train_speed.py                                  # tiny CPU config
    python benchmarks/train_speed.py --device cuda --size 256 --batch 1 --steps 50 \\
        --models pix2pix,cyclegan --full --compile --quality-steps 300
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from typing import Any

import torch

from copymark.train import api
from copymark.train.loop import Dist, LoopConfig, StepContext, place_procedure, seed_everything, train_step, wrap_nets

TINY: dict[str, dict[str, Any]] = {
    "pix2pix": {"generator": {"ngf": 8, "num_downs": 5}, "discriminator": {"ndf": 8, "n_layers": 2}},
    "cyclegan": {"generator": {"ngf": 8, "n_blocks": 1}, "discriminator": {"ndf": 8, "n_layers": 2}},
    "ugatit": {
        "generator": {"ngf": 8, "n_blocks": 1},
        "global_discriminator": {"ndf": 8, "n_layers": 5},
        "local_discriminator": {"ndf": 8, "n_layers": 4},
    },
    "srresnet": {"generator": {"n_blocks": 2, "nf": 16}},
    "srgan": {
        "generator": {"n_blocks": 2, "nf": 16},
        "discriminator": {"ndf": 8, "n_blocks": 1, "dense": 32, "pool_size": 2},
    },
}


def proc_config(kind: str, size: int, full: bool, vgg: str | None) -> Any:
    over: dict[str, Any] = {} if full else json.loads(json.dumps(TINY[kind]))
    if kind == "ugatit":
        over.setdefault("generator", {})["img_size"] = size
    if kind == "srgan":
        over.update({"perceptual": vgg is not None, "vgg_weights": vgg})
    return api.procedure_config(kind, over)


def make_batches(
    kind: str, cfg: Any, size: int, batch: int, n: int, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        if kind in ("srresnet", "srgan"):
            s = cfg.generator.scale
            b = {
                "lr": torch.rand(batch, 3, size // s, size // s, generator=g),
                "hr": torch.rand(batch, 3, size, size, generator=g),
            }
        else:
            b = {"a": torch.rand(batch, 3, size, size, generator=g), "b": torch.rand(batch, 3, size, size, generator=g)}
        out.append(b)
    return [{k: v.to(device) for k, v in b.items()} for b in out]


def to_format(batch: dict[str, torch.Tensor], channels_last: bool) -> dict[str, torch.Tensor]:
    if not channels_last:
        return batch
    return {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup(kind: str, pcfg: Any, loop: LoopConfig, iters: int, device: torch.device) -> tuple[Any, StepContext, bool]:
    seed_everything(0)
    proc = api.build_procedure(pcfg, iters)
    cl = place_procedure(proc, loop, device)
    wrap_nets(proc, loop, Dist(), device)
    scaler = torch.amp.GradScaler(device.type, enabled=loop.amp == "fp16")
    return proc, StepContext(device, loop.amp, scaler, 1, 0), cl


def measure(
    kind: str,
    pcfg: Any,
    loop: LoopConfig,
    batches: list[dict[str, torch.Tensor]],
    warmup: int,
    steps: int,
    device: torch.device,
) -> dict[str, Any]:
    proc, ctx, cl = setup(kind, pcfg, loop, warmup + steps, device)
    bs = [to_format(b, cl) for b in batches]
    for i in range(warmup):
        train_step(proc, bs[i % len(bs)], ctx)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(steps):
        losses = train_step(proc, bs[(warmup + i) % len(bs)], ctx)
    sync(device)
    dt = time.perf_counter() - t0
    n_img = steps * next(iter(batches[0].values())).shape[0]
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    finite = all(torch.isfinite(torch.as_tensor(float(v))) for v in losses.values())
    del proc, ctx
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "images_per_s": n_img / dt,
        "seconds": dt,
        "steps": steps,
        "peak_memory_mb": peak,
        "losses_finite": bool(finite),
    }


def quality(
    pcfg: Any, loop_plain: LoopConfig, loop_fast: LoopConfig, size: int, batch: int, steps: int, device: torch.device
) -> dict[str, Any]:
    """Held-out L1 of pix2pix after ``steps`` equal steps, plain vs copymark path."""
    from copymark.data import sample_split, samples

    def crops(x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        st = max(8, size // 2)
        return [
            x[:, i : i + size, j : j + size] for i in range(0, h - size + 1, st) for j in range(0, w - size + 1, st)
        ]

    def target(x: torch.Tensor) -> torch.Tensor:
        y = x[:, [2, 0, 1]].clone()
        y[:, 1] = 1 - y[:, 1]
        return y

    split = sample_split(n_test=3)
    max_side = max(2 * size, 96)
    train = torch.stack([c for s in samples(split.attacker, max_side=max_side) for c in crops(s.image)])
    test = torch.stack([c for s in samples(split.test, max_side=max_side) for c in crops(s.image)])
    g = torch.Generator().manual_seed(1)
    order = [torch.randint(0, len(train), (batch,), generator=g) for _ in range(steps)]
    out: dict[str, Any] = {"train_crops": len(train), "test_crops": len(test), "steps": steps}
    for name, loop in (("plain", loop_plain), ("copymark", loop_fast)):
        proc, ctx, cl = setup("pix2pix", pcfg, loop, steps, device)
        for idx in order:
            a = train[idx].to(device)
            train_step(proc, to_format({"a": a, "b": target(a)}, cl), ctx)
        G = proc.nets["G"].eval()
        errs = []
        with torch.no_grad():
            for i in range(0, len(test), 8):
                x = test[i : i + 8].to(device)
                errs.append((G(x).float() - target(x)).abs().mean(dim=(1, 2, 3)).cpu())
        out[f"held_out_l1_{name}"] = float(torch.cat(errs).mean())
        del proc, ctx
    out["l1_ratio"] = out["held_out_l1_copymark"] / out["held_out_l1_plain"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="pix2pix,cyclegan", help="comma list of pix2pix,cyclegan,ugatit,srresnet,srgan")
    ap.add_argument("--size", type=int, default=None, help="image side (SR: HR side); default 256 on CUDA, 32 on CPU")
    ap.add_argument("--batch", type=int, default=None, help="default 1 on CUDA, 2 on CPU")
    ap.add_argument("--steps", type=int, default=None, help="timed steps; default 30 on CUDA, 3 on CPU")
    ap.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first; default 10 on CUDA (20 with --compile), 1 on CPU"
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--amp",
        default=None,
        choices=["off", "bf16", "fp16"],
        help="copymark path AMP; default bf16 on CUDA, off on CPU (CPU autocast is slower here)",
    )
    ap.add_argument("--compile", action="store_true", help="torch.compile on copymark's path")
    ap.add_argument("--full", action="store_true", help="default (paper-size) nets; tiny nets otherwise")
    ap.add_argument("--vgg-weights", default=None, help="srgan: VGG19 state dict; without it srgan uses pixel MSE")
    ap.add_argument("--quality-steps", type=int, default=0, help="also compare pix2pix held-out L1 after N steps")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size or (256 if cuda else 32)
    batch = args.batch or (1 if cuda else 2)
    steps = args.steps or (30 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else ((20 if args.compile else 10) if cuda else 1)
    amp = args.amp or ("bf16" if cuda else "off")
    if amp == "fp16" and not cuda:
        ap.error("--amp fp16 needs CUDA")
    plain = LoopConfig(device=args.device, amp="off", channels_last=False, compile=False, cudnn_benchmark=False)
    fast = LoopConfig(device=args.device, amp=amp, channels_last=True, compile=args.compile, cudnn_benchmark=True)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "size": size,
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
        "nets": "full" if args.full else "tiny",
        "copymark_path": {"amp": amp, "channels_last": cuda, "compile": args.compile, "cudnn_benchmark": cuda},
        "models": {},
    }
    for kind in [m.strip() for m in args.models.split(",") if m.strip()]:
        pcfg = proc_config(kind, size, args.full, args.vgg_weights)
        batches = make_batches(kind, pcfg, size, batch, 4, device)
        r_plain = measure(kind, pcfg, plain, batches, warmup, steps, device)
        r_fast = measure(kind, pcfg, fast, batches, warmup, steps, device)
        result["models"][kind] = {
            "plain": r_plain,
            "copymark": r_fast,
            "speedup": r_fast["images_per_s"] / r_plain["images_per_s"],
            "memory_ratio": r_fast["peak_memory_mb"] / r_plain["peak_memory_mb"] if r_plain["peak_memory_mb"] else None,
        }
        print(
            f"{kind}: plain {r_plain['images_per_s']:.1f} img/s, copymark {r_fast['images_per_s']:.1f} img/s "
            f"(x{result['models'][kind]['speedup']:.2f})",
            file=sys.stderr,
        )
    if args.quality_steps:
        result["quality_pix2pix"] = quality(
            proc_config("pix2pix", size, args.full, None), plain, fast, size, batch, args.quality_steps, device
        )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
