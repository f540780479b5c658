"""Plots for reports, returned as PNG bytes (matplotlib's Agg canvas; no display, no pyplot state).

- :func:`learning_curve_png`: table-B quality against the number of queries, one line per
  query-selection strategy, with the 95% CI as a band when the points carry one
  (``learning_curve.json`` of an extraction run).
- :func:`metric_bars_png`: one metric of tables A/B/C (and the baselines) of one set as bars
  with 95% CI error bars, and the per-image values as dots when metrics.json carries them
  (an optional ``"values"`` list beside ``mean``/``std``).

The figures use the Agg canvas directly (``matplotlib.figure.Figure``), so they are safe to
make from any thread and never open a window.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from typing import Any

from copymark.errors import CopymarkError
from copymark.report.tables import (
    HEADLINE_METRICS,
    TABLE_ORDER,
    baseline_name,
    higher_is_better,
    metric_label,
    metric_unit,
)

_COLORS = ("#1f5fa8", "#d9622b", "#2a9d5b", "#8e44ad", "#b8860b", "#c0392b", "#555555")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return buf.getvalue()


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _axis_label(metric: str) -> str:
    unit = metric_unit(metric)
    return metric_label(metric) + (f" [{unit}]" if unit else "")


def learning_curve_png(curve: dict[str, Any], title: str | None = None) -> bytes:
    """Plot ``learning_curve.json``: quality against queries, one line per strategy.

    ``curve = {"metric": ..., "budget": ..., "points": [{"strategy", "queries", "value",
    "ci95"?}, ...]}``. A dotted vertical line marks a quarter of the budget (the issue's goal:
    the best strategy at 1/4 of the budget against random at all of it). Raises
    :class:`CopymarkError` when the points are missing or malformed.
    """
    points = curve.get("points") if isinstance(curve, dict) else None
    if not isinstance(points, list) or not points:
        raise CopymarkError("learning_curve.json: no 'points' list", hint="rerun `copymark learning-curve`")
    series: dict[str, list[tuple[float, float, list | None]]] = defaultdict(list)
    for i, p in enumerate(points):
        if not isinstance(p, dict) or not _finite(p.get("queries")) or not _finite(p.get("value")):
            raise CopymarkError(
                f"learning_curve.json: point {i} needs numeric 'queries' and 'value', got {p!r}",
                hint="rerun `copymark learning-curve`",
            )
        ci = p.get("ci95")
        ci = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_finite(c) for c in ci) else None
        series[str(p.get("strategy", "?"))].append((float(p["queries"]), float(p["value"]), ci))
    metric = str(curve.get("metric", "value"))
    fig = _figure(6.4, 3.8)
    ax = fig.add_subplot()
    for k, (name, pts) in enumerate(sorted(series.items())):
        pts.sort(key=lambda t: t[0])
        color = _COLORS[k % len(_COLORS)]
        xs = [q for q, _, _ in pts]
        ys = [v for _, v, _ in pts]
        ax.plot(xs, ys, marker="o", color=color, label=name, linewidth=2)
        with_ci = [(q, c) for q, _, c in pts if c is not None]
        if with_ci:
            ax.fill_between(
                [q for q, _ in with_ci],
                [c[0] for _, c in with_ci],
                [c[1] for _, c in with_ci],
                color=color,
                alpha=0.18,
                linewidth=0,
            )
    budget = curve.get("budget")
    if _finite(budget) and budget > 0:
        ax.axvline(budget / 4, color="#888888", linestyle=":", linewidth=1.2, label="¼ of the budget")
    all_q = sorted({q for pts in series.values() for q, _, _ in pts})
    if len(all_q) >= 3 and all_q[0] > 0 and all_q[-1] / all_q[0] >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(all_q)
    ax.set_xticklabels([f"{q:g}" for q in all_q])
    ax.set_xlabel("queries to the victim")
    ax.set_ylabel(_axis_label(metric) + " (surrogate vs victim)")
    ax.set_title(title or "Learning curve: table B against queries", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, fontsize=9)
    return _png(fig)


def pick_metric(set_metrics: dict[str, Any]) -> str | None:
    """The headline metric of a set: the first of :data:`HEADLINE_METRICS` that table B has."""
    tables = set_metrics.get("tables") or {}
    b = (tables.get("B") or {}).get("metrics") or {}
    for m in HEADLINE_METRICS:
        if m in b:
            return m
    return next(iter(sorted(b)), None)


def metric_bars_png(set_metrics: dict[str, Any], metric: str | None = None, set_name: str = "") -> bytes | None:
    """Bars of one metric across tables A/B/C and the baselines of one set (None if absent).

    Bars show the mean (or the set-level value), error bars the 95% CI when given; per-image
    values, when metrics.json carries them as ``"values"``, are drawn as dots over the bars.
    """
    metric = metric or pick_metric(set_metrics)
    if metric is None:
        return None
    entries: list[tuple[str, dict[str, Any], bool]] = []
    tables = set_metrics.get("tables") or {}
    for key in TABLE_ORDER:
        m = ((tables.get(key) or {}).get("metrics") or {}).get(metric)
        if isinstance(m, dict):
            title = (tables.get(key) or {}).get("title") or key
            entries.append((f"{key}\n{title}", m, False))
    for key, base in sorted((set_metrics.get("baselines") or {}).items()):
        if isinstance(base, dict) and isinstance(base.get(metric), dict):
            entries.append((baseline_name(key).replace(" (", "\n("), base[metric], True))
    entries = [(lab, m, b) for lab, m, b in entries if _finite(m.get("mean", m.get("value")))]
    if not entries:
        return None
    fig = _figure(max(4.0, 1.5 * len(entries) + 1.2), 3.6)
    ax = fig.add_subplot()
    for i, (_lab, m, is_base) in enumerate(entries):
        y = float(m.get("mean", m.get("value")))
        color = "#9aa5b1" if is_base else _COLORS[i % 3]
        ax.bar(i, y, color=color, width=0.62, hatch="//" if is_base else None, edgecolor="white")
        ci = m.get("ci95")
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_finite(c) for c in ci):
            ax.errorbar(i, y, yerr=[[y - ci[0]], [ci[1] - y]], color="#222222", capsize=5, linewidth=1.3)
        vals = [float(v) for v in (m.get("values") or []) if _finite(v)]
        if vals:
            n = len(vals)
            xs = [i - 0.2 + 0.4 * (k + 0.5) / n for k in range(n)]
            ax.scatter(xs, vals, s=10, color="#222222", alpha=0.55, zorder=3)
    ax.set_xticks(range(len(entries)))
    ax.set_xticklabels([lab for lab, _, _ in entries], fontsize=8)
    hib = higher_is_better(metric)
    arrow = "" if hib is None else (" (higher is better)" if hib else " (lower is better)")
    ax.set_ylabel(_axis_label(metric) + arrow)
    ax.set_title(f"{set_name} set: {metric_label(metric)}, mean and 95% CI".strip(), fontsize=11)
    ax.grid(True, axis="y", alpha=0.3)
    return _png(fig)


VERDICT_COLORS = {"owned": "#2a9d5b", "not owned": "#c0392b", "undecided": "#b8860b"}


def sprt_trace_png(test: dict[str, Any], verdict: str, title: str | None = None) -> bytes:
    """:func:`sprt_trace_figure` as PNG bytes."""
    return _png(sprt_trace_figure(test, verdict, title))


def sprt_trace_figure(test: dict[str, Any], verdict: str, title: str | None = None):
    """The log-likelihood ratio of a sequential verification after each trigger, with its thresholds.

    ``test`` is a verify run's ``test`` record: ``trace`` (log LR after triggers 1..n),
    ``claim_at_log_lr`` and ``not_owned_at_log_lr``. The walk starts at 0 before the first
    trigger; a step up is a trigger answered with its secret label, a step down one answered
    otherwise. Raises :class:`CopymarkError` when the record lacks its thresholds.
    """
    trace = test.get("trace")
    upper, lower = test.get("claim_at_log_lr"), test.get("not_owned_at_log_lr")
    if not isinstance(trace, list) or not all(_finite(v) for v in trace) or not (_finite(upper) and _finite(lower)):
        raise CopymarkError(
            "verification test record: needs a numeric 'trace' and both thresholds",
            hint="rerun `copymark verify`",
        )
    xs = list(range(len(trace) + 1))
    ys = [0.0, *(float(v) for v in trace)]
    color = VERDICT_COLORS.get(verdict, _COLORS[0])
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    ax.axhline(float(upper), color=VERDICT_COLORS["owned"], linestyle="--", linewidth=1.3,
               label=f"claim \"owned\" at log(1/α) = {float(upper):.2f}")  # fmt: skip
    ax.axhline(float(lower), color=VERDICT_COLORS["not owned"], linestyle="--", linewidth=1.3,
               label=f"\"not owned\" at log β = {float(lower):.2f}")  # fmt: skip
    ax.axhline(0.0, color="#999999", linewidth=0.8)
    ax.plot(xs, ys, marker="o", markersize=3.5, color=color, linewidth=1.8, label="log likelihood ratio")
    ax.scatter([xs[-1]], [ys[-1]], s=60, color=color, zorder=4, label=f"verdict: {verdict} after {len(trace)}")
    ax.set_xlabel("triggers answered")
    ax.set_ylabel("log likelihood ratio (owned : innocent)")
    ax.set_xlim(0, max(1, len(trace)) * 1.04)
    span = max(float(upper), max(ys)) - min(float(lower), min(ys))
    ax.set_ylim(min(float(lower), min(ys)) - 0.08 * span, max(float(upper), max(ys)) + 0.08 * span)
    ax.set_title(title or "Sequential test: evidence after each trigger", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="best")
    return fig
