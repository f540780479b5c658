"""The A/B/C tables of an extraction run, as rows (for HTML) and as Markdown.

Input is the ``metrics.json`` of an extraction run folder (written by
:func:`copymark.extraction.evaluate.metrics_record`): ``sets -> <set> -> tables -> A|B|C ->
metrics -> <name>`` and ``sets -> <set> -> baselines -> <key> -> <name>``. A per-image metric
carries the one summary convention of :mod:`copymark.metrics.summary` (``mean``, ``std``,
``n``, ``n_inf``, ``ci95``; ``"inf"`` for an infinite mean); a set-level metric (FID, KID,
SWD) carries ``value`` (KID ``mean``/``std``), ``n`` and ``n_ref``, or ``why`` when it could
not be computed. Baselines ending in ``_vs_victim`` are read against table B, those ending in
``_vs_gt`` against tables A and C. This module only formats numbers; it computes none
(``copymark evaluate`` does).

:func:`tables_markdown` is what ``copymark evaluate`` writes to ``tables.md``;
:func:`set_rows` feeds the HTML report; :func:`reading_sentence` writes the plain-language
sentence that compares table B with the trivial baselines, :func:`reading_sentence_gt` the one
that compares tables A and C with the trivial map against the ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TABLE_ORDER = ("A", "B", "C")
DEFAULT_TITLES = {
    "A": "victim vs ground truth",
    "B": "surrogate vs victim",
    "C": "surrogate vs ground truth",
}

# name -> (label, higher is better, unit, decimals)
METRIC_INFO: dict[str, tuple[str, bool, str, int]] = {
    "psnr_y": ("PSNR (Y)", True, "dB", 2),
    "psnr_rgb": ("PSNR (RGB)", True, "dB", 2),
    "psnr": ("PSNR", True, "dB", 2),
    "ssim_y": ("SSIM (Y)", True, "", 4),
    "ssim_rgb": ("SSIM (RGB)", True, "", 4),
    "ssim": ("SSIM", True, "", 4),
    "lpips": ("LPIPS", False, "", 4),
    "fid": ("FID", False, "", 2),
    "kid": ("KID", False, "", 4),
    "swd": ("SWD", False, "", 4),
    "mse": ("MSE", False, "", 5),
    "mae": ("MAE", False, "", 5),
}
METRIC_ORDER = tuple(METRIC_INFO)

# metrics preferred, in order, when one number has to stand for a table
# SR results are read on Y (the protocol of the SR literature); style results on RGB
HEADLINE_METRICS = ("psnr_y", "psnr_rgb", "psnr", "ssim_y", "ssim_rgb", "ssim", "swd", "lpips", "kid", "fid")

BASELINE_NAMES = {
    "identity_vs_victim": "the identity map",
    "untrained_vs_victim": "an untrained surrogate",
    "bicubic_vs_victim": "bicubic upscaling",
    "identity_vs_gt": "the identity map",
    "bicubic_vs_gt": "bicubic upscaling",
}


def is_gt_baseline(key: str) -> bool:
    """Baselines scored against the ground truth (read with tables A and C, not B)."""
    return key.endswith("_vs_gt")


def metric_label(name: str) -> str:
    """Display name of a metric, e.g. ``psnr_y`` -> ``PSNR (Y)``; unknown names pass through."""
    info = METRIC_INFO.get(name)
    return info[0] if info else name


def metric_unit(name: str) -> str:
    info = METRIC_INFO.get(name)
    return info[2] if info else ""


def higher_is_better(name: str) -> bool | None:
    """True/False for known metrics, None when unknown."""
    info = METRIC_INFO.get(name)
    return info[1] if info else None


def _decimals(name: str, value: float | None = None) -> int:
    info = METRIC_INFO.get(name)
    if info:
        return info[3]
    if value is not None and value != 0 and abs(value) < 0.1:
        return 5
    return 3


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, (int, float)) and math.isfinite(float(x)):
        return float(x)
    return None


def _infinite(x: Any) -> int:
    """+1 / -1 for an infinite value (a float or the JSON strings "inf" / "-inf"), else 0."""
    if isinstance(x, str) and x in ("inf", "-inf", "Infinity", "-Infinity"):
        return -1 if x.startswith("-") else 1
    if isinstance(x, float) and math.isinf(x):
        return 1 if x > 0 else -1
    return 0


def fmt(x: Any, decimals: int) -> str:
    """A number with fixed decimals; ``∞`` for infinity, ``—`` for missing values."""
    inf = _infinite(x)
    if inf:
        return "∞" if inf > 0 else "-∞"
    v = _num(x)
    return "—" if v is None else f"{v:.{decimals}f}"


@dataclass(frozen=True)
class MetricRow:
    """One formatted table row."""

    name: str  # metrics.json key
    label: str  # display name with unit and direction
    value: str  # "mean ± std" or the set-level value
    n: str
    ci95: str
    set_level: bool
    note: str = ""  # why a value is missing, or how many values were infinite


def _sort_key(name: str) -> tuple[int, str]:
    return (METRIC_ORDER.index(name) if name in METRIC_ORDER else len(METRIC_ORDER), name)


def format_metric(name: str, entry: Any) -> MetricRow:
    """Format one metric entry of metrics.json (per-image or set-level)."""
    unit = metric_unit(name)
    hib = higher_is_better(name)
    arrow = "" if hib is None else ("\u00a0↑" if hib else "\u00a0↓")
    label = metric_label(name) + (f" [{unit}]" if unit else "") + arrow
    if not isinstance(entry, dict):  # a bare number
        d = _decimals(name, _num(entry))
        return MetricRow(name, label, fmt(entry, d), "—", "—", True)
    set_level = "value" in entry or "n_ref" in entry
    mean, std = entry.get("mean"), entry.get("std")
    d = _decimals(name, _num(mean) if _num(mean) is not None else _num(entry.get("value")))
    if _num(mean) is not None or _infinite(mean):
        value = fmt(mean, d) + (f" ± {fmt(std, d)}" if _num(std) is not None else "")
    else:
        value = fmt(entry.get("value"), d)
    n = entry.get("n")
    n_s = str(int(n)) if _num(n) is not None else "—"
    if _num(entry.get("n_ref")) is not None and n_s != "—":
        n_s += f" vs {int(entry['n_ref'])}"
    ci = entry.get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(c) is not None for c in ci):
        ci_s = f"[{fmt(ci[0], d)}, {fmt(ci[1], d)}]"
    else:
        ci_s = "—"
    note = str(entry.get("why") or "")
    n_inf = entry.get("n_inf")
    if isinstance(n_inf, int) and n_inf > 0:
        note = f"{n_inf} of {n_s} values infinite (identical images): no std or CI"
    return MetricRow(name, label, value, n_s, ci_s, set_level, note)


@dataclass(frozen=True)
class TableBlock:
    """One of the tables A/B/C (or the baselines) of one set, formatted."""

    key: str  # "A", "B", "C" or a baseline key
    title: str
    rows: list[MetricRow]


def _metric_rows(metrics: dict[str, Any]) -> list[MetricRow]:
    return [format_metric(k, metrics[k]) for k in sorted(metrics, key=_sort_key)]


def set_rows(set_metrics: dict[str, Any]) -> list[TableBlock]:
    """Tables A, B, C (those present) and then each baseline, for one set of metrics.json."""
    tables = set_metrics.get("tables") or {}
    blocks: list[TableBlock] = []
    for key in [*TABLE_ORDER, *sorted(k for k in tables if k not in TABLE_ORDER)]:
        t = tables.get(key)
        if not isinstance(t, dict):
            continue
        metrics = t.get("metrics") or {}
        title = t.get("title") or DEFAULT_TITLES.get(key, key)
        blocks.append(TableBlock(key, str(title), _metric_rows(metrics)))
    bases = {k: v for k, v in (set_metrics.get("baselines") or {}).items() if isinstance(v, dict)}
    for key in sorted(bases, key=lambda k: (is_gt_baseline(k), k)):
        title = (
            f"baseline: {baseline_name(key)} vs ground truth (read A and C against it)"
            if is_gt_baseline(key)
            else f"baseline: {baseline_name(key)} vs victim (read B against it)"
        )
        blocks.append(TableBlock(key, title, _metric_rows(bases[key])))
    return blocks


def baseline_name(key: str) -> str:
    """Plain-language name of a baseline key such as ``identity_vs_victim``."""
    return BASELINE_NAMES.get(key, key.replace("_", " "))


def _center(entry: Any) -> float | None:
    if isinstance(entry, dict):
        v = _num(entry.get("mean"))
        return v if v is not None else _num(entry.get("value"))
    return _num(entry)


def _ci(entry: Any) -> tuple[float, float] | None:
    if isinstance(entry, dict):
        ci = entry.get("ci95")
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(c) is not None for c in ci):
            return float(ci[0]), float(ci[1])
    return None


def reading_sentence(set_name: str, set_metrics: dict[str, Any]) -> str | None:
    """One plain-language sentence: table B against each trivial baseline, on a shared metric.

    The surrogate counts as better (or worse) than a baseline when the 95% CI of the per-image
    paired difference (``paired_gain``, written by ``copymark evaluate``) excludes 0; for older
    metrics without it, when the two 95% CIs do not overlap; without CIs, by the means alone.
    The sentence says which rule decided. Returns None when there is no table B or no baseline
    with a metric in common.
    """
    tables = set_metrics.get("tables") or {}
    b = (tables.get("B") or {}).get("metrics") or {}
    baselines = {
        k: v for k, v in (set_metrics.get("baselines") or {}).items() if isinstance(v, dict) and not is_gt_baseline(k)
    }
    if not b or not baselines:
        return None
    shared = [m for m in HEADLINE_METRICS if m in b and any(m in v for v in baselines.values())]
    shared += sorted(m for m in b if m not in shared and any(m in v for v in baselines.values()))
    metric = next((m for m in shared if _center(b[m]) is not None), None)
    if metric is None:
        return None
    hib = higher_is_better(metric)
    hib = True if hib is None else hib
    d = _decimals(metric, _center(b[metric]))
    unit = metric_unit(metric)
    u = f" {unit}" if unit else ""
    bval = _center(b[metric])
    assert bval is not None
    bci = _ci(b[metric])
    parts: list[str] = []
    any_ci_missing = False
    paired_basis = overlap_basis = False
    for key, base in sorted(baselines.items()):
        if metric not in base or _center(base[metric]) is None:
            continue
        v = _center(base[metric])
        assert v is not None
        vci = _ci(base[metric])
        diff = bval - v
        gain = base[metric].get("paired_gain") if isinstance(base[metric], dict) else None
        gci = _ci(gain) if isinstance(gain, dict) else None
        if gci is not None:  # per-image paired difference: its CI decides
            paired_basis = True
            if (gci[0] > 0) if hib else (gci[1] < 0):
                verdict = "better than"
            elif (gci[1] < 0) if hib else (gci[0] > 0):
                verdict = "worse than"
            else:
                verdict = "not distinguishable from"
        elif bci is not None and vci is not None:
            overlap_basis = True
            if (bci[0] > vci[1]) if hib else (bci[1] < vci[0]):
                verdict = "better than"
            elif (bci[1] < vci[0]) if hib else (bci[0] > vci[1]):
                verdict = "worse than"
            else:
                verdict = "not distinguishable from"
        else:
            any_ci_missing = True
            better = diff > 0 if hib else diff < 0
            verdict = "better than" if better else ("equal to" if diff == 0 else "worse than")
        diff_ci = f", 95% CI [{gci[0]:+.{d}f}, {gci[1]:+.{d}f}]{u}" if gci is not None else ""
        parts.append(f"{verdict} {baseline_name(key)} ({fmt(v, d)}{u}; difference {diff:+.{d}f}{u}{diff_ci})")
    if not parts:
        return None
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    bases = []
    if paired_basis:
        bases.append(
            f"the 95% bootstrap CI of the per-image difference (n = {b[metric].get('n', '?')} images) excluding 0"
        )
    if overlap_basis:
        bases.append("non-overlapping 95% confidence intervals")
    if any_ci_missing:
        bases.append("the means alone (no confidence intervals given)")
    basis = "judged by " + " and ".join(bases)
    return (
        f"On the {set_name} set, the surrogate reproduces the victim at {metric_label(metric)} "
        f"{fmt(bval, d)}{u}, which is {joined}, {basis}."
    )


def reading_sentence_gt(set_name: str, set_metrics: dict[str, Any]) -> str | None:
    """Tables A and C against the trivial map vs the ground truth (bicubic for SR), on the
    headline per-image metric: how much of the gain over the trivial map the copy keeps.

    Uses the per-image paired gains ``paired_gain_A`` / ``paired_gain_C`` and their 95% CIs when
    metrics.json has them. None without such a baseline or a shared per-image metric.
    """
    tables = set_metrics.get("tables") or {}
    bases = {k: v for k, v in (set_metrics.get("baselines") or {}).items() if isinstance(v, dict) and is_gt_baseline(k)}
    a = (tables.get("A") or {}).get("metrics") or {}
    c = (tables.get("C") or {}).get("metrics") or {}
    for key, base in sorted(bases.items()):
        metric = next(
            (m for m in HEADLINE_METRICS if m in base and m in a and m in c and _center(base[m]) is not None), None
        )
        if metric is None:
            continue
        d, unit = _decimals(metric), metric_unit(metric)
        u = f" {unit}" if unit else ""
        parts = []
        for table, entry in (("A", a[metric]), ("C", c[metric])):
            who = "the victim" if table == "A" else "the surrogate"
            gain = base[metric].get(f"paired_gain_{table}") if isinstance(base[metric], dict) else None
            gci = _ci(gain) if isinstance(gain, dict) else None
            g = _center(gain) if isinstance(gain, dict) else None
            extra = ""
            if g is not None:
                extra = f", {g:+.{d}f}{u}" + (f" [95% CI {gci[0]:+.{d}f}, {gci[1]:+.{d}f}]" if gci else "")
            parts.append(f"{who} {fmt(_center(entry), d)}{u} (table {table}{extra})")
        return (
            f"Against the ground truth of the {set_name} set, {baseline_name(key)} scores {metric_label(metric)} "
            f"{fmt(_center(base[metric]), d)}{u}; {parts[0]} and {parts[1]}, each difference taken image by image."
        )
    return None


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def tables_markdown(metrics: dict[str, Any]) -> str:
    """Markdown A/B/C tables of every set in metrics.json (what ``tables.md`` holds).

    One section per set; one table per set with a row per (table, metric): mean ± std, n and
    the 95% CI (set-level metrics such as FID/KID/SWD show their value and n). Baselines, when
    present, follow as extra rows, and the plain-language reading of B vs the baselines ends
    each section.
    """
    out: list[str] = []
    task = metrics.get("task")
    header = "# Extraction results"
    if task:
        header += f" ({'super-resolution' if task == 'sr' else task})"
    out.append(header)
    out.append("")
    from copymark.report.provenance import describe

    facts = describe(metrics)
    for label, key in (
        ("Victim", "victim"),
        ("Queries spent", "queries"),
        ("Surrogate trained on", "training"),
        ("Evaluation answers", "evaluation"),
    ):
        if facts.get(key):
            out.append(f"- {label}: {facts[key]}")
    out.append("")
    sets = metrics.get("sets") or {}
    if not sets:
        out.append("_No evaluated sets in metrics.json._")
        return "\n".join(out) + "\n"
    for set_name in sorted(sets, key=lambda s: (s != "test", s)):
        sm = sets[set_name]
        if not isinstance(sm, dict):
            continue
        n = sm.get("n")
        out.append(f"## {set_name} set" + (f" (n = {n})" if n is not None else ""))
        out.append("")
        blocks = set_rows(sm)
        if not blocks:
            out.append("_No tables for this set._")
            out.append("")
            continue
        out.append("| table | metric | mean ± std (or value) | n | 95% CI |")
        out.append("|---|---|---:|---:|---:|")
        for block in blocks:
            name = f"{block.key}: {block.title}" if block.key in TABLE_ORDER else block.title
            if not block.rows:
                out.append(f"| {_md_escape(name)} | — | — | — | — |")
            for row in block.rows:
                value = row.value + (f" ({_md_escape(row.note)})" if row.note else "")
                out.append(f"| {_md_escape(name)} | {_md_escape(row.label)} | {value} | {row.n} | {row.ci95} |")
        out.append("")
        for sentence in (reading_sentence(set_name, sm), reading_sentence_gt(set_name, sm)):
            if sentence:
                out.append(sentence)
                out.append("")
        for note in sm.get("notes") or []:
            out.append(f"_Note: {_md_escape(str(note))}._")
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
