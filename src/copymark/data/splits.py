"""Deterministic train/val/test splits by hashed key, with a JSON manifest.

Each key (a file stem, or ``class/stem``) is hashed on its own:
``fraction = int(sha256(salt + key)[:8 bytes], big-endian) / 2**64``, a number in [0, 1).
The key goes to ``train`` if ``fraction < r_train``, to ``val`` if ``< r_train + r_val``, else to
``test``. Because a key's split depends only on the key (and the salt), adding or removing
files never moves the others between splits, and the split is the same on every machine and
Python version (unlike ``hash()`` or a seeded shuffle). Split sizes follow the ratios only in
expectation: with few files, expect deviations of a few items.

The manifest (``write_split_manifest``) records the ratios, the hash method, the salt and the
keys of each split, so an experiment's exact split can be reread later
(``read_split_manifest``) and checked against the rule (:meth:`SplitManifest.verify`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from copymark.errors import DataError
from copymark.files import atomic_write_json, read_json

SPLITS = ("train", "val", "test")
HASH_METHOD = "sha256(salt + key) -> first 8 bytes as big-endian uint64 / 2**64"
MANIFEST_FORMAT = "copymark-split-manifest/1"


def hash_fraction(key: str, salt: str = "") -> float:
    """The key's position in [0, 1): its salted sha256 read as a fraction."""
    digest = hashlib.sha256((salt + key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != 3:
        raise DataError(f"split ratios must be (train, val, test), got {tuple(ratios)}")
    r = tuple(float(x) for x in ratios)
    if any(x < 0 for x in r) or abs(sum(r) - 1.0) > 1e-6:
        raise DataError(f"split ratios {r} must be >= 0 and sum to 1", hint="e.g. (0.8, 0.1, 0.1)")
    return r  # type: ignore[return-value]


def assign_split(key: str, ratios: Sequence[float] = (0.8, 0.1, 0.1), salt: str = "") -> str:
    """``"train"``, ``"val"`` or ``"test"`` for one key."""
    rt, rv, _ = _check_ratios(ratios)
    f = hash_fraction(key, salt)
    if f < rt:
        return "train"
    if f < rt + rv:
        return "val"
    return "test"


def split_keys(keys: Iterable[str], ratios: Sequence[float] = (0.8, 0.1, 0.1), salt: str = "") -> dict[str, list[str]]:
    """Sorted keys of each split."""
    r = _check_ratios(ratios)
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for k in sorted(set(keys)):
        out[assign_split(k, r, salt)].append(k)
    return out


@dataclass
class SplitManifest:
    """A recorded split: ratios, hash method, salt, and the sorted keys of each split."""

    ratios: tuple[float, float, float]
    splits: dict[str, list[str]]
    salt: str = ""
    hash_method: str = HASH_METHOD
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls, keys: Iterable[str], ratios: Sequence[float] = (0.8, 0.1, 0.1), salt: str = "", source: str | None = None
    ) -> SplitManifest:
        r = _check_ratios(ratios)
        return cls(ratios=r, splits=split_keys(keys, r, salt), salt=salt, source=source)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "hash_method": self.hash_method,
            "salt": self.salt,
            "ratios": dict(zip(SPLITS, self.ratios, strict=True)),
            "counts": {s: len(self.splits.get(s, [])) for s in SPLITS},
            "source": self.source,
            "extra": self.extra,
            "splits": {s: list(self.splits.get(s, [])) for s in SPLITS},
        }

    def verify(self) -> None:
        """Check the splits are disjoint and every key sits where the hash rule puts it."""
        seen: dict[str, str] = {}
        for s in SPLITS:
            for k in self.splits.get(s, []):
                if k in seen:
                    raise DataError(f"split manifest lists {k!r} in both {seen[k]!r} and {s!r}")
                seen[k] = s
                want = assign_split(k, self.ratios, self.salt)
                if want != s:
                    raise DataError(
                        f"split manifest puts {k!r} in {s!r} but the hash rule gives {want!r}",
                        hint="was the manifest edited, or made with another salt/ratios?",
                    )


def write_split_manifest(
    path: str | Path,
    keys: Iterable[str],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    salt: str = "",
    source: str | None = None,
) -> SplitManifest:
    """Split ``keys`` (e.g. a dataset's ``keys``) and write the manifest JSON to ``path`` (atomic)."""
    m = SplitManifest.build(keys, ratios, salt, source)
    atomic_write_json(Path(path), m.to_json())
    return m


def read_split_manifest(path: str | Path) -> SplitManifest:
    """Read a manifest written by :func:`write_split_manifest` (checked with :meth:`SplitManifest.verify`)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"split manifest not found: {p}", hint="write one with write_split_manifest")
    obj = read_json(p, DataError)
    if not isinstance(obj, dict) or obj.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{p}: not a copymark split manifest (format {MANIFEST_FORMAT!r} expected)")
    if obj.get("hash_method") != HASH_METHOD:
        raise DataError(f"{p}: unknown hash method {obj.get('hash_method')!r}", hint=f"expected {HASH_METHOD!r}")
    try:
        ratios = _check_ratios([obj["ratios"][s] for s in SPLITS])
        splits = {s: [str(k) for k in obj["splits"][s]] for s in SPLITS}
    except (KeyError, TypeError) as err:
        raise DataError(f"{p}: split manifest lacks {err}") from None
    m = SplitManifest(
        ratios=ratios,
        splits=splits,
        salt=str(obj.get("salt", "")),
        source=obj.get("source"),
        extra=obj.get("extra") or {},
    )
    m.verify()
    return m


def subset(dataset: Dataset, keys: Iterable[str]) -> Subset:
    """The items of ``dataset`` (which has ``keys``) whose key is in ``keys``, in dataset order.

    A requested key the dataset lacks is an error listing the first few, so a stale manifest
    is noticed.
    """
    ds_keys: list[str] | None = getattr(dataset, "keys", None)
    if not isinstance(ds_keys, list):
        raise DataError(f"{type(dataset).__name__} has no list of keys to split by")
    wanted = set(keys)
    missing = sorted(wanted - set(ds_keys))
    if missing:
        raise DataError(
            f"{len(missing)} requested key(s) are not in the dataset, e.g. {missing[:5]}",
            hint="is the split manifest from another folder or an older version of it?",
        )
    return Subset(dataset, [i for i, k in enumerate(ds_keys) if k in wanted])
