"""The HTML report of an extraction run: one self-contained file.

:func:`write_report` reads an extraction run folder (written by ``copymark evaluate`` and
``copymark demo``; the metrics.json format is described in :mod:`copymark.report.tables`) and
writes ``report.html``: a header with the provenance (task; victim and its id; surrogate and
the pairs it was trained on; queries spent of the budget, strategy and dates, from the
extraction's query store; the evaluation's own answers, paid or reused; date, copymark
version), the A/B/C tables of each evaluated set with plain-language readings of table B
against the trivial baselines and of tables A and C against the trivial map vs the ground
truth, notes (e.g. a target-style set too small for set-level metrics), labelled image grids
(input | victim | surrogate | ground truth), the target-style examples of an unpaired style
set, zoomed crops for super-resolution, the learning curve when the run has one, and how the
numbers were computed.

Everything is inline: images are base64 PNG ``data:`` URIs, CSS sits in a ``<style>`` element,
there is no JavaScript and no external reference, so the file can be mailed, archived, or
opened offline. Rendering uses Jinja2 with autoescaping, so names from metrics.json cannot
inject markup.
"""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import copymark
from copymark.errors import CopymarkError
from copymark.files import atomic_write_bytes
from copymark.report import grids, plots
from copymark.report.provenance import describe, with_store
from copymark.report.tables import TableBlock, reading_sentence, reading_sentence_gt, set_rows

MAKERS = "`copymark evaluate` (or `copymark demo`)"
TASKS = ("style", "sr")
DEFAULT_MAX_IMAGES = 6


def _err(message: str, hint: str = f"run {MAKERS} first; it writes the run folder the report reads") -> CopymarkError:
    return CopymarkError(message, hint=hint)


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(img: Any) -> bytes:
    """PNG bytes of a PIL image (lossless; the figures' pixels are kept exactly)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _err(f"{path}: missing {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _err(f"{path}: {what} is not valid JSON ({err})", hint=f"rerun {MAKERS} to write it again") from None


def load_metrics(run_dir: str | Path) -> dict[str, Any]:
    """Read and check ``RUN_DIR/metrics.json``; a :class:`CopymarkError` names what is missing."""
    d = Path(run_dir)
    if not d.exists():
        raise _err(f"run folder not found: {d}")
    if not d.is_dir():
        raise _err(f"expected a run folder, got a file: {d}")
    p = d / "metrics.json"
    if not p.is_file():
        raise _err(f"{d} has no metrics.json (the A/B/C tables)")
    m = _read_json(p, "metrics.json")
    if not isinstance(m, dict):
        raise _err(f"{p}: expected a JSON object, got {type(m).__name__}", hint=f"rerun {MAKERS}")
    if m.get("task") not in TASKS:
        raise _err(f"{p}: field 'task' must be one of {list(TASKS)}, got {m.get('task')!r}", hint=f"rerun {MAKERS}")
    sets = m.get("sets")
    if not isinstance(sets, dict) or not all(isinstance(v, dict) for v in sets.values()):
        raise _err(
            f"{p}: field 'sets' must map set names to their tables, got {type(sets).__name__}", hint=f"rerun {MAKERS}"
        )
    return m


def _output_sets(run_dir: Path) -> dict[str, Path]:
    out = run_dir / "outputs"
    if not out.is_dir():
        raise _err(f"{run_dir} has no outputs/ folder (the input, victim and surrogate images)")
    found = {p.name: p for p in sorted(out.iterdir()) if p.is_dir() and grids.present_columns(p)}
    if not found:
        raise _err(f"{out} holds no set with image folders (expected outputs/<set>/victim/, surrogate/, input/, gt/)")
    return found


@dataclass
class Figure:
    uri: str
    caption: str
    alt: str
    pixelated: bool = False


@dataclass
class SetSection:
    name: str
    n: Any
    blocks: list[TableBlock]
    sentence: str | None
    figures: list[Figure] = field(default_factory=list)
    zooms: list[Figure] = field(default_factory=list)
    bars: Figure | None = None
    note: str | None = None
    sentence_gt: str | None = None
    notes: list[str] = field(default_factory=list)
    style: Figure | None = None


def _set_order(name: str) -> tuple[int, str]:
    return ({"test": 0, "benchmark": 1}.get(name, 2), name)


def _set_section(
    name: str, set_metrics: dict[str, Any] | None, set_dir: Path | None, task: str, max_images: int
) -> SetSection:
    sm = set_metrics or {}
    sec = SetSection(
        name=name,
        n=sm.get("n"),
        blocks=set_rows(sm) if sm else [],
        sentence=reading_sentence(name, sm) if sm else None,
        sentence_gt=reading_sentence_gt(name, sm) if sm else None,
        notes=[str(n) for n in (sm.get("notes") or [])],
    )
    if not sm:
        sec.note = "metrics.json has no tables for this set; only its images are shown."
    if sm:
        png = plots.metric_bars_png(sm, set_name=name)
        if png is not None:
            metric = plots.pick_metric(sm)
            sec.bars = Figure(
                png_data_uri(png),
                f"{name} set: one metric across the tables and baselines, with 95% CIs.",
                f"bar chart of {metric}",
            )
    if set_dir is None:
        if sm:
            sec.note = "No images for this set under outputs/."
        return sec
    style_dir = set_dir / "style"
    if style_dir.is_dir():
        sec.style = _style_examples(name, style_dir, max_images)
    columns = grids.present_columns(set_dir)
    labels = [grids.COLUMN_LABELS[c] for c in columns]
    stems = grids.list_stems(set_dir, columns)
    shown = stems[: max(0, max_images)]
    if not shown:
        return sec
    rows = [grids.load_row(set_dir, s, columns, task) for s in shown]
    g = grids.comparison_image(rows, labels, row_labels=shown)
    more = f" (the first {len(shown)} of {len(stems)})" if len(stems) > len(shown) else ""
    extra = (
        " The low-resolution input is enlarged by nearest neighbour to the output size."
        if task == "sr" and "input" in columns
        else ""
    )
    sec.figures.append(
        Figure(
            png_data_uri(_png(g)),
            f"{name} set, {' | '.join(labels)}{more}.{extra}",
            f"{name} set image grid: {', '.join(labels)}",
        )
    )
    if task == "sr":
        for stem, row in list(zip(shown, rows))[: min(len(shown), 3)]:
            panel, box, zoom = grids.zoom_image(list(zip(labels, row)))
            top, left, h, w = box
            sec.zooms.append(
                Figure(
                    png_data_uri(_png(panel)),
                    f"{stem}: the {h}×{w} px window with the most luma variance (top-left at x={left}, y={top}), cut from every column and enlarged {zoom}× by nearest neighbour (the red box marks it on the full images).",
                    f"zoomed crops of {stem}",
                    pixelated=True,
                )
            )
    return sec


def _style_examples(name: str, style_dir: Path, max_images: int) -> Figure | None:
    """The unpaired target-style set that tables A and C compare with, as one labelled grid."""
    files = sorted(f for f in style_dir.iterdir() if f.is_file() and f.suffix.lower() == ".png")
    if not files:
        return None
    shown = files[: max(1, max_images)]
    img = grids.grid_image(
        [grids.load_image(f) for f in shown], [f.stem for f in shown], ncols=min(4, len(shown)), max_side=256
    )
    more = f" (the first {len(shown)} of {len(files)})" if len(files) > len(shown) else ""
    return Figure(
        png_data_uri(_png(img)),
        f"{name} set: the {len(files)} target-style example(s){more} that tables A and C compare the victim's and "
        "the surrogate's outputs with, as a set (unpaired ground truth).",
        f"{name} set target-style examples",
    )


def _learning_curve(run_dir: Path) -> Figure | None:
    j = run_dir / "learning_curve.json"
    if j.is_file():
        curve = _read_json(j, "learning_curve.json")
        png = plots.learning_curve_png(curve)
        metric = curve.get("metric", "quality")
        return Figure(
            png_data_uri(png),
            f"Table B ({metric}, surrogate vs victim) against the number of queries, per query-selection strategy; bands: 95% CI.",
            "learning curve",
        )
    p = run_dir / "learning_curve.png"
    if p.is_file():
        data = p.read_bytes()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise _err(f"{p}: not a PNG file", hint="rerun `copymark learning-curve`")
        return Figure(png_data_uri(data), "Learning curve (from learning_curve.png).", "learning curve")
    return None


def _strip_scheme(url: Any) -> str | None:
    if not isinstance(url, str) or not url:
        return None
    for scheme in ("https://", "http://"):
        if url.lower().startswith(scheme):
            return url[len(scheme) :]
    return url


def _header(run_dir: Path, m: dict[str, Any]) -> dict[str, Any]:
    task = m["task"]
    scale = m.get("scale")
    victim = m.get("victim") if isinstance(m.get("victim"), dict) else {}
    surrogate = m.get("surrogate") if isinstance(m.get("surrogate"), dict) else {}
    env: dict[str, Any] = {}
    if (run_dir / "env.json").is_file():
        try:
            env = json.loads((run_dir / "env.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            env = {}
    date = env.get("time") or time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.localtime((run_dir / "metrics.json").stat().st_mtime)
    )
    facts = describe(m)
    sur_parts = [str(surrogate[k]) for k in ("kind",) if surrogate.get(k)]
    sur_desc = ", ".join(
        f"{k} {v}"
        for k, v in surrogate.items()
        if k not in ("kind", "path") and isinstance(v, (str, int, float)) and not isinstance(v, bool)
    )
    info = victim.get("info") if isinstance(victim.get("info"), dict) else {}
    info_s = ", ".join(f"{k}: {v}" for k, v in info.items() if isinstance(v, (str, int, float, bool)))
    return {
        "task": "super-resolution" + (f" ×{scale}" if scale else "")
        if task == "sr"
        else "style transfer (image-to-image translation)",
        "victim_name": facts["victim"] or "not recorded",
        "victim_api": _strip_scheme(victim.get("url")),
        "victim_info": info_s or None,
        "surrogate": " ".join(sur_parts) or "not recorded",
        "surrogate_desc": sur_desc or None,
        "surrogate_path": surrogate.get("path"),
        "training": facts["training"],
        "queries": facts["queries"],
        "evaluation": facts["evaluation"],
        "date": date,
        "run_version": env.get("copymark"),
        "git_commit": (env.get("git_commit") or "")[:12] or None,
        "version": copymark.__version__,
        "run_dir": "/".join(run_dir.resolve().parts[-2:]),
    }


def _protocol(m: dict[str, Any]) -> dict[str, Any]:
    proto = m.get("protocol") if isinstance(m.get("protocol"), dict) else {}
    return {
        "task": m["task"],
        "scale": m.get("scale") or (4 if m["task"] == "sr" else 1),
        "extra": [(str(k), json.dumps(v) if not isinstance(v, str) else v) for k, v in proto.items()],
    }


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(
        loader=PackageLoader("copymark.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(run_dir: str | Path, max_images: int = DEFAULT_MAX_IMAGES, store: str | Path | None = None) -> str:
    """The report of ``run_dir`` as an HTML string (see :func:`write_report`)."""
    d = Path(run_dir)
    m = with_store(load_metrics(d), store)
    if max_images < 0:
        raise CopymarkError(f"--max-images must be >= 0, got {max_images}")
    outputs = _output_sets(d)
    task = m["task"]
    names = sorted(set(m["sets"]) | set(outputs), key=_set_order)
    sections = [_set_section(n, m["sets"].get(n), outputs.get(n), task, max_images) for n in names]
    ctx = {
        "h": _header(d, m),
        "sections": sections,
        "curve": _learning_curve(d),
        "protocol": _protocol(m),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    return _environment().get_template("report.html.j2").render(**ctx)


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
    store: str | Path | None = None,
) -> Path:
    """Write the self-contained HTML report of an extraction run; returns its path.

    ``out`` defaults to ``RUN_DIR/report.html``; ``max_images`` caps the rows of each set's
    grid (the first images by name). ``store`` (the extraction's query store) supplies the
    victim's queries, budget, strategy and dates when given; without it they come from
    metrics.json, or from the store found through the surrogate's training record. Raises
    :class:`CopymarkError` when the run folder, metrics.json or outputs/ is missing or
    malformed, naming the command that makes it.
    """
    return write_html(render_report(run_dir, max_images=max_images, store=store), run_dir, out)


def write_html(html: str, run_dir: str | Path, out: str | Path | None) -> Path:
    """Write a report page to ``out`` (a file, or a folder for ``report.html`` in it), by default
    ``RUN_DIR/report.html``, atomically; returns its path."""
    target = Path(out) if out is not None else Path(run_dir) / "report.html"
    if target.is_dir():
        target = target / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, html.encode("utf-8"))
    return target
