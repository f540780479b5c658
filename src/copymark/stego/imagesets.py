"""Small in-memory image sets for codec training, stego generation and steganalysis.

Cover, secret and stego sets here are small (thousands of images of 32-256 px), so they are
decoded once into one ``uint8`` tensor ``N x 3 x S x S`` (a quarter of the float memory) and
turned into float batches on demand. Folders are read with :class:`copymark.data.folders.ImageFolder`
(decoding by content, grayscale files become RGB, clear :class:`~copymark.errors.DataError` s
for missing/empty folders); images of another size are brought to ``size`` by ``resize``
(bicubic, antialiased) or ``center_crop``, or refused (``error``: a DataError naming the file;
stego images must never be resized, which would wash out the embedding).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from copymark.errors import DataError
from copymark.images import from_uint8, save_image, to_uint8
from copymark.stego.codecs import MAX_SIZE, MIN_SIZE, SIZE_STEP

SizePolicy = Literal["resize", "center_crop", "error"]


@dataclass
class ImageSet:
    """Decoded images (``uint8``, ``N x 3 x S x S``) and one key per image (relative path stem)."""

    images: torch.Tensor
    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def batch(self, index: torch.Tensor | slice | list[int]) -> torch.Tensor:
        """Float ``[0, 1]`` batch of the images at ``index``."""
        return from_uint8(self.images[index])

    def floats(self) -> torch.Tensor:
        return from_uint8(self.images)


def check_size(size: int, what: str = "--size") -> None:
    if size % SIZE_STEP or not MIN_SIZE <= size <= MAX_SIZE:
        raise DataError(
            f"{what} {size} is not supported; use a multiple of {SIZE_STEP} from {MIN_SIZE} to {MAX_SIZE}",
            hint="e.g. --size 64 for Tiny-ImageNet",
        )


def load_image_set(
    folder: str | Path,
    size: int,
    limit: int | None = None,
    policy: SizePolicy = "resize",
    what: str = "image folder",
) -> ImageSet:
    """Decode the images of ``folder`` (recursively, sorted by path) at ``size`` x ``size``.

    ``limit`` keeps the first ``limit`` images in path order.
    """
    from copymark.data.folders import ImageFolder

    check_size(size)
    d = Path(folder)
    if not d.is_dir():
        raise DataError(f"{what} not found or not a directory: {d}", hint="pass a folder of images")
    ds = ImageFolder(d, recursive=True, size=size, resize_policy=policy)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n < 1:
        raise DataError(f"{what} {d}: no images to use (limit={limit})")
    imgs = torch.empty(n, 3, size, size, dtype=torch.uint8)
    keys = []
    for i in range(n):
        item = ds[i]
        imgs[i] = to_uint8(item["image"])
        keys.append(item["key"])
    return ImageSet(imgs, keys)


def save_image_set(images: torch.Tensor, keys: list[str], folder: str | Path) -> list[Path]:
    """Write float images as ``folder/<key>.png`` (key slashes become ``__``)."""
    out = []
    d = Path(folder)
    for x, k in zip(images, keys, strict=True):
        out.append(save_image(x, d / (k.replace("/", "__") + ".png")))
    return out
