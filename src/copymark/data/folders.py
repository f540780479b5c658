"""Map-style torch Datasets over image folders.

Every dataset checks its folder(s) when it is built, so a wrong path fails at once with a
:class:`~copymark.errors.DataError` that names the folder and says how to fix it (missing
directory, empty folder, no images of a supported type, unmatched pairs), not in the middle of
training. Images are decoded by content (:func:`copymark.images.load_image`), so PNG data in a
``.jpg`` file, grayscale JPEGs and 16-bit PNGs all come back as ``3 x H x W`` float32 RGB.

Items are dicts of tensors and strings (``default_collate`` batches them; strings become
lists), except :class:`ClassFolders`, which returns ``(image, label)`` like torchvision.
Each dataset has ``keys``: one unique string per item (file stem, or ``class/stem``), which
:mod:`copymark.data.splits` hashes to assign train/val/test.

Randomness (random crops, flips, unpaired partner choice) comes from a generator seeded by
``(seed, epoch, index)``; call ``set_epoch(e)`` each epoch for fresh augmentations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from copymark import images as im
from copymark.data.transforms import (
    RESIZE_POLICIES,
    ResizePolicy,
    Transform,
    apply_size_policy,
    item_generator,
)
from copymark.errors import DataError, ImageError

SUPPORTED = ", ".join(im.IMAGE_SUFFIXES)


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def image_files(folder: str | Path, what: str = "image folder", recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder`` (by suffix, case-insensitive; hidden files skipped).

    Raises :class:`DataError` naming ``folder`` when it is missing, not a directory, empty, or
    holds no image of a supported type.
    """
    d = Path(folder)
    if not d.exists():
        raise DataError(f"{what} not found: {d}", hint="check the path; it must be a directory of images")
    if not d.is_dir():
        raise DataError(f"{what} is not a directory: {d}", hint="pass the folder that holds the images, not a file")
    candidates = d.rglob("*") if recursive else d.iterdir()
    files = [p for p in candidates if p.is_file() and not _is_hidden(p.relative_to(d))]
    if not files:
        subdirs = [p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if subdirs and not recursive:
            raise DataError(
                f"{what} {d} has no files directly in it, only {len(subdirs)} subfolder(s) (e.g. {sorted(subdirs)[:3]})",
                hint="pass recursive=True, use ClassFolders for class subfolders, or point at the subfolder",
            )
        raise DataError(f"{what} is empty: {d}", hint=f"put images ({SUPPORTED}) in it")
    imgs = [p for p in files if p.suffix.lower() in im.IMAGE_SUFFIXES]
    if not imgs:
        examples = sorted(p.name for p in files)[:3]
        raise DataError(
            f"{what} {d} has {len(files)} file(s) but no images of a supported type (e.g. {examples})",
            hint=f"supported suffixes: {SUPPORTED}; convert the files or point at the right folder",
        )
    return sorted(imgs, key=lambda p: p.relative_to(d).as_posix())


def _key(path: Path, root: Path) -> str:
    """Item key: path relative to ``root`` without suffix (the stem for a flat folder)."""
    return path.relative_to(root).with_suffix("").as_posix()


def _by_stem(files: Sequence[Path], root: Path, what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        k = _key(p, root)
        if k in out:
            raise DataError(
                f"{what} {root} has two images with the stem {k!r}: {out[k].name} and {p.name}",
                hint="pairs are matched by file name without extension; keep one of them",
            )
        out[k] = p
    return out


def match_by_stem(files_a: dict[str, Path], files_b: dict[str, Path], dir_a: Path, dir_b: Path) -> list[str]:
    """Sorted common stems; any stem present on one side only raises :class:`DataError`."""
    only_a = sorted(set(files_a) - set(files_b))
    only_b = sorted(set(files_b) - set(files_a))
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} missing in B, e.g. {only_a[:5]}")
        if only_b:
            parts.append(f"{len(only_b)} missing in A, e.g. {only_b[:5]}")
        raise DataError(
            f"paired folders do not match by file stem: A={dir_a} has {len(files_a)} images, "
            f"B={dir_b} has {len(files_b)}; " + "; ".join(parts),
            hint="every A image needs a B image with the same name (extension may differ); add or remove files",
        )
    return sorted(files_a)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` from the file header (EXIF rotation applied), without decoding pixels."""
    p = Path(path)
    try:
        with Image.open(p) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{p}: cannot read the image header ({err})") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _check_policy(policy: str) -> None:
    if policy not in RESIZE_POLICIES:
        raise DataError(f"unknown resize_policy {policy!r}", hint=f"use one of {', '.join(RESIZE_POLICIES)}")


class _Seeded(Dataset):
    """Base: per-item generators from ``(seed, epoch, index)``."""

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose augmentations items get (call once per epoch)."""
        self.epoch = int(epoch)

    def _generator(self, index: int) -> torch.Generator:
        return item_generator(self.seed, self.epoch, index)


class ImageFolder(_Seeded):
    """Images of one folder -> ``{"image": 3xHxW, "key": str, "path": str}``.

    ``key`` is the file stem (the relative path without suffix when ``recursive``). ``size`` +
    ``resize_policy`` bring mixed sizes to one (see :func:`~copymark.data.transforms.apply_size_policy`);
    ``transform(images, generator)`` gets ``[image]``.
    """

    def __init__(
        self,
        dir: str | Path,
        transform: Transform | None = None,
        *,
        recursive: bool = False,
        size: int | tuple[int, int] | None = None,
        resize_policy: ResizePolicy = "error",
        seed: int = 0,
    ):
        _check_policy(resize_policy)
        self.root = Path(dir)
        self.files = image_files(self.root, "image folder", recursive=recursive)
        self.keys = [_key(p, self.root) for p in self.files]
        self.transform, self.size, self.resize_policy, self.seed = transform, size, resize_policy, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        p = self.files[index]
        g = self._generator(index)
        imgs = apply_size_policy([im.load_image(p)], self.size, self.resize_policy, g, [p])
        if self.transform is not None:
            imgs = self.transform(imgs, g)
        return {"image": imgs[0], "key": self.keys[index], "path": str(p)}


class PairedFolders(_Seeded):
    """A/B folders matched by file stem -> ``{"a": 3xHxW, "b": 3xHxW, "key": stem}``.

    A stem on one side only is an error listing the first (up to 5) missing names per side.
    The size policy and ``transform`` act on ``[a, b]`` together (same crop, same flip).
    """

    def __init__(
        self,
        dir_a: str | Path,
        dir_b: str | Path,
        transform: Transform | None = None,
        *,
        size: int | tuple[int, int] | None = None,
        resize_policy: ResizePolicy = "error",
        seed: int = 0,
    ):
        _check_policy(resize_policy)
        self.dir_a, self.dir_b = Path(dir_a), Path(dir_b)
        fa = _by_stem(image_files(self.dir_a, "folder A"), self.dir_a, "folder A")
        fb = _by_stem(image_files(self.dir_b, "folder B"), self.dir_b, "folder B")
        self.keys = match_by_stem(fa, fb, self.dir_a, self.dir_b)
        self.pairs = [(fa[k], fb[k]) for k in self.keys]
        self.transform, self.size, self.resize_policy, self.seed = transform, size, resize_policy, seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pa, pb = self.pairs[index]
        a, b = im.load_image(pa), im.load_image(pb)
        if self.size is None and a.shape != b.shape:
            raise DataError(
                f"pair {self.keys[index]!r}: {pa} is {tuple(a.shape[-2:])} but {pb} is {tuple(b.shape[-2:])} (HxW)",
                hint="paired images must have the same size; pass size=... with resize_policy='resize'",
            )
        g = self._generator(index)
        imgs = apply_size_policy([a, b], self.size, self.resize_policy, g, [pa, pb])
        if self.transform is not None:
            imgs = self.transform(imgs, g)
        return {"a": imgs[0], "b": imgs[1], "key": self.keys[index]}


class UnpairedFolders(_Seeded):
    """Two unrelated folders (CycleGAN / U-GAT-IT style) -> ``{"a", "b", "key_a", "key_b"}``.

    Length is ``max(len(A), len(B))``; item ``i`` takes A image ``i % len(A)`` and a B image
    drawn at random from the item's seeded generator, so pairings change with the epoch but
    are reproducible. Size policy and ``transform`` act on each side separately.
    """

    def __init__(
        self,
        dir_a: str | Path,
        dir_b: str | Path,
        transform: Transform | None = None,
        *,
        size: int | tuple[int, int] | None = None,
        resize_policy: ResizePolicy = "error",
        seed: int = 0,
    ):
        _check_policy(resize_policy)
        self.dir_a, self.dir_b = Path(dir_a), Path(dir_b)
        self.files_a = image_files(self.dir_a, "folder A")
        self.files_b = image_files(self.dir_b, "folder B")
        self.keys_a = [_key(p, self.dir_a) for p in self.files_a]
        self.keys_b = [_key(p, self.dir_b) for p in self.files_b]
        self.transform, self.size, self.resize_policy, self.seed = transform, size, resize_policy, seed

    def __len__(self) -> int:
        return max(len(self.files_a), len(self.files_b))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        g = self._generator(index)
        ia = index % len(self.files_a)
        ib = int(torch.randint(0, len(self.files_b), (1,), generator=g).item())
        pa, pb = self.files_a[ia], self.files_b[ib]
        a = apply_size_policy([im.load_image(pa)], self.size, self.resize_policy, g, [pa])
        b = apply_size_policy([im.load_image(pb)], self.size, self.resize_policy, g, [pb])
        if self.transform is not None:
            a, b = self.transform(a, g), self.transform(b, g)
        return {"a": a[0], "b": b[0], "key_a": self.keys_a[ia], "key_b": self.keys_b[ib]}


class ClassFolders(_Seeded):
    """``root/<class>/<image>`` -> ``(image, label)``; labels follow the sorted class-folder names.

    ``classes`` lists the folder names (index = label), ``targets`` the label of each item,
    ``keys`` the ``class/stem`` of each item. Every class folder must hold images.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Transform | None = None,
        *,
        size: int | tuple[int, int] | None = None,
        resize_policy: ResizePolicy = "error",
        seed: int = 0,
    ):
        _check_policy(resize_policy)
        self.root = Path(root)
        if not self.root.exists():
            raise DataError(
                f"class folder root not found: {self.root}", hint="check the path; expected root/<class>/<images>"
            )
        if not self.root.is_dir():
            raise DataError(f"class folder root is not a directory: {self.root}", hint="expected root/<class>/<images>")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise DataError(
                f"{self.root} has no class subfolders",
                hint="put each class's images in its own subfolder: root/<class>/<images>",
            )
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.files: list[Path] = []
        self.targets: list[int] = []
        for c in self.classes:
            fs = image_files(self.root / c, f"class folder {c!r}")
            self.files.extend(fs)
            self.targets.extend([self.class_to_idx[c]] * len(fs))
        self.keys = [_key(p, self.root) for p in self.files]
        self.transform, self.size, self.resize_policy, self.seed = transform, size, resize_policy, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        p = self.files[index]
        g = self._generator(index)
        imgs = apply_size_policy([im.load_image(p)], self.size, self.resize_policy, g, [p])
        if self.transform is not None:
            imgs = self.transform(imgs, g)
        return imgs[0], self.targets[index]


class SRPairs(_Seeded):
    """Super-resolution pairs -> ``{"lr": 3xhxw, "hr": 3x(s*h)x(s*w), "key": stem}``.

    With ``lr_dir`` (e.g. ``Set5/LR_x4``), HR and LR are matched by stem and every HR must be
    exactly ``scale`` x its LR (checked up front from the file headers; an error names the
    file). Without it, HR is mod-cropped to a multiple of ``scale`` and LR is made by
    :func:`copymark.images.downscale_bicubic` (``method="matlab"``: MATLAB imresize bicubic,
    antialiased, rounded to 8 bits, as SR benchmarks are made). ``transform`` gets ``[lr, hr]``
    (use :class:`~copymark.data.transforms.PairedRandomCrop`).
    """

    def __init__(
        self,
        hr_dir: str | Path,
        lr_dir: str | Path | None = None,
        scale: int = 4,
        method: im.ResizeMethod = "matlab",
        transform: Transform | None = None,
        *,
        seed: int = 0,
    ):
        if scale < 1:
            raise DataError(f"SRPairs: scale must be >= 1, got {scale}")
        if method not in ("matlab", "pil"):
            raise DataError(f"SRPairs: unknown method {method!r}", hint="use 'matlab' or 'pil'")
        self.hr_dir = Path(hr_dir)
        self.lr_dir = Path(lr_dir) if lr_dir is not None else None
        self.scale, self.method, self.transform, self.seed = int(scale), method, transform, seed
        hr = _by_stem(image_files(self.hr_dir, "HR folder"), self.hr_dir, "HR folder")
        if self.lr_dir is None:
            self.keys = sorted(hr)
            self.pairs: list[tuple[Path, Path | None]] = [(hr[k], None) for k in self.keys]
        else:
            lr = _by_stem(image_files(self.lr_dir, "LR folder"), self.lr_dir, "LR folder")
            self.keys = match_by_stem(hr, lr, self.hr_dir, self.lr_dir)
            self.pairs = [(hr[k], lr[k]) for k in self.keys]
            for hp, lp in self.pairs:
                assert lp is not None
                self._check_sizes(hp, image_size(hp), lp, image_size(lp))

    def _check_sizes(self, hp: Path, hr_hw: tuple[int, int], lp: Path, lr_hw: tuple[int, int]) -> None:
        s = self.scale
        if (hr_hw[0], hr_hw[1]) != (lr_hw[0] * s, lr_hw[1] * s):
            raise DataError(
                f"{hp}: HR is {hr_hw[0]}x{hr_hw[1]} (HxW) but its LR {lp.name} is {lr_hw[0]}x{lr_hw[1]}; "
                f"expected HR = {s} x LR = {lr_hw[0] * s}x{lr_hw[1] * s}",
                hint=f"is the scale {s} right? HR images must be mod-cropped to a multiple of the scale",
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        hp, lp = self.pairs[index]
        hr = im.load_image(hp)
        if lp is None:
            hr = im.mod_crop(hr, self.scale)
            lr = im.downscale_bicubic(hr, self.scale, method=self.method)
        else:
            lr = im.load_image(lp)
            self._check_sizes(hp, tuple(hr.shape[-2:]), lp, tuple(lr.shape[-2:]))  # type: ignore[arg-type]
        imgs = [lr, hr]
        if self.transform is not None:
            imgs = self.transform(imgs, self._generator(index))
        return {"lr": imgs[0], "hr": imgs[1], "key": self.keys[index]}
