"""Random crop / flip transforms applied identically to a group of images, and size policies.

A transform here is a plain callable ``(images, generator) -> images``: ``images`` is a list of
``3 x H x W`` tensors that belong together (one image; an A/B pair; an LR/HR pair) and every
random choice is drawn from the explicit ``torch.Generator``, once for the whole group, so a
pair stays aligned. Datasets build that generator per item from ``(seed, epoch, index)``
(:func:`item_generator`), so an item's augmentation does not depend on worker count or on the
order items are fetched in: the same seed gives the same batches.

Why not torchvision.transforms.v2? Its random transforms draw from torch's global RNG, which
makes pairing and reproducibility depend on call order; these few functions avoid that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch

from copymark import images as im
from copymark.errors import DataError

Transform = Callable[[list[torch.Tensor], torch.Generator], list[torch.Tensor]]
ResizePolicy = Literal["error", "resize", "center_crop", "random_crop"]
RESIZE_POLICIES: tuple[str, ...] = ("error", "resize", "center_crop", "random_crop")


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch, index)`` by hashing (no correlation between items)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
    return g


def _randint(high: int, generator: torch.Generator) -> int:
    """Uniform integer in ``[0, high]`` (inclusive)."""
    return int(torch.randint(0, high + 1, (1,), generator=generator).item())


def _as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise DataError(f"size must be an int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def _same_size(images: Sequence[torch.Tensor], what: str) -> tuple[int, int]:
    sizes = {tuple(x.shape[-2:]) for x in images}
    if len(sizes) != 1:
        raise DataError(
            f"{what}: the images of one item differ in size ({sorted(sizes)})",
            hint="images transformed together must have the same height and width",
        )
    h, w = sizes.pop()
    return int(h), int(w)


def random_crop(
    images: Sequence[torch.Tensor], size: int | Sequence[int], generator: torch.Generator
) -> list[torch.Tensor]:
    """Crop the same random ``size`` window out of every image (all must share one size)."""
    ch, cw = _as_hw(size)
    h, w = _same_size(images, "random_crop")
    if ch > h or cw > w:
        raise DataError(f"random_crop: crop {ch}x{cw} is larger than the image {h}x{w}")
    top, left = _randint(h - ch, generator), _randint(w - cw, generator)
    return [x[..., top : top + ch, left : left + cw] for x in images]


def paired_random_crop(
    lr: torch.Tensor, hr: torch.Tensor, lr_size: int | Sequence[int], scale: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """SR crop: an ``lr_size`` window of ``lr`` and the matching ``scale`` x larger window of ``hr``."""
    ch, cw = _as_hw(lr_size)
    h, w = lr.shape[-2:]
    if tuple(hr.shape[-2:]) != (h * scale, w * scale):
        raise DataError(
            f"paired_random_crop: HR {tuple(hr.shape[-2:])} is not {scale} x LR {tuple(lr.shape[-2:])}",
            hint="mod-crop the HR image to a multiple of the scale before making the LR",
        )
    if ch > h or cw > w:
        raise DataError(f"paired_random_crop: LR crop {ch}x{cw} is larger than the LR image {h}x{w}")
    top, left = _randint(h - ch, generator), _randint(w - cw, generator)
    lr_c = lr[..., top : top + ch, left : left + cw]
    hr_c = hr[..., top * scale : (top + ch) * scale, left * scale : (left + cw) * scale]
    return lr_c, hr_c


def random_hflip(images: Sequence[torch.Tensor], generator: torch.Generator, p: float = 0.5) -> list[torch.Tensor]:
    """Flip every image left-right together with probability ``p`` (one draw per group)."""
    flip = bool(torch.rand((), generator=generator).item() < p)
    return [x.flip(-1) if flip else x for x in images]


class RandomCrop:
    """Transform: the same random ``size`` crop of every image in the group."""

    def __init__(self, size: int | Sequence[int]):
        self.size = _as_hw(size)

    def __call__(self, images: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        return random_crop(images, self.size, generator)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size})"


class PairedRandomCrop:
    """Transform for ``[lr, hr]`` groups: an ``lr_size`` LR crop and its ``scale`` x HR crop."""

    def __init__(self, lr_size: int | Sequence[int], scale: int):
        self.lr_size = _as_hw(lr_size)
        self.scale = int(scale)

    def __call__(self, images: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        if len(images) != 2:
            raise DataError(f"PairedRandomCrop expects [lr, hr], got {len(images)} images")
        return list(paired_random_crop(images[0], images[1], self.lr_size, self.scale, generator))

    def __repr__(self) -> str:
        return f"PairedRandomCrop(lr_size={self.lr_size}, scale={self.scale})"


class RandomHFlip:
    """Transform: flip the whole group left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise DataError(f"RandomHFlip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, images: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        return random_hflip(images, generator, self.p)

    def __repr__(self) -> str:
        return f"RandomHFlip(p={self.p})"


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, steps: Sequence[Transform]):
        self.steps = list(steps)

    def __call__(self, images: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        for step in self.steps:
            images = step(images, generator)
        return images

    def __repr__(self) -> str:
        return f"Compose({self.steps!r})"


def apply_size_policy(
    images: list[torch.Tensor],
    size: int | Sequence[int] | None,
    policy: ResizePolicy,
    generator: torch.Generator,
    paths: Sequence[str | Path],
) -> list[torch.Tensor]:
    """Bring a group of images to ``size`` (H, W) following ``policy``; ``None`` leaves them as they are.

    * ``"error"``: an image of another size raises :class:`DataError` naming its file and size.
    * ``"resize"``: bicubic (MATLAB-style, antialiased) resize to ``size``, clamped to [0, 1]
      (the aspect ratio is not kept).
    * ``"center_crop"`` / ``"random_crop"``: crop ``size`` out of the image (an image smaller
      than ``size`` is an error naming it). A random crop takes the same window in every image
      of the group, so those must share one size.
    """
    if policy not in RESIZE_POLICIES:
        raise DataError(f"unknown resize_policy {policy!r}", hint=f"use one of {', '.join(RESIZE_POLICIES)}")
    if size is None:
        return images
    th, tw = _as_hw(size)
    if all(tuple(x.shape[-2:]) == (th, tw) for x in images):
        return images
    if policy == "resize":
        return [
            x if tuple(x.shape[-2:]) == (th, tw) else im.resize_bicubic(x, size=(th, tw)).clamp(0, 1) for x in images
        ]
    for x, p in zip(images, paths, strict=True):
        h, w = x.shape[-2:]
        if policy == "error" and (h, w) != (th, tw):
            raise DataError(
                f"{p}: image is {h}x{w} (HxW), expected {th}x{tw}",
                hint="make the images one size, or pass resize_policy='resize', 'center_crop' or 'random_crop'",
            )
        if h < th or w < tw:
            raise DataError(
                f"{p}: image is {h}x{w} (HxW), smaller than the crop {th}x{tw}",
                hint="use resize_policy='resize' or a smaller size",
            )
    if policy == "center_crop":
        return [im.center_crop(x, th, tw) for x in images]
    if len({tuple(x.shape[-2:]) for x in images}) > 1:
        listed = ", ".join(f"{p} is {x.shape[-2]}x{x.shape[-1]}" for x, p in zip(images, paths, strict=True))
        raise DataError(
            f"resize_policy='random_crop' needs the images of one item to share a size: {listed}",
            hint="use resize_policy='resize' or 'center_crop', or make the pair one size",
        )
    return random_crop(images, (th, tw), generator)
