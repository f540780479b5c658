"""Small real-photo class folders, secret images and a key pair for the protection tests."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from copymark.data.samples import sample_path
from copymark.images import from_pil, save_image

CLASSES = ("astronaut", "chelsea", "coffee", "rocket")
SECRET_SAMPLES = ("flower", "hubble_deep_field", "immunohistochemistry", "retina")


def tiles(name: str, size: int = 32, max_side: int = 160, step: int = 16) -> list[torch.Tensor]:
    """Overlapping ``size`` px tiles of a built-in photograph shrunk (Pillow) to ``max_side``."""
    with Image.open(sample_path(name)) as img:
        img = img.convert("RGB")
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        x = from_pil(img)
    h, w = x.shape[-2:]
    return [
        x[:, i : i + size, j : j + size] for i in range(0, h - size + 1, step) for j in range(0, w - size + 1, step)
    ]


def write_classes(root: Path, per_class: int = 40, size: int = 32) -> Path:
    """``root/<class>/NNN.png``: one photograph per class (a task a small CNN learns in a few dozen steps)."""
    for c in CLASSES:
        ts = tiles(c, size, max_side=5 * size, step=size // 2)
        assert len(ts) >= per_class, (c, len(ts))
        for i, t in enumerate(ts[:per_class]):
            save_image(t, root / c / f"{i:03d}.png")
    return root


def write_secrets(root: Path, per_sample: int = 2, size: int = 32) -> Path:
    for name in SECRET_SAMPLES:
        for i, t in enumerate(tiles(name, size, max_side=5 * size, step=size)[:per_sample]):
            save_image(t, root / f"{name}-{i}.png")
    return root


def write_classes_upscaled(root: Path, size: int = 256, per_class: int = 12) -> Path:
    """Class folders of ``size`` px images: 64 px tiles upscaled (bilinear), for full-size runs on few photos."""
    import torch.nn.functional as F

    for c in CLASSES:
        ts = tiles(c, 64, max_side=320, step=32)[:per_class]
        assert len(ts) == per_class, (c, len(ts))
        for i, t in enumerate(ts):
            up = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False)[0].clamp(0, 1)
            save_image(up, root / c / f"{i:03d}.png")
    return root
