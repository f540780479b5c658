"""Surrogate training data from a query store: the (query, answer) pairs, laid out for ``copymark train``.

The attacker trains a *paired* model on what the victim answered (the extraction study's
attack): Pix2Pix for style tasks, SRResNet for super-resolution. :func:`training_folder`
writes hard links (copies where links are impossible) of the store's PNGs into the layout the
training procedures read (see :mod:`copymark.train.api`):

* style (``scale == 1``): ``DIR/A/<sha>.png`` (queries) and ``DIR/B/<sha>.png`` (answers);
* super-resolution: ``DIR/LR_x<scale>/<sha>.png`` (queries) and ``DIR/HR/<sha>.png`` (answers).

Every file is checked against its hash first: a damaged store (a flipped byte, a truncated,
deleted or replaced file) is a :class:`~copymark.errors.DataError` naming the damaged files and
the repair, raised before anything is written, never a training run on the wrong pairs. The
layout is rebuilt to match the store exactly (stale files of an earlier layout are removed).
The store is never modified.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copymark.client.store import Damage, QueryStore
from copymark.errors import DataError
from copymark.files import atomic_write_json


@dataclass(frozen=True)
class StoreData:
    folder: Path
    task: str
    scale: int
    n_pairs: int
    victim_id: str


def _link(src: Path, dst: Path) -> None:
    if dst.exists():
        if os.path.samefile(src, dst):
            return
        dst.unlink()  # an earlier layout's file (e.g. a link to a file since repaired)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def repair_hint(store_dir: Path, meta: dict[str, Any], damaged: list[Damage] | None = None) -> str:
    """How to repair a damaged store, with the store's own recorded campaign filled in.

    Damaged answers: ``copymark store check --repair`` re-queries them (free replays while the
    server keeps the replies). Damaged inputs are the attacker's own crops: rerunning the
    ``copymark extract`` that made the store rewrites them from the photos.
    """
    url = meta.get("victim_url") or "URL"
    answers = damaged is None or any(d.what == "answer" for d in damaged)
    inputs = damaged is None or any(d.what == "input" for d in damaged)
    fixes = []
    if answers:
        fixes.append(
            f"`copymark store check --store {store_dir} --repair --victim-url {url} --api-key KEY` re-queries "
            "only the damaged answers (free replays while the server keeps them)"
        )
    if inputs:
        if {"data_dir", "size", "seed", "strategy", "budget"} <= meta.keys():
            cmd = (
                f"copymark extract --victim-url {url} --api-key KEY --data {meta['data_dir']} --budget {meta['budget']} "
                f"--store {store_dir} --strategy {meta['strategy']} --size {meta['size']} --seed {meta['seed']}"
            )
        else:
            cmd = "copymark extract ... (the command that made the store)"
        fixes.append(f"`{cmd}` rewrites damaged inputs from your photos (and re-queries damaged answers)")
    return "; ".join(fixes)


def damage_error(store_dir: Path, damaged: list[Damage], meta: dict[str, Any], what: str) -> DataError:
    """A DataError naming the damaged files (the first five, and how many in all)."""
    shown = "; ".join(f"{d.what} {d.reason}: {d.path}" for d in damaged[:5])
    more = f" (and {len(damaged) - 5} more)" if len(damaged) > 5 else ""
    return DataError(
        f"query store {store_dir} is damaged, {what}: {len(damaged)} file(s): {shown}{more}",
        hint=repair_hint(store_dir, meta, damaged),
    )


SOURCE_FILE = "source.json"


def training_folder(
    store_dir: str | Path, out_dir: str | Path, victim_id: str | None = None, first: int | None = None
) -> StoreData:
    """Lay the store's answered pairs out for training in ``out_dir``; see the module docstring.

    ``first``: only the first N answers in campaign order (the order the campaign registered its
    queries, so the first N of a larger campaign are what a campaign of budget N would have
    bought). ``out_dir/source.json`` records the store, the victim and the number of pairs laid
    out, so every training record can say what it was trained on.
    """
    if first is not None and first < 1:
        raise DataError(f"--first must be at least 1, got {first}")
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
        pairs, damaged = store.verify_pairs(victim_id)
        meta = store.campaign(victim_id)
    if damaged:
        raise damage_error(store_dir, damaged, meta, "refusing to train on it")
    if not pairs:
        raise DataError(f"{store_dir}: no answered queries for victim {victim_id}", hint="run `copymark extract` first")
    available = len(pairs)
    if first is not None:
        if first > available:
            raise DataError(
                f"{store_dir} holds {available} answers of victim {victim_id}, fewer than --first {first}",
                hint=f"use --first {available} or less, or extract more answers",
            )
        pairs = pairs[:first]
    scale = int(meta.get("scale") or 1)
    task = str(meta.get("task") or ("sr" if scale > 1 else "style"))
    a_name, b_name = (f"LR_x{scale}", "HR") if scale > 1 else ("A", "B")
    names = {f"{inp.stem}.png" for inp, _ in pairs}
    for sub in (a_name, b_name):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out / sub).glob("*.png"):
            if stale.name not in names:
                stale.unlink()
    for inp, ans in pairs:
        stem = inp.stem
        _link(inp, out / a_name / f"{stem}.png")
        _link(ans, out / b_name / f"{stem}.png")
    source = {"store": str(store_dir.resolve()), "victim_id": victim_id, "n_pairs": len(pairs), "store_answers": available,
              "first": first, "task": task, "scale": scale}  # fmt: skip
    atomic_write_json(out / SOURCE_FILE, source)
    return StoreData(out, task, scale, len(pairs), victim_id)
