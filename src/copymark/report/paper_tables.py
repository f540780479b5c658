"""Tables 2-4 of the extraction study in its own layout, copymark's figures beside the published ones.

The study (Szyller et al., "Good Artists Copy, Great Artists Steal", Tables 2-4) lays each
table out as rows *output distribution* (victim V, attacker A) x *test set* (the victim's test
set, a benchmark set) and columns *compared distribution* (V's output: cell B; the target:
cells A and C). This module renders that layout for every setting of a reproduction (the
``result.json`` that :func:`copymark.extraction.reproduce.setting_result` writes): each cell
holds the study's figure and copymark's, then a table of the conditions that differ (data,
image size, iterations, number of images), the baselines and the goals. It formats numbers; it
computes none.

Cells: style settings give FID when the Inception weights were given, KID (mean +- std over
subsets, with a bootstrap 95% CI when measured) and SWD (with its bootstrap 95% CI) always,
plus table B's paired PSNR; SR settings give PSNR and SSIM, mean +- std over images, on the Y
channel with a border crop equal to the scale and on RGB (Table 4's (a) SSIM and (b) PSNR).

:func:`render_markdown` and :func:`render_html` take the same inputs and build the same
tables (:class:`Table`); :func:`write_tables` writes both into a run folder.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The study's published figures (its Tables 1-4) and the conditions they were made under.
STUDY: dict[str, dict[str, Any]] = {
    "2": {
        "title": "Table 2: FID of victim and attacker models for Monet-to-Photo",
        "task": "style",
        "metric": "FID",
        "target": "Monet paintings",
        "sets": {"test": "Monet2Photo Test", "benchmark": "Landscape"},
        "cells": {
            ("test", "A"): "58.05",
            ("benchmark", "A"): "49.59",
            ("test", "B"): "42.86",
            ("benchmark", "B"): "15.38",
            ("test", "C"): "61.62",
            ("benchmark", "C"): "53.99",
        },
        "conditions": {
            "victim": "CycleGAN, trained by the authors",
            "victim_training": "Monet2Photo train: 6,287 images (1,193 paintings + photos)",
            "attacker_data": "Intel Image Classification (751 test images in Table 1)",
            "test_set": "Monet2Photo test",
            "benchmark_set": "Landscape (4,319 test images)",
            "target_style_set": "Monet paintings",
            "image_size": "not stated (CycleGAN's default is 256 px)",
            "iterations": "not stated",
            "surrogate": "Pix2Pix",
            "metric": "FID (Inception-v3)",
        },
    },
    "3": {
        "title": "Table 3: FID of victim and attacker models for Selfie-to-Anime",
        "task": "style",
        "metric": "FID",
        "target": "anime faces",
        "sets": {"test": "Selfie2Anime", "benchmark": "LFW Test"},
        "cells": {
            ("test", "A"): "69.02",
            ("benchmark", "A"): "56.06",
            ("test", "B"): "138.61",
            ("benchmark", "B"): "19.67",
            ("test", "C"): "137.68",
            ("benchmark", "C"): "69.42",
        },
        "conditions": {
            "victim": "U-GAT-IT, trained by the authors",
            "victim_training": "selfie2anime train: 3,400 selfies + 3,400 anime faces",
            "attacker_data": "CelebA (100 test images in Table 1)",
            "test_set": "selfie2anime test (100 selfies)",
            "benchmark_set": "LFW (13,233 images)",
            "target_style_set": "anime faces (selfie2anime test)",
            "image_size": "not stated (U-GAT-IT's default is 256 px)",
            "iterations": "not stated",
            "surrogate": "Pix2Pix",
            "metric": "FID (Inception-v3)",
        },
    },
    "4": {
        "title": "Table 4: PSNR and SSIM of victim and attacker models for Super-Resolution",
        "task": "sr",
        "metric": "PSNR / SSIM",
        "target": "original high-res",
        "sets": {"test": "DIV2K Test", "benchmark": "SRBENCHMARK"},
        "cells": {
            ("test", "A", "ssim"): "0.74 ± 0.10",
            ("benchmark", "A", "ssim"): "0.69 ± 0.23",
            ("test", "B", "ssim"): "0.75 ± 0.16",
            ("benchmark", "B", "ssim"): "0.76 ± 0.18",
            ("test", "C", "ssim"): "0.80 ± 0.20",
            ("benchmark", "C", "ssim"): "0.61 ± 0.23",
            ("test", "A", "psnr"): "24.67 ± 3.63",
            ("benchmark", "A", "psnr"): "22.59 ± 9.51",
            ("test", "B", "psnr"): "24.74 ± 9.21",
            ("benchmark", "B", "psnr"): "20.64 ± 7.33",
            ("test", "C", "psnr"): "23.24 ± 7.17",
            ("benchmark", "C", "psnr"): "18.13 ± 6.73",
        },
        "conditions": {
            "victim": "SRGAN x4, trained by the authors",
            "victim_training": "DIV2K train: 800 pairs",
            "attacker_data": "FLICKR2K (200 test images in Table 1)",
            "test_set": "DIV2K test (200 pairs)",
            "benchmark_set": "SRBenchmark: Set5 + Set14 + Urban100 + BSD100 (294 images)",
            "target_style_set": "the HR originals (paired)",
            "image_size": "full images, x4 bicubic downsampled",
            "iterations": "not stated",
            "surrogate": "SRResNet",
            "metric": "PSNR, SSIM (channel and border crop not stated)",
        },
    },
}

CONDITION_ROWS = (
    ("victim", "victim"),
    ("victim_training", "victim's training data and iterations"),
    ("attacker_data", "attacker's data"),
    ("queries", "queries (answers bought)"),
    ("test_set", "victim's test set"),
    ("benchmark_set", "benchmark set"),
    ("target_style_set", "target-style set"),
    ("image_size", "image size"),
    ("surrogate", "surrogate and its iterations"),
    ("metric", "metric"),
)


@dataclass
class Table:
    """A rendered table: a title, column headers, rows of cell texts, and notes under it."""

    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        return None
    return float(x)


def _pm(entry: Any, decimals: int, unit: str = "") -> str:
    """``mean ± std`` of a per-image summary (``∞`` for infinite means, ``—`` when missing)."""
    if not entry:
        return "—"
    mean = entry.get("mean")
    if mean in ("inf", "Infinity") or (isinstance(mean, float) and math.isinf(mean)):
        return "∞"
    m, s = _num(mean), _num(entry.get("std"))
    if m is None:
        return "—"
    text = f"{m:.{decimals}f}" + (f" ± {s:.{decimals}f}" if s is not None else "")
    return text + (f" {unit}" if unit else "")


def _ci(ci: Any, decimals: int) -> str:
    if not ci or len(ci) != 2 or _num(ci[0]) is None or _num(ci[1]) is None:
        return ""
    return f" [{ci[0]:.{decimals}f}, {ci[1]:.{decimals}f}]"


def style_cell(cell: dict[str, Any] | None, table: str) -> str:
    """A style cell: FID (when measured), KID mean ± std [CI], SWD [CI]; B also its PSNR (RGB)."""
    if cell is None:
        return "not run"
    parts = []
    fid = cell.get("fid") or {}
    if _num(fid.get("value")) is not None:
        parts.append(f"FID {fid['value']:.2f}")
    kid = cell.get("kid")
    if kid and _num(kid.get("mean")) is not None:
        std = f" ± {kid['std']:.4f}" if _num(kid.get("std")) is not None else ""
        parts.append(f"KID {kid['mean']:.4f}{std}{_ci(kid.get('ci95'), 4)}")
    else:
        parts.append("KID — (needs --inception-weights)" if not kid else f"KID — ({kid.get('why') or 'n/a'})")
    swd = cell.get("swd") or {}
    if _num(swd.get("value")) is not None:
        parts.append(f"SWD {swd['value']:.1f}{_ci(swd.get('ci95'), 1)}")
    else:
        parts.append("SWD —")
    if table == "B" and cell.get("psnr_rgb"):
        parts.append(f"PSNR {_pm(cell['psnr_rgb'], 2, 'dB')}")
    return " · ".join(parts)


def sr_cell(cell: dict[str, Any] | None, metric: str) -> str:
    """An SR cell: ``Y: mean ± std · RGB: mean ± std`` of PSNR (dB) or SSIM."""
    if cell is None:
        return "not run"
    d = 2 if metric == "psnr" else 4
    return f"Y {_pm(cell.get(f'{metric}_y'), d)} · RGB {_pm(cell.get(f'{metric}_rgb'), d)}"


def _set_name(study: dict[str, Any] | None, result: dict[str, Any], role: str) -> str:
    ours = result.get("set_labels", {}).get(role, role)
    n = (result.get("conditions", {}).get("counts") or {}).get(f"{role}_images")
    ours = f"{ours} ({n})" if n else ours
    return f"{study['sets'][role]} → {ours}" if study else ours


def _results_tables(result: dict[str, Any]) -> list[Table]:
    """The study's table(s) for one setting: rows V/A output x test/benchmark, columns B | A, C."""
    study = STUDY.get(str(result.get("study_table"))) if result.get("study_table") else None
    task = result["task"]
    sets = result.get("sets", {})
    target = (study or {}).get("target") or ("original high-res" if task == "sr" else "target style")
    label = result.get("victim", {}).get("label", result["name"])
    base_title = study["title"] if study else f"Extra setting (not in the study): {label}"
    metrics = ("ssim", "psnr") if task == "sr" else (None,)
    out = []
    for metric in metrics:
        title = f"{base_title} — setting `{result['name']}` ({label})"
        if metric:
            title += f" — ({'a' if metric == 'ssim' else 'b'}) {metric.upper()}"
        if study:
            header = ["Output", "Test set", "vs V output: study", "vs V output: copymark",
                      f"vs {target}: study", f"vs {target}: copymark"]  # fmt: skip
        else:
            header = ["Output", "Test set", "vs V output: copymark", f"vs {target}: copymark"]
        rows = []
        for who, tabs in (("V output", (None, "A")), ("A output", ("B", "C"))):
            for role in ("test", "benchmark"):
                cells = sets.get(role, {})
                row = [who, _set_name(study, result, role)]
                for t in tabs:
                    key = (role, t) if metric is None else (role, t, metric)
                    mark = f"({t}) " if t and not (t == "B" and role == "benchmark") else ""
                    if t is None:
                        row += ["N/A", "N/A"] if study else ["N/A"]
                        continue
                    if t not in result.get("tables", ["A", "B", "C"]):
                        mine = "not measured (no target-style set)"
                    elif task == "sr":
                        mine = sr_cell(cells.get(t), metric or "psnr")
                    else:
                        mine = style_cell(cells.get(t), t)
                    if study:
                        row.append(mark + study["cells"].get(key, "—"))
                    row.append(mark + mine)
                rows.append(row)
        notes = _cell_notes(result)
        out.append(Table(title, header, rows, notes))
    return out


def _cell_notes(result: dict[str, Any]) -> list[str]:
    notes = []
    task = result["task"]
    if task == "style":
        notes.append(
            "copymark cells: FID when Inception weights were given; KID = mean ± std over subsets "
            "(× 1, polynomial kernel) [bootstrap 95% CI]; SWD × 1e3 on Laplacian-pyramid patches "
            "[bootstrap 95% CI over images]; B also paired PSNR (RGB), mean ± std."
        )
        notes.append(
            "A set-level distance is biased upward on a bootstrap resample (duplicates make it less diverse), "
            "so its percentile CI can sit above the point estimate; the goals also give the paired C - A "
            "difference, in which that shift largely cancels."
        )
    else:
        notes.append(
            "copymark cells: mean ± std over images; Y = Y channel of YCbCr (BT.601) with a border crop "
            "equal to the scale (the SR protocol); RGB = all channels, no crop; 8-bit values."
        )
    if task != "style":
        return notes  # the evaluation's notes are about set-level metrics (SWD, KID, FID): not in SR tables
    cells_of: dict[str, list[str]] = {}
    for role in ("test", "benchmark"):
        for t, cell in result.get("sets", {}).get(role, {}).items():
            if isinstance(cell, dict) and cell.get("note"):
                cells_of.setdefault(cell["note"], []).append(f"{role} {t}")
    notes += [f"{', '.join(where)}: {note}" for note, where in cells_of.items()]
    return notes


def _condition_text(key: str, value: Any) -> str:
    if value is None or value == "":
        return "—"
    if key == "victim_training" and isinstance(value, dict):
        done, planned = value.get("trained_iters"), value.get("iters")
        its = f"{planned} iterations" if done in (None, planned) else f"{done} of a {planned}-iteration schedule"
        return f"copymark {value.get('procedure')}: {its}, batch {value.get('batch_size')}, {value.get('size')} px"
    if key == "surrogate" and isinstance(value, dict):
        return (f"{value.get('procedure')}: {value.get('iters')} iterations, batch {value.get('batch_size')}, "
                f"{value.get('train_size')} px crops, {value.get('pairs')} pairs")  # fmt: skip
    if key == "image_size":
        return f"{value} px" if isinstance(value, int) else str(value)
    return str(value)


def conditions_table(result: dict[str, Any]) -> Table:
    """What differs between the study's conditions and this setting's."""
    study = STUDY.get(str(result.get("study_table"))) if result.get("study_table") else None
    c = dict(result.get("conditions", {}))
    counts = c.get("counts") or {}
    c["queries"] = f"{c.get('queries')} of {c.get('query_size')} px ({c.get('strategy')})"
    for role, key in (("test", "test_set"), ("benchmark", "benchmark_set"), ("target_style", "target_style_set")):
        n = counts.get(f"{role}_images") or counts.get(role)
        if c.get(key) and n:
            c[key] = f"{c[key]} ({n} images)"
    n_att = counts.get("attacker")
    if n_att:
        c["attacker_data"] = f"{c.get('attacker_data')} ({n_att} photos)"
    if c.get("image_size") is None:
        c["image_size"] = "the sets' own sizes" if result["task"] == "sr" else "the sets' own sizes"
    c["metric"] = c.get("fid")
    if not c.get("victim_training"):
        c["victim_training"] = "pretrained third-party weights (not trained here)"
    rows = []
    for key, name in CONDITION_ROWS:
        theirs = (study or {}).get("conditions", {}).get(key, "—")
        if key == "queries":
            theirs = "not stated"
        rows.append([name, theirs, _condition_text(key, c.get(key))])
    notes = list(c.get("notes") or [])
    return Table(f"Conditions — setting `{result['name']}`", ["condition", "study", "copymark"], rows, notes)


def baselines_and_goals(result: dict[str, Any]) -> Table:
    rows = []
    for g in result.get("goals", []):
        tag = "n/a" if g.get("met") is None else ("met" if g["met"] else "missed")
        rows.append([g["goal"], tag, g.get("detail", "")])
    return Table(f"Goals — setting `{result['name']}`", ["goal", "result", "detail"], rows)


def setting_tables(result: dict[str, Any]) -> list[Table]:
    return [*_results_tables(result), conditions_table(result), baselines_and_goals(result)]


def _not_run(name: str) -> Table:
    return Table(f"setting `{name}`", ["status"], [["not run yet (rerun the command, or --only " + name + ")"]])


def all_tables(results: dict[str, Any], order: list[str]) -> list[list[Table]]:
    """Tables of every setting in config order (a setting without results is marked not run)."""
    return [setting_tables(results[n]) if n in results else [_not_run(n)] for n in order]


# ---------------------------------------------------------------------------------------------
# Markdown and HTML


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown(t: Table, level: int = 3) -> str:
    lines = [f"{'#' * level} {t.title}", ""]
    lines.append("| " + " | ".join(_md_cell(h) for h in t.header) + " |")
    lines.append("|" + "|".join("---" for _ in t.header) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.notes:
        lines.append("")
        lines += [f"- {n}" for n in t.notes]
    lines.append("")
    return "\n".join(lines)


INTRO = (
    "Tables 2-4 of the extraction study (Szyller et al.) in its layout: rows are the output "
    "distribution (victim V, surrogate A) on the victim's test set and a benchmark set; columns the "
    "compared distribution (V's output: cell B; the target: cells A and C). Each cell shows the "
    "study's published figure and copymark's, measured on the data and at the scale stated under "
    "*Conditions*; numbers from different data, sizes and sample counts are not directly comparable, "
    "only their pattern (C close to A, B far better than trivial maps) is."
)


def render_markdown(results: dict[str, Any], order: list[str], description: str = "") -> str:
    parts = ["# Extraction study, Tables 2-4: copymark's reproduction", "", INTRO, ""]
    if description:
        parts += [description, ""]
    for group in all_tables(results, order):
        for t in group:
            parts.append(table_markdown(t))
    return "\n".join(parts)


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #eef; }
td.study { color: #555; background: #f7f7f7; }
td.met { background: #e6f5e6; } td.missed { background: #fbe9e9; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
"""


def table_html(t: Table) -> str:
    esc = html.escape
    study_cols = {i for i, h in enumerate(t.header) if h.endswith(": study") or h == "study"}
    out = [f"<h3>{esc(t.title)}</h3>", "<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in t.header) + "</tr>"]
    for row in t.rows:
        cells = []
        for i, c in enumerate(row):
            cls = "study" if i in study_cols else ("met" if c == "met" else ("missed" if c == "missed" else ""))
            cells.append(f'<td class="{cls}">{esc(c)}</td>' if cls else f"<td>{esc(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    if t.notes:
        out.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in t.notes) + "</ul>")
    return "\n".join(out)


def render_html(results: dict[str, Any], order: list[str], description: str = "") -> str:
    body = [
        f"<h1>{html.escape('Extraction study, Tables 2-4: copymark’s reproduction')}</h1>",
        f"<p>{html.escape(INTRO)}</p>",
    ]
    if description:
        body.append(f"<p>{html.escape(description)}</p>")
    for name, group in zip(order, all_tables(results, order), strict=True):
        body.append(f"<h2>{html.escape(name)}</h2>")
        body += [table_html(t) for t in group]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>copymark: extraction study Tables 2-4</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_tables(
    run_dir: str | Path, results: dict[str, Any], order: list[str], description: str = ""
) -> tuple[Path, Path]:
    """Write ``tables.md`` and ``tables.html`` into ``run_dir``; returns both paths."""
    from copymark.files import atomic_write_bytes

    d = Path(run_dir)
    md, page = d / "tables.md", d / "tables.html"
    atomic_write_bytes(md, render_markdown(results, order, description).encode())
    atomic_write_bytes(page, render_html(results, order, description).encode())
    return md, page
