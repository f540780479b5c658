"""A DataLoader that is deterministic given its seed.

Shuffling draws from a ``torch.Generator`` seeded with ``seed`` (not the global RNG), and the
datasets of :mod:`copymark.data.folders` draw augmentations from per-item generators, so the
sequence of batches depends only on ``seed`` (and the epoch set on the dataset), not on
``num_workers``. Worker processes also seed Python's and NumPy's RNGs from torch's per-worker
seed, in case a user transform uses them.

The collate function turns the usual "stack expects each tensor to be equal size" crash into
a :class:`~copymark.errors.DataError` naming the items and their sizes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from copymark.errors import DataError


def _sizes(item: Any) -> list[tuple[int, ...]]:
    if isinstance(item, torch.Tensor):
        return [tuple(item.shape)]
    if isinstance(item, dict):
        return [s for v in item.values() for s in _sizes(v)]
    if isinstance(item, (list, tuple)):
        return [s for v in item for s in _sizes(v)]
    return []


def _name(item: Any, i: int) -> str:
    if isinstance(item, dict):
        for k in ("key", "path", "key_a"):
            if k in item:
                return str(item[k])
    return f"item {i}"


def collate(batch: Sequence[Any]) -> Any:
    """``default_collate`` with a readable error when images in a batch differ in size."""
    try:
        return default_collate(list(batch))
    except RuntimeError as err:
        if "stack expects each tensor to be equal size" not in str(err):
            raise
        shapes = [f"{_name(b, i)}: {_sizes(b)}" for i, b in enumerate(batch)][:4]
        raise DataError(
            "images in one batch differ in size (" + "; ".join(shapes) + ")",
            hint="pass size=... and resize_policy='resize' / 'center_crop' / 'random_crop' to the dataset, "
            "add a crop transform, or use batch_size=1",
        ) from None


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` whose order and worker seeds follow ``seed``.

    Iterating the same loader twice gives two different (reproducible) shuffles, as epochs
    should; building it again with the same seed repeats the sequence.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=g,
        num_workers=num_workers,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        collate_fn=collate,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
