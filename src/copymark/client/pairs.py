"""Surrogate training data from a query store: the (query, answer) pairs, laid out for ``copymark train``.

The attacker trains a *paired* model on what the victim answered (the extraction study's
attack): Pix2Pix for style tasks, SRResNet for super-resolution. :func:`training_folder`
writes hard links (copies where links are impossible) of the store's PNGs into the layout the
training procedures read (see :mod:`copymark.train.api`):

* style (``scale == 1``): ``DIR/A/<sha>.png`` (queries) and ``DIR/B/<sha>.png`` (answers);
* super-resolution: ``DIR/LR_x<scale>/<sha>.png`` (queries) and ``DIR/HR/<sha>.png`` (answers).

The store is never modified, so the data stay where the campaign put them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from copymark.client.store import QueryStore
from copymark.errors import DataError


@dataclass(frozen=True)
class StoreData:
    folder: Path
    task: str
    scale: int
    n_pairs: int
    victim_id: str


def _link(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def training_folder(store_dir: str | Path, out_dir: str | Path, victim_id: str | None = None) -> StoreData:
    """Lay the store's answered pairs out for training in ``out_dir``; see the module docstring."""
    store_dir, out = Path(store_dir), Path(out_dir)
    if not (store_dir / "index.sqlite").is_file():
        raise DataError(
            f"{store_dir}: not a query store (no index.sqlite)", hint="run `copymark extract --store DIR` first"
        )
    with QueryStore(store_dir) as store:
        victims = store.victims()
        if victim_id is None:
            if len(victims) != 1:
                raise DataError(
                    f"{store_dir} holds answers of {len(victims)} victims: {victims[:5]}",
                    hint="name one (victim_id) to train on",
                )
            victim_id = victims[0]
        pairs = store.pairs(victim_id)
        meta = json.loads(store.get_meta("campaign") or "{}")
    if not pairs:
        raise DataError(f"{store_dir}: no answered queries for victim {victim_id}", hint="run `copymark extract` first")
    scale = int(meta.get("scale") or 1)
    task = str(meta.get("task") or ("sr" if scale > 1 else "style"))
    a_name, b_name = (f"LR_x{scale}", "HR") if scale > 1 else ("A", "B")
    (out / a_name).mkdir(parents=True, exist_ok=True)
    (out / b_name).mkdir(parents=True, exist_ok=True)
    for inp, ans in pairs:
        stem = inp.stem
        _link(inp, out / a_name / f"{stem}.png")
        _link(ans, out / b_name / f"{stem}.png")
    return StoreData(out, task, scale, len(pairs), victim_id)
