"""Helpers for the stego tests: small folders of natural-image tiles from the built-in samples."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from copymark.data.samples import sample_path
from copymark.images import from_pil, save_image

COVER_SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "china")
SECRET_SAMPLES = ("flower", "hubble_deep_field", "immunohistochemistry", "retina")


def tiles(names: tuple[str, ...], size: int = 32, max_side: int = 128) -> list[torch.Tensor]:
    """Non-overlapping ``size`` x ``size`` tiles of the named built-in samples (shrunk with Pillow to ``max_side``)."""
    out = []
    for name in names:
        with Image.open(sample_path(name)) as img:
            img = img.convert("RGB")
            img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)  # fast, antialiased
            x = from_pil(img)
        h, w = x.shape[-2:]
        for i in range(0, h - size + 1, size):
            for j in range(0, w - size + 1, size):
                out.append(x[:, i : i + size, j : j + size])
    return out


def write_tiles(
    folder: Path, names: tuple[str, ...], size: int = 32, max_side: int = 128, limit: int | None = None
) -> Path:
    ts = tiles(names, size, max_side)[:limit]
    for k, t in enumerate(ts):
        save_image(t, folder / f"t{k:03d}.png")
    return folder
