"""CLI commands of this package (registered by copymark.cli): ``copymark metrics``.

Heavy imports (torch, the metric modules) happen inside the command body so that
``copymark --help`` stays fast.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer


def _fmt(x: float | None, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


def metrics_command(
    pred: Path = typer.Option(
        ..., "--pred", help="Folder of predicted images (paired with --ref by file name without extension)."
    ),
    ref: Path = typer.Option(..., "--ref", help="Folder of reference (ground-truth) images."),
    y_channel: bool = typer.Option(
        False, "--y-channel", help="PSNR/SSIM on the Y of YCbCr (BT.601, MATLAB rgb2ycbcr) instead of RGB."
    ),
    crop: int = typer.Option(
        0, "--crop", min=0, help="Pixels cropped from each border before PSNR/SSIM (the SR scale, e.g. 4)."
    ),
    raw_float: bool = typer.Option(
        False, "--raw-float", help="PSNR/SSIM on raw float values instead of 8-bit-rounded RGB/Y (the SR default)."
    ),
    fid: bool = typer.Option(
        False,
        "--fid",
        help="Fréchet Inception distance (needs the Inception weight file); KID is reported with it, as FID is biased for small sets.",
    ),
    kid: bool = typer.Option(
        False, "--kid", help="Kernel Inception distance, mean and std over subsets (needs the Inception weight file)."
    ),
    swd: bool = typer.Option(
        False, "--swd", help="Sliced Wasserstein distance on Laplacian-pyramid patches (x1e3; no pretrained net)."
    ),
    inception_weights: Path | None = typer.Option(
        None,
        "--inception-weights",
        help="pt_inception-2015-12-05-6726825d.pth (pytorch-fid's FID weights); default $COPYMARK_INCEPTION_WEIGHTS.",
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write all figures (and per-image PSNR/SSIM) to this JSON file."
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Image pairs loaded at a time."),
    kid_subset_size: int = typer.Option(
        1000, "--kid-subset-size", min=2, help="KID subset size (capped at the number of images)."
    ),
    kid_subsets: int = typer.Option(100, "--kid-subsets", min=1, help="Number of KID subsets."),
    swd_max_descriptors: int = typer.Option(
        65536,
        "--swd-max-descriptors",
        min=1,
        help="SWD memory bound: descriptors kept per pyramid level and set (a uniform sample).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for KID subsets and SWD sampling."),
    device: str = typer.Option("cpu", "--device", help="Device for the feature net and PSNR/SSIM (cpu, cuda)."),
) -> None:
    """Compare predicted images with references: PSNR and SSIM (mean, std, n), optionally FID, KID, SWD.

    Example (the SR protocol): copymark metrics --pred sr_x4 --ref Set5/HR --y-channel --crop 4 --json out.json
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from copymark.files import atomic_write_json
    from copymark.metrics.folders import compare_folders, pair_folders

    console = Console()
    pairs = pair_folders(pred, ref)  # bad folders fail before any weights are loaded
    kid = kid or fid  # FID alone is biased for small sets: always report KID (mean, std) and n beside it
    feature_net = None
    if fid or kid:
        from copymark.metrics.inception import inception_v3_features, resolve_inception_weights

        resolve_inception_weights(inception_weights)
        feature_net = inception_v3_features(inception_weights, device=device)

    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("pairs", total=len(pairs))
        result = compare_folders(
            pred, ref,
            y_channel=y_channel, crop_border=crop, quantize=not raw_float,
            fid=fid, kid=kid, swd=swd, feature_net=feature_net,
            batch_size=batch_size, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, swd_max_descriptors=swd_max_descriptors,
            seed=seed, device=device,
            on_batch=lambda done: progress.update(task, completed=done),
        )  # fmt: skip

    proto = f"{'Y (BT.601)' if y_channel else 'RGB'}, crop {crop}, {'raw float' if raw_float else '8-bit'}"
    table = Table(title=f"{pred} vs {ref} ({result.n_pairs} pairs; PSNR/SSIM on {proto})")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("std", justify="right")
    table.add_column("n", justify="right")
    for name, mean, std, n in result.rows():
        digits = 6 if name.startswith(("SSIM", "KID")) else 4
        table.add_row(name, _fmt(mean, digits), _fmt(std, digits), str(n))
    console.print(table)
    if json_out is not None:
        atomic_write_json(Path(json_out), result.to_dict())
        console.print(f"wrote {json_out}")


def register(app: typer.Typer) -> None:
    """Add ``copymark metrics`` to ``app``."""
    app.command("metrics")(metrics_command)
