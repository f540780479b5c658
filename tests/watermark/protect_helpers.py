"""Small real-photo class folders, secret images and a key pair for the protection tests."""

from __future__ import annotations

from pathlib import Path

from tests import sample_images
from tests.sample_images import tiles

from copymark.images import save_image

CLASSES = ("astronaut", "chelsea", "coffee", "rocket")
SECRET_SAMPLES = ("flower", "hubble_deep_field", "immunohistochemistry", "retina")


def write_classes(root: Path, per_class: int = 40, size: int = 32) -> Path:
    """``root/<class>/NNN.png``: one photograph per class (a task a small CNN learns in a few dozen steps)."""
    return sample_images.write_classes(root, CLASSES, per_class, size)


def write_secrets(root: Path, per_sample: int = 2, size: int = 32) -> Path:
    return sample_images.write_secrets(root, SECRET_SAMPLES, per_sample, size)


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
