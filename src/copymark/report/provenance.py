"""Where the numbers of an extraction report come from: the victim, the queries, the training data.

A report's tables mean little without their provenance: *which* victim answered, how many
queries the attacker spent of which budget, with which selection strategy and when, and how
many (query, answer) pairs the surrogate was really trained on. This module reads those facts
from the two records that hold them:

* the extraction's **query store** (:class:`copymark.client.store.QueryStore`, written by
  ``copymark extract``): victim ids, answered / pending / failed queries, the campaign's
  budget and strategy (its ``campaign`` meta entry), and the dates of the first and last
  answer (:func:`store_provenance`);
* the surrogate's **training record** (the ``config.json`` of a ``copymark train`` run):
  its data folder (``store_pairs/`` for ``--from-store``), the number of pairs in it and their
  input hashes (:func:`training_record`). :func:`find_training_store` locates the store the
  surrogate was trained from (a ``source.json`` beside the pairs, or ``--from-store`` in the
  run's recorded command line) and accepts it only when the store really holds every trained
  input answered by the victim, so a report never names the wrong store.

Nothing here writes: stores are opened only when their index exists (opening a
:class:`QueryStore` creates a folder) and are never modified.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from copymark.errors import DataError

PAIR_FOLDERS = ("A", "LR_x2", "LR_x3", "LR_x4", "LR_x8")  # query side of training_folder's layouts


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def is_store(path: Path) -> bool:
    return (Path(path) / "index.sqlite").is_file()


def store_provenance(store_dir: str | Path, victim_id: str | None = None) -> dict[str, Any]:
    """What an extraction store says about ``victim_id`` (the only victim when None).

    Returns ``{"store", "victim_id", "queries_spent", "pending", "failed", "budget",
    "strategy", "query_size", "first_answer", "last_answer", "victims"}``; raises
    :class:`DataError` when ``store_dir`` is not a store or holds no answers of the victim.
    """
    from copymark.client.store import QueryStore

    p = Path(store_dir)
    if not is_store(p):
        raise DataError(
            f"{p}: not a query store (no index.sqlite)", hint="pass the --store that `copymark extract` wrote"
        )
    with QueryStore(p) as store:
        victims = store.victims()
        if victim_id is None:
            if len(victims) != 1:
                raise DataError(f"query store {p} holds answers of {len(victims)} victims: {victims[:5]}")
            victim_id = victims[0]
        if victim_id not in victims:
            raise DataError(
                f"query store {p} holds no queries of victim {victim_id} (it holds {', '.join(victims) or 'none'})",
                hint="pass the store of the extraction from this victim",
            )
        counts = store.counts(victim_id)
        rows = [r for r in store.rows(victim_id) if r["status"] == "answered"]
        meta = store.campaign(victim_id)  # this victim's campaign only: another's budget is not this one's
    times = [float(r["updated"]) for r in rows]
    return {
        "store": str(p),
        "victim_id": victim_id,
        "queries_spent": counts["answered"],
        "pending": counts["pending"],
        "failed": counts["failed"],
        "budget": meta.get("budget"),
        "strategy": meta.get("strategy"),
        "query_size": meta.get("size"),
        "first_answer": _iso(min(times)) if times else None,
        "last_answer": _iso(max(times)) if times else None,
        "victims": victims,
    }


def _training_run(path: Path) -> Path | None:
    """The ``copymark train`` run folder holding ``path`` (itself or an ancestor), if any."""
    p = Path(path).resolve()
    for d in [p, *list(p.parents)[:5]]:
        cfg = d / "config.json"
        if cfg.is_file():
            try:
                c = json.loads(cfg.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            return d if isinstance(c, dict) and "procedure" in c and isinstance(c.get("data"), dict) else None
    return None


def training_record(surrogate: str | Path) -> dict[str, Any] | None:
    """The training facts of the surrogate at ``surrogate`` (a run folder or a checkpoint in one).

    Returns ``{"run", "procedure", "iters", "data_dir", "pairs", "input_shas"}`` (``pairs``
    and ``input_shas`` only when the data folder has the layout of a query store's pairs), or
    None for a surrogate without a training record (e.g. a TorchScript file).
    """
    run = _training_run(Path(surrogate))
    if run is None:
        return None
    cfg = json.loads((run / "config.json").read_text())
    data_dir = Path(str(cfg["data"].get("dir", "")))
    out: dict[str, Any] = {
        "run": str(run),
        "procedure": (cfg.get("procedure") or {}).get("kind"),
        "iters": (cfg.get("loop") or {}).get("iters"),
        "data_dir": str(data_dir),
    }
    side = next((data_dir / f for f in PAIR_FOLDERS if (data_dir / f).is_dir()), None)
    if side is not None:
        shas = {f.stem for f in side.iterdir() if f.suffix == ".png" and len(f.stem) == 64}
        out["pairs"] = len(shas)
        out["input_shas"] = shas
    return out


def _argv_store(run: Path) -> list[Path]:
    """``--from-store X`` of the run's recorded command line (env.json), as candidate paths."""
    try:
        env = json.loads((run / "env.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    argv = [str(a) for a in env.get("argv") or []]
    found = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--from-store"]
    found += [a.split("=", 1)[1] for a in argv if a.startswith("--from-store=")]
    out: list[Path] = []
    for f in found:
        p = Path(f)
        out += [p] if p.is_absolute() else [p, run.parent / p, run.parent.parent / p]
    return out


def find_training_store(record: dict[str, Any] | None) -> tuple[Path, str] | None:
    """The query store ``record``'s surrogate was trained from and the victim whose answers it
    was trained on, verified by hashes (or None).

    Candidates: ``<data_dir>/source.json`` (``{"store": PATH}``) and ``--from-store`` in the
    training run's env.json. A candidate is accepted only when it is a store in which one
    victim answered every input the surrogate was trained on.
    """
    if not record or not record.get("input_shas"):
        return None
    candidates: list[Path] = []
    src = Path(record["data_dir"]) / "source.json"
    if src.is_file():
        try:
            s = json.loads(src.read_text()).get("store")
            if s:
                candidates.append(Path(s))
        except (OSError, json.JSONDecodeError, AttributeError):
            pass
    candidates += _argv_store(Path(record["run"]))
    from copymark.client.store import QueryStore

    for c in candidates:
        if not is_store(c):
            continue
        with QueryStore(c) as store:
            for victim in store.victims():
                if record["input_shas"] <= store.answered(victim):
                    return c, victim
    return None


# ---------------------------------------------------------------------------------------------
# what a report says


def _count(x: Any) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "?"


def describe(metrics: dict[str, Any]) -> dict[str, str | None]:
    """One line per provenance fact of metrics.json, for the report's header and tables.md.

    Keys: ``victim``, ``queries`` (the extraction's), ``training`` (pairs trained on),
    ``evaluation`` (the evaluator's answers). Older run folders (a ``queries`` entry instead of
    ``provenance``) are read too; a missing fact says how to record it.
    """
    victim = metrics.get("victim") if isinstance(metrics.get("victim"), dict) else {}
    info = victim.get("info") if isinstance(victim.get("info"), dict) else {}
    prov = metrics.get("provenance") if isinstance(metrics.get("provenance"), dict) else {}
    ext = prov.get("extraction") if isinstance(prov.get("extraction"), dict) else None
    old = metrics.get("queries") if isinstance(metrics.get("queries"), dict) else None
    vid = victim.get("victim_id") or info.get("victim_id") or (ext or {}).get("victim_id")
    name = victim.get("name")
    out: dict[str, str | None] = {"victim": None, "queries": None, "training": None, "evaluation": None}
    if vid or name:
        out["victim"] = " ".join(str(x) for x in (name, f"(victim id {vid})" if vid else None) if x)
    src = ext or old
    if src is not None:
        spent = src.get("queries_spent", src.get("spent"))
        budget = src.get("budget")
        if isinstance(spent, (int, float)) and isinstance(budget, (int, float)) and budget:
            q = f"{spent:g} of {budget:g} ({100 * spent / budget:.0f}% of the budget)"
        elif isinstance(spent, (int, float)):
            q = f"{spent:g} (no budget recorded)"
        else:
            q = "not recorded"
        if src.get("strategy"):
            q += f", strategy {src['strategy']}"
        if src.get("first_answer") and src.get("last_answer"):
            q += f", answered {src['first_answer']} to {src['last_answer']}"
        if src.get("store"):
            q += f"; query store {src['store']}"
        out["queries"] = q
    else:
        out["queries"] = "not recorded (give the extraction's query store: --store)"
    tr = prov.get("training") if isinstance(prov.get("training"), dict) else None
    if tr is not None:
        pairs = f"{_count(tr['pairs'])} (query, answer) pairs" if "pairs" in tr else f"data {tr.get('data_dir')}"
        what = ", ".join(
            x for x in (tr.get("procedure"), f"{_count(tr['iters'])} iterations" if tr.get("iters") else None) if x
        )
        out["training"] = f"{pairs}" + (f" ({what})" if what else "") + f", run {tr.get('run')}"
    ev = prov.get("evaluation") if isinstance(prov.get("evaluation"), dict) else None
    if ev is not None:
        out["evaluation"] = (
            f"{_count(ev.get('inputs'))} test inputs: {_count(ev.get('paid'))} paid by this run, "
            f"{_count(ev.get('in_store'))} already stored, {_count(ev.get('from_extraction'))} from the "
            f"extraction's store, {_count(ev.get('replayed'))} free replays; kept in {ev.get('answers_store')}"
        )
    return out


def with_store(metrics: dict[str, Any], store: str | Path | None) -> dict[str, Any]:
    """``metrics`` with its extraction provenance read from ``store`` (when given), or found
    from the surrogate's training record when metrics.json has none (older or manual runs)."""
    victim = metrics.get("victim") if isinstance(metrics.get("victim"), dict) else {}
    info = victim.get("info") if isinstance(victim.get("info"), dict) else {}
    vid = victim.get("victim_id") or info.get("victim_id")
    prov = dict(metrics.get("provenance") or {}) if isinstance(metrics.get("provenance"), dict) else {}
    if store is None and prov.get("extraction"):
        return metrics
    record = None
    sur = (metrics.get("surrogate") or {}).get("path") if isinstance(metrics.get("surrogate"), dict) else None
    if sur and Path(sur).exists():
        record = training_record(sur)
    if store is None:
        found = find_training_store(record)
        if found is None:
            return metrics
        store, trained = found
        vid = vid or trained
    prov["extraction"] = store_provenance(store, vid)
    if record is not None and not prov.get("training"):
        prov["training"] = {k: v for k, v in record.items() if k != "input_shas"}
    prov.pop("extraction_missing", None)
    return {**metrics, "provenance": prov}
