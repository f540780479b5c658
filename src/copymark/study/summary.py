"""Check a published user study from its summary statistics (``copymark study analyze --from-summary``).

Input: a small JSON (or CSV) file with, per setting, each model's mean, SD and n, optionally the
published figures (Welch p, the tightest TOST bound and its p) and the number of decimals the
means and SDs were published with. Format (JSON)::

    {"format": "copymark-study-summary-1", "source": "...", "decimals": 2,
     "settings": [{"name": "Monet-to-Photo",
                   "victim": {"mean": 3.20, "sd": 1.59, "n": 1250},
                   "surrogate": {"mean": 2.91, "sd": 1.76, "n": 1250},
                   "reported": {"welch_p": 1.8e-8, "tightest_bound": 0.38,
                                "tightest_bound_p": 0.04829, "bound_units": "unknown"}}]}

CSV: one row per setting with the columns ``setting, victim_mean, victim_sd, victim_n,
surrogate_mean, surrogate_sd, surrogate_n`` and optionally ``decimals, welch_p,
tightest_bound, tightest_bound_p, bound_units``.

Output per setting: Welch's t test and the TOST (bounds +/- ``bound_d`` in Cohen's d) at the
stated n, the tightest bound the data establish at ``alpha`` (raw and in d), the ranges these
take over the rounding of the published means and SDs, and for each published figure the group
size n that reproduces it (a range, over the rounding) and the n at which all figures agree.
``bound_units: "unknown"`` (the default) tries the published bound both as raw score points and
as Cohen's d.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from pydantic import Field

from copymark.config import StrictModel, parse_config
from copymark.errors import ConfigError, DataError
from copymark.files import read_json
from copymark.stats import Summary, TostResult, TTestResult, pooled_sd, tost_from_stats, ttest_from_stats
from copymark.stats.consistency import (
    n_for_tightest_bound,
    n_for_tost_p,
    n_for_welch_p,
    rounding_corners,
    tost_p,
    welch_log_p,
)
from copymark.study.analysis import json_safe

FORMAT = "copymark-study-summary-1"
CSV_REQUIRED = ["setting", "victim_mean", "victim_sd", "victim_n", "surrogate_mean", "surrogate_sd", "surrogate_n"]
CSV_OPTIONAL = ["participants", "decimals", "welch_p", "tightest_bound", "tightest_bound_p", "bound_units"]


class GroupSummary(StrictModel):
    mean: float
    sd: float = Field(gt=0)
    n: int = Field(ge=2)


class Reported(StrictModel):
    """Figures the study published, to check (all optional)."""

    welch_p: float | None = Field(default=None, gt=0, lt=1)
    tightest_bound: float | None = Field(default=None, gt=0)
    tightest_bound_p: float | None = Field(default=None, gt=0, lt=1)
    bound_units: Literal["raw", "d", "unknown"] = "unknown"


class SettingSummary(StrictModel):
    name: str = Field(min_length=1)
    victim: GroupSummary
    surrogate: GroupSummary
    participants: int | None = Field(default=None, ge=1)  # to express n as ratings per participant
    decimals: int | None = Field(default=None, ge=0, le=6)
    reported: Reported = Field(default_factory=Reported)


class SummaryFile(StrictModel):
    format: Literal["copymark-study-summary-1"] = FORMAT
    source: str = ""
    decimals: int | None = Field(default=None, ge=0, le=6)  # default for every setting
    settings: list[SettingSummary] = Field(min_length=1)


def _csv_file(path: Path) -> dict:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        missing = [c for c in CSV_REQUIRED if c not in cols]
        unknown = [c for c in cols if c not in CSV_REQUIRED + CSV_OPTIONAL]
        if missing or unknown:
            raise ConfigError(
                f"{path}: missing column(s) {missing}, unknown column(s) {unknown}",
                hint=f"columns: {', '.join(CSV_REQUIRED)} and optionally {', '.join(CSV_OPTIONAL)}",
            )
        settings = []
        for r in reader:
            reported = {k: r[k] for k in ("welch_p", "tightest_bound", "tightest_bound_p", "bound_units") if r.get(k)}
            s = {
                "name": r["setting"],
                "victim": {"mean": r["victim_mean"], "sd": r["victim_sd"], "n": r["victim_n"]},
                "surrogate": {"mean": r["surrogate_mean"], "sd": r["surrogate_sd"], "n": r["surrogate_n"]},
                "reported": reported,
            }
            for k in ("participants", "decimals"):
                if r.get(k):
                    s[k] = r[k]
            settings.append(s)
    return {"settings": settings}


def load_summary(path: str | Path) -> SummaryFile:
    """Read and validate a summary file (``.json`` or ``.csv``, see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"summary file not found: {p}", hint="a .json or .csv file of means, SDs and n per group")
    if p.suffix.lower() == ".csv":
        data = _csv_file(p)
        # CSV cells are text; let pydantic convert them (lax) before the strict model checks the rest
        for s in data["settings"]:
            for g in ("victim", "surrogate"):
                s[g] = {k: _number(v, f"{p}: {s['name']} {g} {k}") for k, v in s[g].items()}
            s["reported"] = {
                k: v if k == "bound_units" else _number(v, f"{p}: {s['name']} {k}") for k, v in s["reported"].items()
            }
            for k in ("participants", "decimals"):
                if k in s:
                    s[k] = _number(s[k], f"{p}: {s['name']} {k}")
    else:
        data = read_json(p, ConfigError)
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a JSON object with 'settings'")
    return parse_config(SummaryFile, data, where=str(p))


def _number(text: str, where: str) -> int | float:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {text[:40]!r} is not a number") from None
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() else v


# ---------------------------------------------------------------------------------------------


@dataclass
class FigureCheck:
    """One published figure and the group size n that reproduces it."""

    figure: str  # "welch_p", "tightest_bound", "tightest_bound_p"
    reading: str  # "raw" or "d" for bounds, "" for p values
    published: float
    at_stated_n: float  # what the published means and SDs give at the stated n
    at_stated_n_range: tuple[float, float]  # the same over the rounding of the means and SDs
    n: float | None  # n that reproduces it from the published (rounded) values
    n_range: tuple[float, float] | None  # over the rounding box; None if no n reproduces it


@dataclass
class SettingCheck:
    name: str
    participants: int | None
    victim: Summary
    surrogate: Summary
    decimals: int | None
    welch: TTestResult
    tost: TostResult
    welch_p_range: tuple[float, float]
    tightest_bound_range: tuple[float, float]
    tightest_bound_d_range: tuple[float, float]
    figures: list[FigureCheck] = field(default_factory=list)
    consistent_n: dict[str, tuple[float, float] | None] = field(default_factory=dict)  # per reading


@dataclass
class SummaryAnalysis:
    source: str
    alpha: float
    bound_d: float
    settings: list[SettingCheck]
    consistent_n: dict[str, tuple[float, float] | None]  # all settings together, per reading

    def as_dict(self) -> dict:
        return asdict(self)


def _range(values: list[float]) -> tuple[float, float]:
    return (min(values), max(values))


def _intersect(ranges: list[tuple[float, float] | None]) -> tuple[float, float] | None:
    if not ranges or any(r is None for r in ranges):
        return None
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)  # type: ignore[index]
    return (lo, hi) if lo <= hi else None


def _welch_p(a: Summary, b: Summary) -> float:
    return math.exp(welch_log_p(a, b))


def _tightest(a: Summary, b: Summary, *, alpha: float, in_d: bool) -> float:
    t = tost_from_stats(a, b, alpha=alpha)  # the tightest bound does not depend on the bound tested
    return t.tightest_bound_d if in_d else t.tightest_bound


def _tost_p_at(a: Summary, b: Summary, *, bound: float, in_d: bool) -> float:
    return tost_p(a, b, bound * pooled_sd(a.sd, a.n, b.sd, b.n) if in_d else bound)


def _figure(figure: str, reading: str, published: float, value, solve, corners) -> FigureCheck:
    """Check one published figure: ``value(a, b)`` computes it, ``solve(a, b)`` finds the n reproducing it;
    ``corners[0]`` holds the published summaries, the rest the corners of their rounding box."""
    values = [value(x, y) for x, y in corners]
    ns = [solve(x, y) for x, y in corners]
    n_range = None if any(n is None for n in ns) else _range(ns)
    return FigureCheck(figure, reading, published, values[0], _range(values), ns[0], n_range)


def check_setting(s: SettingSummary, *, decimals: int | None, bound_d: float, alpha: float) -> SettingCheck:
    a = Summary(s.victim.mean, s.victim.sd, s.victim.n)
    b = Summary(s.surrogate.mean, s.surrogate.sd, s.surrogate.n)
    ratio = b.n / a.n
    half = 0.5 * 10.0**-decimals if decimals is not None else 0.0
    corners = [(a, b), *(rounding_corners(a, b, half) if half > 0 else [])]
    tost = tost_from_stats(a, b, low_d=-bound_d, high_d=bound_d, alpha=alpha)
    check = SettingCheck(
        name=s.name,
        participants=s.participants,
        victim=a,
        surrogate=b,
        decimals=decimals,
        welch=ttest_from_stats(a, b, equal_var=False),
        tost=tost,
        welch_p_range=_range([_welch_p(x, y) for x, y in corners]),
        tightest_bound_range=_range([_tightest(x, y, alpha=alpha, in_d=False) for x, y in corners]),
        tightest_bound_d_range=_range([_tightest(x, y, alpha=alpha, in_d=True) for x, y in corners]),
    )
    rep = s.reported
    if rep.welch_p is not None:
        solve = partial(n_for_welch_p, p=rep.welch_p, ratio=ratio)
        check.figures.append(_figure("welch_p", "", rep.welch_p, _welch_p, solve, corners))
    readings = ["raw", "d"] if rep.bound_units == "unknown" else [rep.bound_units]
    for reading in readings if rep.tightest_bound is not None else []:
        in_d, bound = reading == "d", rep.tightest_bound
        value = partial(_tightest, alpha=alpha, in_d=in_d)
        solve = partial(n_for_tightest_bound, bound=bound, alpha=alpha, in_d=in_d, ratio=ratio)
        check.figures.append(_figure("tightest_bound", reading, bound, value, solve, corners))
        if rep.tightest_bound_p is not None:
            value = partial(_tost_p_at, bound=bound, in_d=in_d)
            solve = partial(n_for_tost_p, bound=bound, p=rep.tightest_bound_p, in_d=in_d, ratio=ratio)
            check.figures.append(_figure("tightest_bound_p", reading, rep.tightest_bound_p, value, solve, corners))
    if check.figures:
        for reading in readings:
            check.consistent_n[reading] = _intersect([f.n_range for f in check.figures if f.reading in ("", reading)])
    return check


def analyze_summary(summary: SummaryFile, *, bound_d: float = 0.3, alpha: float = 0.05) -> SummaryAnalysis:
    """Check every setting of ``summary`` (see the module docstring)."""
    if not 0 < alpha < 0.5:
        raise ConfigError(f"--alpha {alpha} must lie in (0, 0.5)")
    if bound_d <= 0:
        raise ConfigError(f"--bound-d {bound_d} must be > 0")
    checks = [
        check_setting(
            s, decimals=s.decimals if s.decimals is not None else summary.decimals, bound_d=bound_d, alpha=alpha
        )
        for s in summary.settings
    ]
    readings = [r for r in ("raw", "d") if any(r in c.consistent_n for c in checks)]
    overall = {r: _intersect([c.consistent_n.get(r) for c in checks if r in c.consistent_n]) for r in readings}
    return SummaryAnalysis(source=summary.source, alpha=alpha, bound_d=bound_d, settings=checks, consistent_n=overall)


# ---------------------------------------------------------------------------------------------
# output

FIGURE_NAMES = {
    "welch_p": "Welch p",
    "tightest_bound": "tightest TOST bound",
    "tightest_bound_p": "TOST p at that bound",
}


def _g(x: float) -> str:
    return f"{x:.3g}"


def _n(x: float | None) -> str:
    return "none" if x is None else f"{x:.0f}"


def _span(r: tuple[float, float] | None, fmt=_n) -> str:
    return "none" if r is None else f"{fmt(r[0])} - {fmt(r[1])}"


def figure_rows(c: SettingCheck) -> list[dict]:
    """The published-figure table of one setting, as display strings."""
    rows = []
    for f in c.figures:
        rows.append(
            {
                "figure": FIGURE_NAMES[f.figure]
                + (f" ({'raw points' if f.reading == 'raw' else 'Cohen d'})" if f.reading else ""),
                "published": f"{f.published:g}",
                "at_stated_n": f"{_g(f.at_stated_n)} [{_span(f.at_stated_n_range, _g)}]",
                "n": _n(f.n),
                "n_range": _span(f.n_range),
                "per_participant": (
                    _span((f.n_range[0] / c.participants, f.n_range[1] / c.participants), lambda x: f"{x:.1f}")
                    if f.n_range and c.participants
                    else ""
                ),
            }
        )
    return rows


def consistency_lines(an: SummaryAnalysis) -> list[str]:
    """One sentence per setting and reading, then one for all settings together."""
    out = []
    for c in an.settings:
        for reading, r in c.consistent_n.items():
            what = "bounds read as raw score points" if reading == "raw" else "bounds read as Cohen's d"
            out.append(
                f"{c.name} ({what}): every published figure is reproduced at n per model in {_span(r)}"
                if r
                else f"{c.name} ({what}): no single n reproduces every published figure"
            )
    for reading, r in an.consistent_n.items():
        what = "raw score points" if reading == "raw" else "Cohen's d"
        out.append(
            f"All settings, bounds as {what}: n per model in {_span(r)}"
            if r
            else f"All settings, bounds as {what}: no common n"
        )
    return out


def render_summary_markdown(an: SummaryAnalysis) -> str:
    lines = ["# Published user study, checked from its summary statistics", ""]
    if an.source:
        lines += [f"Source: {an.source}", ""]
    lines += [
        f"Welch's t test; TOST with bounds d = +/-{an.bound_d:g} (Welch SE), alpha = {an.alpha:g}; the tightest bound "
        f"is the smallest symmetric bound the TOST establishes at alpha (there its p equals alpha). Ranges in "
        f"brackets span the rounding of the published means and SDs. n is per model (group).",
        "",
    ]
    for c in an.settings:
        t, w = c.tost, c.welch
        lines += [f"## {c.name}", "", "| model | mean | SD | n |", "|---|---|---|---|"]
        nd = c.decimals
        for label, g in (("victim", c.victim), ("surrogate", c.surrogate)):
            mean, sd = (f"{g.mean:.{nd}f}", f"{g.sd:.{nd}f}") if nd is not None else (f"{g.mean:g}", f"{g.sd:g}")
            lines.append(f"| {label} | {mean} | {sd} | {g.n} |")
        rounding = f" (published to {c.decimals} decimals)" if c.decimals is not None else ""
        lines += [
            "",
            f"At the stated n{rounding}:",
            "",
            f"- Welch: difference {w.diff:+.3f}, t({w.df:.1f}) = {w.t:.3f}, p = {_g(w.p)} "
            f"[{_span(c.welch_p_range, _g)}]",
            f"- TOST, bounds d = +/-{an.bound_d:g} = raw +/-{t.high:.3f}: p = {_g(t.p)} -> "
            f"**{'equivalent' if t.equivalent else 'not equivalent'}**",
            f"- tightest bound at alpha = {an.alpha:g}: raw +/-{t.tightest_bound:.3f} "
            f"[{_span(c.tightest_bound_range, lambda x: f'{x:.3f}')}], d +/-{t.tightest_bound_d:.3f} "
            f"[{_span(c.tightest_bound_d_range, lambda x: f'{x:.3f}')}]",
            "",
        ]
        rows = figure_rows(c)
        if rows:
            per = f" | per participant ({c.participants})" if c.participants else ""
            lines += [
                "| published figure | value | at the stated n | n reproducing it | n over the rounding" + per + " |",
                "|---|---|---|---|---|" + ("---|" if per else ""),
            ]
            for r in rows:
                lines.append(
                    f"| {r['figure']} | {r['published']} | {r['at_stated_n']} | {r['n']} | {r['n_range']} |"
                    + (f" {r['per_participant']} |" if per else "")
                )
            lines.append("")
    lines += ["## Consistency", ""] + [f"- {s}" for s in consistency_lines(an)] + [""]
    return "\n".join(lines)


def render_summary_html(an: SummaryAnalysis) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")), autoescape=True)
    return env.get_template("summary.html").render(
        an=an, rows={c.name: figure_rows(c) for c in an.settings}, lines=consistency_lines(an), g=_g, span=_span
    )


def write_summary_report(an: SummaryAnalysis, out_dir: str | Path) -> dict[str, Path]:
    """Write summary_check.md, .html and .json into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out / "summary_check.md",
        "html": out / "summary_check.html",
        "json": out / "summary_check.json",
    }
    paths["markdown"].write_text(render_summary_markdown(an))
    paths["html"].write_text(render_summary_html(an))
    paths["json"].write_text(json.dumps(json_safe(an.as_dict()), indent=2, allow_nan=False) + "\n")
    return paths
