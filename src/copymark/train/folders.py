"""The translation procedures' datasets, read from data folders (what ``copymark train --data`` takes).

=================  ===========================================================================
procedure          layout
=================  ===========================================================================
pix2pix            ``DIR/A`` and ``DIR/B`` paired by file stem (``A/x.png`` -> ``B/x.png``); the
                   pix2pix datasets' ``DIR/trainA`` + ``DIR/trainB`` are accepted too.
cyclegan, ugatit   ``DIR/trainA`` and ``DIR/trainB`` (CycleGAN / U-GAT-IT layout), or ``DIR/A`` and
                   ``DIR/B``; unpaired, any counts.
srresnet, srgan    ``DIR/HR`` (or ``DIR`` itself) with high-resolution images; LR images are made
                   by MATLAB-style bicubic downscaling, unless ``DIR/LR_x<scale>`` holds them
                   (matched by stem, each HR exactly ``scale`` x its LR).
=================  ===========================================================================

Sizes: GAN procedures train on ``size x size`` images, ``size`` a multiple of the generator's
stride (UNet: ``2**num_downs``; ResNet generator: 4; the full U-GAT-IT generator runs only at its
``img_size``). Images of another size are an error naming the file (checked up front from the
headers) unless ``resize_policy`` says what to do: ``resize`` (bicubic), ``center_crop`` or
``random_crop`` (see :func:`copymark.data.apply_size_policy`). SR procedures take random
``size x size`` HR crops (``size`` a multiple of the scale) and the matching LR crops. Grayscale
and palette images are converted to RGB on load (the project's image convention). Every
procedure adds random horizontal flips.

Everything here is checked when the dataset is built, before a run folder exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from torch.utils.data import Dataset

from copymark.config import StrictModel
from copymark.errors import ConfigError, DataError
from copymark.train.cyclegan import CycleGANConfig
from copymark.train.pix2pix import Pix2PixConfig
from copymark.train.ugatit import UGATITConfig

SR_KINDS = ("srresnet", "srgan")


class DataConfig(StrictModel):
    dir: str
    size: int = Field(256, ge=4)
    resize_policy: Literal["error", "resize", "center_crop", "random_crop"] = "error"
    flip: bool = True


def generator_stride(config: Any) -> int:
    """What ``--size`` must be a multiple of for procedure ``config``."""
    match config:
        case Pix2PixConfig():
            return 2**config.generator.num_downs
        case CycleGANConfig() | UGATITConfig():
            return 4
        case _:
            return config.generator.scale  # SR: HR crops must be multiples of the scale


def check_size_fits(config: Any, size: int) -> None:
    """``--size`` against the procedure's nets (stride, U-GAT-IT's fixed size); a ConfigError names both."""
    stride = generator_stride(config)
    if size % stride:
        what = "the SR scale" if config.kind in SR_KINDS else "the generator's stride"
        hint = f"use e.g. --size {max(stride, size - size % stride)}"
        if config.kind == "pix2pix":
            hint += " (or a smaller generator.num_downs in --net-config; see `copymark nets show pix2pix`)"
        raise ConfigError(f"--size {size} is not a multiple of {what} ({stride})", hint=hint)
    if isinstance(config, UGATITConfig) and not config.generator.light and config.generator.img_size != size:
        raise ConfigError(
            f"ugatit: the full generator runs only at its img_size {config.generator.img_size}, but --size is {size}",
            hint="drop generator.img_size from --net-config (it follows --size), or set generator.light",
        )


def _pick_pair(root: Path, names: list[tuple[str, str]], what: str) -> tuple[Path, Path]:
    for a, b in names:
        if (root / a).is_dir() and (root / b).is_dir():
            return root / a, root / b
    tried = " or ".join(f"{a}/ + {b}/" for a, b in names)
    raise DataError(
        f"{root}: no {what} folders found (looked for {tried})", hint="see `copymark train --help` for the data layouts"
    )


def _check_sizes(files: list[Path], size: int, policy: str) -> None:
    """Up-front check from file headers, so a bad image fails now, not mid-training."""
    from copymark.data import image_size

    bad = []
    small = []
    for f in files:
        h, w = image_size(f)
        if (h, w) != (size, size):
            bad.append(f"{f.name} ({h}x{w})")
            if h < size or w < size:
                small.append(f"{f.name} ({h}x{w})")
    if bad and policy == "error":
        raise DataError(
            f"{len(bad)} image(s) in {files[0].parent} are not {size}x{size}: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}",
            hint="pass --resize-policy resize, center_crop or random_crop, or a matching --size",
        )
    if small and policy in ("center_crop", "random_crop"):
        raise DataError(
            f"{len(small)} image(s) in {files[0].parent} are smaller than the {size}x{size} crop: {', '.join(small[:4])}",
            hint="use --resize-policy resize or a smaller --size",
        )


def build_dataset(kind: str, data: DataConfig, proc_config: Any, seed: int) -> Dataset:
    """The dataset of procedure ``kind`` for ``data`` (see the module docstring for layouts)."""
    from copymark.data import (
        PairedFolders,
        PairedRandomCrop,
        RandomHFlip,
        SRPairs,
        UnpairedFolders,
        image_files,
        image_size,
    )
    from copymark.data.transforms import Compose

    root = Path(data.dir)
    if not root.is_dir():
        raise DataError(
            f"data folder not found: {root}", hint="pass --data DIR (see `copymark train --help` for layouts)"
        )
    check_size_fits(proc_config, data.size)
    flip = RandomHFlip() if data.flip else None
    if kind == "pix2pix":
        a, b = _pick_pair(root, [("A", "B"), ("trainA", "trainB")], "paired A/B")
        for d in (a, b):
            _check_sizes(image_files(d, f"folder {d.name}"), data.size, data.resize_policy)
        return PairedFolders(a, b, flip, size=data.size, resize_policy=data.resize_policy, seed=seed)
    if kind in ("cyclegan", "ugatit"):
        a, b = _pick_pair(root, [("trainA", "trainB"), ("A", "B")], "unpaired A/B")
        for d in (a, b):
            _check_sizes(image_files(d, f"folder {d.name}"), data.size, data.resize_policy)
        return UnpairedFolders(a, b, flip, size=data.size, resize_policy=data.resize_policy, seed=seed)
    # super-resolution
    scale = proc_config.generator.scale
    hr = root / "HR" if (root / "HR").is_dir() else root
    lr = hr.parent / f"LR_x{scale}" if (hr.parent / f"LR_x{scale}").is_dir() and hr != root else None
    small = [
        f"{f.name} ({h}x{w})"
        for f in image_files(hr, "HR folder")
        for h, w in [image_size(f)]
        if h < data.size or w < data.size
    ]
    if small:
        raise DataError(
            f"{len(small)} HR image(s) in {hr} are smaller than the {data.size}x{data.size} training crop: {', '.join(small[:4])}",
            hint="use a smaller --size (a multiple of the scale) or remove those images",
        )
    steps = [PairedRandomCrop(data.size // scale, scale)] + ([flip] if flip else [])
    return SRPairs(hr, lr, scale=scale, transform=Compose(steps), seed=seed)
