"""Small real images for tests: tiles and folders cut from scikit-image's bundled photographs
(:mod:`copymark.data.samples`), shared by the README, protection and ownership-report tests."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from copymark.data.samples import sample_path
from copymark.images import from_pil, save_image


def tiles(name: str, size: int, max_side: int, step: int | None = None) -> list[torch.Tensor]:
    """``size`` px tiles (every ``step`` px, default ``size``) of a built-in photograph shrunk
    (Pillow, antialiased) to ``max_side``."""
    step = step or size
    with Image.open(sample_path(name)) as img:
        img = img.convert("RGB")
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        x = from_pil(img)
    h, w = x.shape[-2:]
    return [
        x[:, i : i + size, j : j + size] for i in range(0, h - size + 1, step) for j in range(0, w - size + 1, step)
    ]


def write_classes(root: Path, classes: tuple[str, ...], per_class: int, size: int = 32) -> Path:
    """Class folders ``root/<class>/NNN.png``, one photograph per class (a task a CNN starts learning at once)."""
    for c in classes:
        ts = tiles(c, size, max_side=5 * size, step=size // 2)
        assert len(ts) >= per_class, (c, len(ts))
        for i, t in enumerate(ts[:per_class]):
            save_image(t, root / c / f"{i:03d}.png")
    return root


def write_secrets(root: Path, names: tuple[str, ...], per_sample: int = 2, size: int = 32) -> Path:
    """``root/<name>-<i>.png``: ``per_sample`` disjoint tiles of each named photograph (secret images)."""
    for name in names:
        for i, t in enumerate(tiles(name, size, max_side=5 * size, step=size)[:per_sample]):
            save_image(t, root / f"{name}-{i}.png")
    return root
