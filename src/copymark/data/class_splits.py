"""Train/val/test splits of class folders, for classifier training and its evaluation.

Two layouts of ``--data DIR`` (:func:`detect_layout`):

``"classes"``
    ``DIR/<class>/<image>`` (:class:`~copymark.data.folders.ClassFolders`): one pool, split by
    the hashed-key rule of :mod:`copymark.data.splits` (default 8 : 1 : 1, the security study's
    split). Keys are ``<class>/<stem>``.
``"train_test"``
    ``DIR/train/<class>/<image>`` and ``DIR/test/<class>/<image>`` (CIFAR-10's layout, as in
    ``../shared/data/cifar10``): the test split is the ``test`` folder; the ``train`` folder is
    split into train and val by the same rule with the ratio ``r_train : r_val`` (8 : 1 by
    default), so the train/val proportion is the study's. Keys are ``train/<class>/<stem>`` and
    ``test/<class>/<stem>``. Both folders must hold the same classes.

Every key is the image's path relative to ``DIR`` without its suffix, so a key names one file
of the data (the ownership kit records trigger covers by it). The split is recorded as a
:class:`~copymark.data.splits.SplitManifest` (``manifest``; ``extra`` says the layout), which
a run writes next to its results. Each split is a :class:`ClassSplit`: a view of the class
folders with its own (optional) augmentation, drawn from per-item generators seeded by
``(seed, epoch, index)`` like every copymark dataset, so ``set_epoch`` gives fresh augmentations
and the same seed the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from copymark.data.folders import ClassFolders, image_size
from copymark.data.splits import SPLITS, SplitManifest
from copymark.data.transforms import ResizePolicy, Transform, item_generator
from copymark.errors import DataError

Layout = Literal["classes", "train_test"]
LAYOUTS: tuple[str, ...] = ("classes", "train_test")


def _subdirs(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def detect_layout(root: str | Path) -> Layout:
    """``"train_test"`` when ``root`` holds ``train/`` and ``test/`` folders that hold class
    folders (and nothing else but an optional ``val/``), else ``"classes"``."""
    d = Path(root)
    if not d.is_dir():
        raise DataError(f"class folder root not found or not a directory: {d}", hint="expected DIR/<class>/<images>")
    subs = _subdirs(d)
    if {"train", "test"} <= set(subs) and set(subs) <= {"train", "val", "test"}:
        if _subdirs(d / "train") and _subdirs(d / "test"):
            return "train_test"
    return "classes"


class ClassSplit(Dataset):
    """One split of class folders -> ``(image, label)``; ``keys`` are paths relative to the data root."""

    def __init__(
        self,
        name: str,
        folders: ClassFolders,
        indices: Sequence[int],
        prefix: str = "",
        transform: Transform | None = None,
        seed: int = 0,
    ):
        self.name, self.folders, self.indices, self.prefix = name, folders, list(indices), prefix
        self.keys = [prefix + folders.keys[i] for i in self.indices]
        self.targets = [folders.targets[i] for i in self.indices]
        self.files = [folders.files[i] for i in self.indices]
        self.classes = list(folders.classes)
        self.transform, self.seed, self.epoch = transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def with_transform(self, transform: Transform | None, seed: int = 0) -> ClassSplit:
        """The same items with another augmentation (``None``: the plain images)."""
        return ClassSplit(self.name, self.folders, self.indices, self.prefix, transform, seed)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.folders[self.indices[index]]
        if self.transform is not None:
            image = self.transform([image], item_generator(self.seed, self.epoch, index))[0]
        return image, label

    def index_of(self, keys: Sequence[str]) -> list[int]:
        """Positions of ``keys`` in this split (a key it lacks is a DataError naming it)."""
        pos = {k: i for i, k in enumerate(self.keys)}
        missing = [k for k in keys if k not in pos]
        if missing:
            raise DataError(
                f"{len(missing)} image key(s) are not in the {self.name} split, e.g. {missing[:3]}",
                hint="the data folder changed since the run was made (files renamed or removed)",
            )
        return [pos[k] for k in keys]


@dataclass
class ClassFolderSplits:
    """The train / val / test splits of a class-folder dataset and the manifest recording them."""

    root: Path
    layout: Layout
    classes: list[str]
    train: ClassSplit
    val: ClassSplit
    test: ClassSplit
    manifest: SplitManifest
    counts: dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> ClassSplit:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}", hint=f"one of {', '.join(SPLITS)}")
        return getattr(self, name)


def _check_sizes(folders: ClassFolders, size: int | None, policy: str) -> None:
    """With ``policy == "error"``, every image must be ``size`` x ``size`` (read from the file headers)."""
    if size is None or policy != "error":
        return
    for p in folders.files:
        hw = image_size(p)
        if hw != (size, size):
            raise DataError(
                f"{p}: image is {hw[0]}x{hw[1]} (HxW), expected {size}x{size}",
                hint="pass the images' size with --size, or --resize-policy resize|center_crop",
            )


def class_folder_splits(
    root: str | Path,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    salt: str = "",
    layout: Layout | None = None,
    size: int | None = None,
    resize_policy: ResizePolicy = "error",
    check_sizes: bool = True,
) -> ClassFolderSplits:
    """Read the class folders of ``root`` and split them (see the module docstring).

    ``layout`` None: :func:`detect_layout`. ``size`` + ``resize_policy`` bring every image to
    ``size`` x ``size``; with ``"error"`` the sizes are checked up front from the file headers
    (``check_sizes``), so a wrong image is reported before any training. Raises DataError for
    fewer than 2 classes, differing class folders of train/ and test/, and an empty train or
    test split.
    """
    from copymark.data.splits import _check_ratios

    d = Path(root)
    r = _check_ratios(ratios)
    layout = layout or detect_layout(d)
    if layout not in LAYOUTS:
        raise DataError(f"unknown data layout {layout!r}", hint=f"one of {', '.join(LAYOUTS)}")
    kw: dict[str, Any] = {"size": size, "resize_policy": resize_policy}
    if layout == "classes":
        pool = ClassFolders(d, **kw)
        test_folders = None
        prefix, pool_ratios = "", r
    else:
        pool = ClassFolders(d / "train", **kw)
        test_folders = ClassFolders(d / "test", **kw)
        if test_folders.classes != pool.classes:
            only_train = sorted(set(pool.classes) - set(test_folders.classes))
            only_test = sorted(set(test_folders.classes) - set(pool.classes))
            raise DataError(
                f"{d}: train/ and test/ hold different classes (only in train: {only_train[:5]}, only in test: {only_test[:5]})",
                hint="both folders need the same class subfolders",
            )
        prefix = "train/"
        tv = r[0] + r[1]
        if tv <= 0:
            raise DataError(f"split ratios {r} leave nothing of {d / 'train'} for training")
        pool_ratios = (r[0] / tv, 1.0 - r[0] / tv, 0.0)
    if len(pool.classes) < 2:
        raise DataError(f"{pool.root} has {len(pool.classes)} class folder(s); a classifier needs at least 2")
    if check_sizes:
        _check_sizes(pool, size, resize_policy)
        if test_folders is not None:
            _check_sizes(test_folders, size, resize_policy)
    keys = [prefix + k for k in pool.keys]
    manifest = SplitManifest.build(keys, pool_ratios, salt, source=str(d))
    where = {k: s for s in SPLITS for k in manifest.splits[s]}
    idx: dict[str, list[int]] = {s: [] for s in SPLITS}
    for i, k in enumerate(keys):
        idx[where[k]].append(i)
    train = ClassSplit("train", pool, idx["train"], prefix)
    val = ClassSplit("val", pool, idx["val"], prefix)
    if test_folders is None:
        test = ClassSplit("test", pool, idx["test"], prefix)
    else:
        test = ClassSplit("test", test_folders, range(len(test_folders)), "test/")
        manifest.extra = {"layout": layout, "test": "every image of test/", "test_count": len(test)}
    if layout == "classes":
        manifest.extra = {"layout": layout}
    counts = {"train": len(train), "val": len(val), "test": len(test)}
    for name in ("train", "test"):
        if counts[name] == 0:
            raise DataError(
                f"{d}: the split {r} of {sum(counts.values())} images leaves none for {name}",
                hint="add images (a few dozen per class at least), or change the split ratios",
            )
    return ClassFolderSplits(d, layout, list(pool.classes), train, val, test, manifest, counts)
