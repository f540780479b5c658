"""Small helpers for the data tests: write tiny real image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(
    path: Path, h: int = 16, w: int = 20, seed: int = 0, mode: str = "RGB", fmt: str | None = None
) -> np.ndarray:
    """Write a random image file; return its H x W x 3 uint8 content as RGB."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return np.array(img.convert("RGB"))


def write_folder(d: Path, names: list[str], h: int = 16, w: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    return {n: write_image(d / n, h, w, seed=seed + i) for i, n in enumerate(names)}
