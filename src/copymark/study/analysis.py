"""Analysis of user-study ratings: the victim vs surrogate comparison of the extraction paper.

Input: the export CSV (``copymark study export`` / admin download / ``copymark study simulate``)
or a study folder (its ``responses.sqlite`` is read directly). Attention-check rows are
excluded from the comparison and reported separately; optionally participants who failed any
check are dropped too.

Reported: per-model mean, SD, n (and participants); Welch's t test; a TOST equivalence test with
bounds in Cohen's d (default +/-0.3) converted to raw scale points with the pooled SD, with both
one-sided p values and the 90 % CI of the difference; a power analysis (achieved power, ratings
and participants needed, smallest bound establishable with the requested power); a per-image
breakdown; the tightest equivalence bound the data establish at ``alpha`` (raw and in d, as the
paper reports it); plots of the score distributions (the paper's Figures 6-7: per-model
histograms with the means marked) and, when the study asked the optional demographic
questions, their distribution over the analysed participants (its Figure 5). As in the paper,
every rating counts as one observation (ratings of one participant are not independent; the
participant-level means are also reported as a check).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from copymark.errors import DataError
from copymark.stats import (
    Summary,
    TostResult,
    TTestResult,
    summarize,
    tost_from_stats,
    tost_ind_n,
    tost_ind_power,
    tost_min_bound,
    tost_one_sample,
    ttest_from_stats,
    ttest_ind_n,
)
from copymark.study import demographics as demo
from copymark.study.design import DB_FILE, STUDY_FILE, load_study
from copymark.study.store import StudyStore, read_csv, read_demographics_csv


def load_ratings(path: str | Path) -> list[dict]:
    """Rows in the export schema from a CSV file or a study folder."""
    p = Path(path)
    if p.is_dir():
        if not (p / STUDY_FILE).is_file():
            raise DataError(f"{p} is neither a ratings CSV nor a study folder (no {STUDY_FILE})")
        if not (p / DB_FILE).is_file():
            raise DataError(
                f"study {p} has no answers yet ({DB_FILE} missing)", hint="run `copymark study serve` first"
            )
        return StudyStore(p, load_study(p)).rows()
    return read_csv(p)


def load_demographics(path: str | Path) -> tuple[list[str], list[dict]]:
    """``(questions, rows)`` of the demographic answers of a study folder or a demographics CSV.

    A study folder gives the questions it asks (none: ``([], [])``); a CSV the questions it holds.
    """
    p = Path(path)
    if p.is_dir():
        if not (p / DB_FILE).is_file():
            return load_study(p).demographics, []
        cfg = load_study(p)
        return cfg.demographics, StudyStore(p, cfg).demographic_rows()
    rows = read_demographics_csv(p)
    present = {r["question"] for r in rows}
    return [q for q in demo.QUESTIONS if q in present], rows


@dataclass
class GroupStats:
    model: str
    n: int
    mean: float
    sd: float
    participants: int
    counts: list[int]  # how many ratings of 1..5


@dataclass
class PowerReport:
    alpha: float
    target_power: float
    bound_d: float
    achieved_tost_power: float
    ratings_per_model_needed: int
    ratings_per_model_per_participant: float
    participants_needed: int
    ttest_ratings_per_model_for_bound: int
    min_bound_d_at_target_power: float


@dataclass
class StudyAnalysis:
    groups: dict[str, GroupStats]
    welch: TTestResult
    tost: TostResult
    power: PowerReport
    per_image: list[dict]
    participant_level: dict
    attention: dict
    exclusions: dict
    settings: dict
    verdict: str = ""
    notes: list[str] = field(default_factory=list)
    demographics: dict[str, dict[str, int]] = field(default_factory=dict)  # question -> answer -> participants

    def as_dict(self) -> dict:
        d = asdict(self)
        return d


def _group(rows: list[dict], model: str) -> GroupStats:
    scores = np.array([r["score"] for r in rows if r["model"] == model], dtype=float)
    if scores.size < 2:
        raise DataError(f"only {scores.size} rating(s) of the {model} model; need at least 2 per model to analyse")
    s = summarize(scores, model)
    counts = [int(np.sum(scores == k)) for k in range(1, 6)]
    return GroupStats(
        model=model,
        n=s.n,
        mean=s.mean,
        sd=s.sd,
        participants=len({r["participant"] for r in rows if r["model"] == model}),
        counts=counts,
    )


def analyze_ratings(
    rows: list[dict],
    *,
    bound_d: float = 0.3,
    alpha: float = 0.05,
    power: float = 0.8,
    usevar: str = "unequal",
    drop_inattentive: bool = False,
    complete_only: bool = False,
    demographics: tuple[list[str], list[dict]] | None = None,
) -> StudyAnalysis:
    """Full victim-vs-surrogate analysis of ``rows`` (export schema). Difference = victim - surrogate.

    ``demographics``: ``(questions, rows)`` from :func:`load_demographics`; their counts are taken
    over the participants whose ratings are analysed (after the exclusions).
    """
    if not rows:
        raise DataError("no ratings to analyse")
    excl = {"rows_total": len(rows)}
    att_rows = [r for r in rows if r["model"] == "attention"]
    failed = sorted(
        {r["participant"] for r in att_rows if r["expected_score"] != "" and r["score"] != r["expected_score"]}, key=str
    )
    attention = {
        "checks": len(att_rows),
        "passed": sum(1 for r in att_rows if r["score"] == r["expected_score"]),
        "participants_checked": len({r["participant"] for r in att_rows}),
        "participants_failed": len(failed),
    }
    data = [r for r in rows if r["model"] in ("victim", "surrogate")]
    if complete_only:
        before = {r["participant"] for r in data}
        data = [r for r in data if int(r.get("completed", 1)) == 1]
        excl["participants_incomplete_dropped"] = len(before - {r["participant"] for r in data})
    if drop_inattentive:
        data = [r for r in data if r["participant"] not in set(failed)]
        excl["participants_inattentive_dropped"] = len(failed)
    excl["ratings_analysed"] = len(data)
    v, s = _group(data, "victim"), _group(data, "surrogate")
    sv, ss = Summary(v.mean, v.sd, v.n), Summary(s.mean, s.sd, s.n)
    welch = ttest_from_stats(sv, ss, equal_var=False)
    tost = tost_from_stats(sv, ss, low_d=-bound_d, high_d=bound_d, alpha=alpha, usevar=usevar)  # type: ignore[arg-type]

    # power analysis (the rating as the unit, as in the test above)
    per_part = {}
    for r in data:
        per_part.setdefault(r["participant"], {"victim": 0, "surrogate": 0})[r["model"]] += 1
    k = float(np.mean([c["victim"] for c in per_part.values()])) if per_part else 1.0
    k = max(k, 1e-9)
    ratio = s.n / v.n
    n_needed = math.ceil(tost_ind_n(bound_d, alpha=alpha, power=power))
    pw = PowerReport(
        alpha=alpha,
        target_power=power,
        bound_d=bound_d,
        achieved_tost_power=tost_ind_power(-bound_d, bound_d, v.n, alpha=alpha, ratio=ratio),
        ratings_per_model_needed=n_needed,
        ratings_per_model_per_participant=k,
        participants_needed=math.ceil(n_needed / k),
        ttest_ratings_per_model_for_bound=math.ceil(ttest_ind_n(bound_d, alpha=alpha, power=power)),
        min_bound_d_at_target_power=tost_min_bound(v.n, alpha=alpha, power=power, ratio=ratio),
    )

    # per image (one row per input and model)
    per: dict[tuple[str, str], list[int]] = {}
    for r in data:
        per.setdefault((r["input_id"] or r["item_id"], r["model"]), []).append(r["score"])
    per_image = []
    for (inp, model), sc in sorted(per.items()):
        a = np.asarray(sc, dtype=float)
        per_image.append(
            {
                "input_id": inp,
                "model": model,
                "n": int(a.size),
                "mean": float(a.mean()),
                "sd": float(a.std(ddof=1)) if a.size > 1 else float("nan"),
            }
        )

    # participant level: mean victim - mean surrogate per participant who rated both
    by_part: dict[object, dict[str, list[int]]] = {}
    for r in data:
        by_part.setdefault(r["participant"], {"victim": [], "surrogate": []})[r["model"]].append(r["score"])
    diffs = [np.mean(g["victim"]) - np.mean(g["surrogate"]) for g in by_part.values() if g["victim"] and g["surrogate"]]
    part: dict = {"participants": len(diffs)}
    if len(diffs) >= 2 and np.std(diffs) > 0:
        pt = tost_one_sample(diffs, tost.low, tost.high, alpha=alpha)
        part.update(
            {
                "mean_diff": pt.mean,
                "sd_diff": pt.sd,
                "ci": list(pt.ci),
                "p_low": pt.p_low,
                "p_high": pt.p_high,
                "p": pt.p,
                "equivalent": pt.equivalent,
                "ci_inside_bounds": pt.equivalent,
            }
        )

    analysed = {r["participant"] for r in data}
    demo_counts = demo.counts(demographics[1], demographics[0], analysed) if demographics else {}
    verdict = "Verdict: " + tost.verdict() + f". Welch's t test: t({welch.df:.1f}) = {welch.t:.3f}, p = {welch.p:.4g}."
    notes = []
    if not tost.equivalent and welch.p >= alpha:
        notes.append(
            "Neither a difference nor equivalence is established: the result is inconclusive; "
            f"about {pw.participants_needed} participants would give {power:.0%} power for the TOST."
        )
    return StudyAnalysis(
        groups={"victim": v, "surrogate": s},
        welch=welch,
        tost=tost,
        power=pw,
        per_image=per_image,
        participant_level=part,
        attention=attention,
        exclusions=excl,
        settings={
            "bound_d": bound_d,
            "alpha": alpha,
            "power": power,
            "usevar": usevar,
            "drop_inattentive": drop_inattentive,
            "complete_only": complete_only,
        },
        verdict=verdict,
        notes=notes,
        demographics=demo_counts,
    )


# ---------------------------------------------------------------------------------------------
# output


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


COLORS = {"victim": "#1f77b4", "surrogate": "#ff7f0e"}


def plot_distributions(an: StudyAnalysis, path: Path) -> Path:
    """Bar chart of the score distribution per model with the means as vertical lines (cf. paper Figs 6-7)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    x = np.arange(1, 6)
    w = 0.38
    for i, (m, g) in enumerate(an.groups.items()):
        frac = np.asarray(g.counts) / max(1, g.n)
        ax.bar(
            x + (i - 0.5) * w, frac, width=w, label=f"{m} (n={g.n}, mean={g.mean:.2f}, sd={g.sd:.2f})", color=COLORS[m]
        )
        ax.axvline(g.mean, color=COLORS[m], linestyle="--", linewidth=1.5)
    top = max(max(g.counts) / max(1, g.n) for g in an.groups.values())
    ax.set_ylim(0, top * 1.45 + 1e-9)  # room for the legend above the bars
    ax.set_xticks(x)
    ax.set_xlabel("score")
    ax.set_ylabel("fraction of ratings")
    ax.set_title("Score distribution per model (dashed: means)")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def score_histogram_figure(an: StudyAnalysis):
    """One histogram of the 1-5 scores per model, its mean as a vertical line (the paper's Figures 6-7)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(an.groups), figsize=(4.2 * len(an.groups), 3.4), dpi=120, sharey=True)
    for ax, (m, g) in zip(np.atleast_1d(axes), an.groups.items()):
        ax.bar(np.arange(1, 6), g.counts, width=0.8, color=COLORS[m], label="ratings")
        ax.axvline(g.mean, color="black", linestyle="--", linewidth=1.5, label=f"mean = {g.mean:.2f}")
        ax.set_xticks(np.arange(1, 6))
        ax.set_xlabel("score")
        ax.set_title(f"{m}: mean = {g.mean:.2f}, std = {g.sd:.2f}, n = {g.n}", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
    np.atleast_1d(axes)[0].set_ylabel("ratings")
    fig.tight_layout()
    return fig


def demographics_figure(counts: dict[str, dict[str, int]]):
    """One bar chart per demographic question: participants per answer (the paper's Figure 5)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 3.6), dpi=120)
    for ax, (q, c) in zip(np.atleast_1d(axes), counts.items()):
        spec = demo.QUESTIONS[q]
        labels = [spec.label(v) for v in c]
        ax.barh(np.arange(len(c)), list(c.values()), color="#4c72b0")
        ax.set_yticks(np.arange(len(c)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("participants")
        ax.set_title(f"{spec.legend} (n = {sum(c.values())})", fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> Path:
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def plot_per_image(an: StudyAnalysis, path: Path) -> Path:
    """Per-input mean score of each model (inputs sorted by name)."""
    plt = _pyplot()
    inputs = sorted({r["input_id"] for r in an.per_image})
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(inputs) + 2), 3.6), dpi=120)
    for m, mk, c in (("victim", "o", "#1f77b4"), ("surrogate", "s", "#ff7f0e")):
        pts = {r["input_id"]: r["mean"] for r in an.per_image if r["model"] == m}
        xs = [i for i, k in enumerate(inputs) if k in pts]
        ax.plot(xs, [pts[inputs[i]] for i in xs], mk, label=m, color=c, alpha=0.8)
    ax.set_ylim(0.8, 5.2)
    ax.set_xlabel("input (sorted by name)")
    ax.set_ylabel("mean score")
    ax.set_title("Mean score per input and model")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(x: float, nd: int = 3) -> str:
    return "nan" if x != x else f"{x:.{nd}f}"


def render_markdown(an: StudyAnalysis, plots: dict[str, str]) -> str:
    t, w, p = an.tost, an.welch, an.power
    ci_pct = round(100 * (1 - 2 * t.alpha))
    lines = ["# User study analysis: victim vs surrogate", "", f"**{an.verdict}**", ""]
    lines += [
        "## Ratings per model",
        "",
        "| model | n | participants | mean | SD | 1 | 2 | 3 | 4 | 5 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in an.groups.values():
        lines.append(
            f"| {g.model} | {g.n} | {g.participants} | {_fmt(g.mean)} | {_fmt(g.sd)} | "
            + " | ".join(str(c) for c in g.counts)
            + " |"
        )
    lines += [
        "",
        "## Welch's t test (victim - surrogate)",
        "",
        f"difference = {_fmt(w.diff)}, t({w.df:.1f}) = {_fmt(w.t)}, p = {w.p:.4g}, "
        f"95% CI [{_fmt(w.ci[0])}, {_fmt(w.ci[1])}]",
        "",
        "## TOST equivalence test",
        "",
        f"- bounds: Cohen's d [{t.low_d:+g}, {t.high_d:+g}] = raw [{_fmt(t.low)}, {_fmt(t.high)}] "
        f"(pooled SD {_fmt(t.sd_pooled)}); standard error: {'Welch' if t.usevar == 'unequal' else 'pooled'}",
        f"- observed difference {_fmt(t.diff)} (Cohen's d {_fmt(t.cohens_d)})",
        f"- lower test (H0: diff <= {_fmt(t.low)}): t({t.df:.1f}) = {_fmt(t.t_low)}, p = {t.p_low:.4g}",
        f"- upper test (H0: diff >= {_fmt(t.high)}): t({t.df:.1f}) = {_fmt(t.t_high)}, p = {t.p_high:.4g}",
        f"- {ci_pct}% CI of the difference: [{_fmt(t.ci[0])}, {_fmt(t.ci[1])}]",
        f"- TOST p = {t.p:.4g}, alpha = {t.alpha:g}: **{'equivalent' if t.equivalent else 'not equivalent'}**",
        f"- tightest bound established at alpha = {t.alpha:g}: raw [{-t.tightest_bound:+.3f}, {t.tightest_bound:+.3f}]"
        f" = Cohen's d [{-t.tightest_bound_d:+.3f}, {t.tightest_bound_d:+.3f}] (any wider symmetric bound is "
        "established, any narrower one is not)",
        "",
        "## Power analysis",
        "",
        f"- achieved power of this TOST (true d = 0, bounds +/-{p.bound_d:g}, alpha {p.alpha:g}): "
        f"{p.achieved_tost_power:.3f}",
        f"- ratings per model needed for {p.target_power:.0%} TOST power: {p.ratings_per_model_needed}; "
        f"at {p.ratings_per_model_per_participant:.1f} ratings per model per participant that is "
        f"**{p.participants_needed} participants**",
        f"- ratings per model needed for a t test to detect d = {p.bound_d:g} with {p.target_power:.0%} power: "
        f"{p.ttest_ratings_per_model_for_bound}",
        f"- smallest equivalence bound establishable with {p.target_power:.0%} power at this n: "
        f"d = +/-{p.min_bound_d_at_target_power:.3f}",
        "",
    ]
    pl = an.participant_level
    if "mean_diff" in pl:
        lines += [
            "## Participant-level check",
            "",
            f"{pl['participants']} participants rated both models; mean of their (victim - surrogate) "
            f"differences {_fmt(pl['mean_diff'])}, {ci_pct}% CI [{_fmt(pl['ci'][0])}, {_fmt(pl['ci'][1])}]; "
            f"paired TOST against the same raw bounds: p_low = {pl['p_low']:.4g}, p_high = {pl['p_high']:.4g} "
            f"-> {'equivalent' if pl['equivalent'] else 'not equivalent'}. This check treats the participant, "
            "not the rating, as the unit.",
            "",
        ]
    a = an.attention
    lines += [
        "## Attention checks and exclusions",
        "",
        f"- attention checks answered: {a['checks']}, passed: {a['passed']}; "
        f"participants who failed at least one: {a['participants_failed']} of {a['participants_checked']} checked",
        "- " + ", ".join(f"{k}: {v}" for k, v in an.exclusions.items()),
        "",
    ]
    for n in an.notes:
        lines += [f"> {n}", ""]
    if an.demographics:
        lines += ["## Participants (optional questions)", "", "| question | answer | participants |", "|---|---|---|"]
        for q, c in an.demographics.items():
            spec = demo.QUESTIONS[q]
            lines += [f"| {spec.legend} | {spec.label(v)} | {k} |" for v, k in c.items()]
        lines.append("")
    lines += ["## Plots", ""] + [f"![{k}]({v})" for k, v in plots.items()] + [""]
    lines += ["## Per image", "", "| input | model | n | mean | SD |", "|---|---|---|---|---|"]
    for r in an.per_image:
        lines.append(f"| {r['input_id']} | {r['model']} | {r['n']} | {_fmt(r['mean'], 2)} | {_fmt(r['sd'], 2)} |")
    return "\n".join(lines) + "\n"


def render_html(an: StudyAnalysis, plots: dict[str, str]) -> str:
    """A standalone HTML page of the same report (Jinja2, autoescaped)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")), autoescape=True)
    return env.get_template("analysis.html").render(
        an=an, plots=plots, fmt=_fmt, ci_pct=round(100 * (1 - 2 * an.tost.alpha)), questions=demo.QUESTIONS
    )


def json_safe(x):
    """NaN/inf -> None and tuples -> lists, so analysis.json is strict JSON."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_report(an: StudyAnalysis, out_dir: str | Path) -> dict[str, Path]:
    """Write analysis.md, analysis.html, analysis.json, per_image.csv and the plots into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = {
        "score distributions": "scores.png",
        "score histograms per model": "score_histograms.png",
        "per-image means": "per_image.png",
    }
    plot_distributions(an, out / plots["score distributions"])
    save_figure(score_histogram_figure(an), out / plots["score histograms per model"])
    plot_per_image(an, out / plots["per-image means"])
    if an.demographics:
        plots["participants (optional questions)"] = "demographics.png"
        save_figure(demographics_figure(an.demographics), out / plots["participants (optional questions)"])
    paths = {
        "markdown": out / "analysis.md",
        "html": out / "analysis.html",
        "json": out / "analysis.json",
        "per_image": out / "per_image.csv",
    }
    paths["markdown"].write_text(render_markdown(an, plots))
    paths["html"].write_text(render_html(an, plots))
    paths["json"].write_text(json.dumps(json_safe(an.as_dict()), indent=2, allow_nan=False) + "\n")
    with paths["per_image"].open("w") as f:
        f.write("input_id,model,n,mean,sd\n")
        for r in an.per_image:
            f.write(f"{r['input_id']},{r['model']},{r['n']},{r['mean']:.6g},{r['sd']:.6g}\n")
    paths.update({k: out / v for k, v in plots.items()})
    return paths
