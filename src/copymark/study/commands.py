"""CLI commands of the user study (registered by copymark.cli): ``copymark study ...``.

create -> invite -> serve -> export -> analyze; simulate makes planning data in the export schema;
``analyze --from-summary`` checks a published study from its means, SDs and n.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

ADMIN_ENV = "COPYMARK_STUDY_ADMIN_PASSWORD"

study_app = typer.Typer(
    help="User study of victim vs surrogate images: create, invite, serve, export, analyze, simulate, power.",
    no_args_is_help=True,
)


@study_app.command("create")
def create(
    victim_dir: Path = typer.Option(..., "--victim-dir", help="victim outputs, one image per input"),
    surrogate_dir: Path = typer.Option(..., "--surrogate-dir", help="surrogate outputs, same file names (stems)"),
    style_examples: Path = typer.Option(
        ..., "--style-examples", help="images of the target style for the instructions"
    ),
    out: Path = typer.Option(..., "--out", help="new study folder"),
    per_participant: int = typer.Option(20, "--per-participant", help="images per participant (even: half per model)"),
    seed: int = typer.Option(0, "--seed", help="seed of every participant's sample and order"),
    attention_checks: int = typer.Option(0, "--attention-checks", help="instructed-response checks per participant"),
    input_dir: Path | None = typer.Option(
        None, "--input-dir", help="optional original inputs, shown beside each output"
    ),
    title: str = typer.Option("Image style study", "--title"),
    question: str = typer.Option("How well does this image show the target style?", "--question"),
    demographics: str = typer.Option(
        "",
        "--demographics",
        help="optional questions to ask, comma-separated, from: gender, age, education (fixed choices, never "
        "required, no free text); default: none",
    ),
) -> None:
    """Create a study folder from two folders of paired outputs."""
    from copymark.study.demographics import parse_question_list
    from copymark.study.design import create_study

    cfg = create_study(
        victim_dir,
        surrogate_dir,
        style_examples,
        out,
        per_participant=per_participant,
        seed=seed,
        attention_checks=attention_checks,
        input_dir=input_dir,
        title=title,
        question=question,
        demographics=parse_question_list(demographics),
    )
    typer.echo(
        f"created study {out}: {len(cfg.inputs)} inputs, {len(cfg.examples)} style examples, "
        f"{cfg.per_participant} images + {cfg.attention_checks} attention checks per participant"
        + (f"; optional questions: {', '.join(cfg.demographics)}" if cfg.demographics else "")
    )


@study_app.command("invite")
def invite(
    count: int = typer.Option(..., "--count", help="how many participant ids to make"),
    out: Path = typer.Option(..., "--out", help="new text file: one id per line (for serve --participant-ids)"),
    base_url: str = typer.Option("", "--base-url", help="if given, also write OUT.links.txt: BASE_URL/?pid=ID"),
) -> None:
    """Make random participant ids (64 bits each), one personal link per invited person."""
    from copymark.errors import ConfigError
    from copymark.files import atomic_write_bytes
    from copymark.study.access import new_participant_ids

    links = out.with_name(out.name + ".links.txt")
    for p in (out, links) if base_url else (out,):
        if p.exists():
            raise ConfigError(f"{p} already exists", hint="choose a new --out; ids already sent must not be replaced")
    ids = new_participant_ids(count)
    atomic_write_bytes(out, ("\n".join(ids) + "\n").encode())
    if base_url:
        atomic_write_bytes(links, "".join(f"{base_url.rstrip('/')}/?pid={i}\n" for i in ids).encode())
    typer.echo(f"wrote {len(ids)} participant ids to {out}" + (f" and their links to {links}" if base_url else ""))


@study_app.command("serve")
def serve(
    study: Path = typer.Argument(..., help="study folder (from `copymark study create`)"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    admin_password: str | None = typer.Option(
        None, "--admin-password", help=f"password of the admin pages (user 'admin'); default ${ADMIN_ENV}"
    ),
    secure_cookie: bool = typer.Option(False, "--secure-cookie", help="mark the session cookie Secure (behind HTTPS)"),
    participant_ids: Path | None = typer.Option(
        None,
        "--participant-ids",
        help="only these participant ids may take part (one per line, e.g. from `copymark study invite`), "
        "each once, through /?pid=ID",
    ),
    open_access: bool = typer.Option(
        False, "--open", help="anyone with the link may take part, no id needed (one person can take part again)"
    ),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve the study web app (participants at /, admin at /admin).

    By default every link must carry a participant id (`/?pid=ID`, e.g. the one a recruiting panel
    appends) and each id takes part once; `--participant-ids FILE` admits only listed ids; `--open`
    admits anyone.
    """
    import secrets

    import uvicorn

    from copymark.errors import ConfigError
    from copymark.study.access import ParticipantAccess
    from copymark.study.app import create_app

    if participant_ids is not None and open_access:
        raise ConfigError("--participant-ids and --open exclude each other", hint="choose one way to admit people")
    if participant_ids is not None:
        access = ParticipantAccess.from_file(participant_ids)
    else:
        access = ParticipantAccess.open() if open_access else ParticipantAccess.panel()
    password = admin_password or os.environ.get(ADMIN_ENV)
    if not password:
        password = secrets.token_urlsafe(12)
        typer.echo(f"no admin password given; generated one for this run: {password}", err=True)
    app_ = create_app(study, password, secure_cookie=secure_cookie, access=access)
    typer.echo(f"study at http://{host}:{port}/  (admin: http://{host}:{port}/admin, user 'admin')", err=True)
    typer.echo(f"who may take part: {access.describe()}", err=True)
    uvicorn.run(app_, host=host, port=port, log_level=log_level)


@study_app.command("export")
def export(
    study: Path = typer.Argument(..., help="study folder"),
    out: Path = typer.Option(..., "--out", help="CSV file to write"),
    demographics_out: Path | None = typer.Option(
        None, "--demographics-out", help="also write the optional demographic answers (participant,question,answer)"
    ),
) -> None:
    """Write all answers of a study as CSV (the schema `analyze` and `simulate` use)."""
    from copymark.files import atomic_write_bytes
    from copymark.study.analysis import load_demographics, load_ratings
    from copymark.study.store import demographics_to_csv, rows_to_csv

    rows = load_ratings(study)
    atomic_write_bytes(out, rows_to_csv(rows).encode())
    typer.echo(f"wrote {len(rows)} answers to {out}")
    if demographics_out is not None:
        _, demo_rows = load_demographics(study)
        atomic_write_bytes(demographics_out, demographics_to_csv(demo_rows).encode())
        typer.echo(f"wrote {len(demo_rows)} demographic answers to {demographics_out}")


@study_app.command("simulate")
def simulate(
    participants: int = typer.Option(125, "--participants"),
    effect: float = typer.Option(0.0, "--effect", help="true Cohen's d of victim - surrogate (latent scale)"),
    out: Path = typer.Option(..., "--out", help="CSV file to write"),
    per_participant: int = typer.Option(20, "--per-participant"),
    inputs: int = typer.Option(40, "--inputs", help="size of the input pool"),
    attention_checks: int = typer.Option(0, "--attention-checks"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Simulate responses for planning; the CSV is what `analyze` reads."""
    from copymark.study.simulate import write_simulation

    p = write_simulation(
        out,
        participants=participants,
        effect_d=effect,
        per_participant=per_participant,
        n_inputs=inputs,
        attention_checks=attention_checks,
        seed=seed,
    )
    typer.echo(f"wrote simulated answers of {participants} participants to {p}")


@study_app.command("analyze")
def analyze(
    source: Path | None = typer.Argument(None, help="study folder or ratings CSV (or use --from-summary)"),
    from_summary: Path | None = typer.Option(
        None,
        "--from-summary",
        help="check a published study from its means, SDs and n per group (JSON or CSV; see copymark.study.summary)",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="new report/run folder (default: STUDY/analysis/analyze-TIME or FILE-analysis/analyze-TIME)",
    ),
    bound_d: float = typer.Option(0.3, "--bound-d", help="equivalence bounds +/- this Cohen's d"),
    alpha: float = typer.Option(0.05, "--alpha"),
    power: float = typer.Option(0.8, "--power", help="target power for the sample-size analysis"),
    equal_var: bool = typer.Option(False, "--equal-var", help="pooled-variance TOST instead of Welch"),
    drop_inattentive: bool = typer.Option(False, "--drop-inattentive", help="drop participants who failed a check"),
    complete_only: bool = typer.Option(False, "--complete-only", help="only participants who finished"),
    demographics: Path | None = typer.Option(
        None, "--demographics", help="demographics CSV for a ratings CSV (a study folder has its own)"
    ),
) -> None:
    """Welch t test, TOST equivalence (Cohen's d bounds), tightest bound, power, per-image table, plots.

    Writes a run folder (config.json, env.json, metrics.json, log.txt) holding the report files
    (Markdown + HTML + JSON). With `--from-summary FILE` it checks published summary statistics
    instead: Welch and TOST at the stated n, the tightest bound, and the n that reproduces each
    published figure.
    """
    from copymark.errors import ConfigError

    if (source is None) == (from_summary is None):
        raise ConfigError(
            "give either a study folder / ratings CSV or --from-summary FILE",
            hint="copymark study analyze STUDY_DIR | RATINGS.csv | --from-summary SUMMARY.json",
        )
    if from_summary is not None:
        if equal_var or drop_inattentive or complete_only or demographics is not None:
            raise ConfigError("--equal-var, --drop-inattentive, --complete-only and --demographics need raw ratings")
        _analyze_summary(from_summary, out, bound_d=bound_d, alpha=alpha)
        return
    assert source is not None
    if demographics is not None and source.is_dir():
        raise ConfigError("--demographics is for a ratings CSV; a study folder's own answers are used")
    _analyze_ratings(
        source,
        out,
        bound_d=bound_d,
        alpha=alpha,
        power=power,
        usevar="pooled" if equal_var else "unequal",
        drop_inattentive=drop_inattentive,
        complete_only=complete_only,
        demographics=demographics,
    )


def _default_out(source: Path) -> Path:
    from copymark.runs import new_run_dir

    base = source / "analysis" if source.is_dir() else source.with_name(source.stem + "-analysis")
    return new_run_dir(base, "analyze")


def _analyze_ratings(source: Path, out: Path | None, *, demographics: Path | None, **settings) -> None:
    """``settings``: bound_d, alpha, power, usevar, drop_inattentive, complete_only (of analyze_ratings)."""
    from copymark.runs import create_run
    from copymark.study.analysis import analyze_ratings, load_demographics, load_ratings, write_report

    rows = load_ratings(source)
    demo_source = demographics if demographics is not None else source if source.is_dir() else None
    demo = load_demographics(demo_source) if demo_source is not None else None
    an = analyze_ratings(rows, demographics=demo, **settings)  # validated before the run folder is made
    out = out or _default_out(source)
    config = {"kind": "study-analyze", "source": str(source), "demographics": str(demographics or ""), **settings}
    run = create_run(out, config)
    paths = write_report(an, out)
    t, g = an.tost, an.groups
    run.update_metrics(
        {
            **{m: {"n": g[m].n, "mean": g[m].mean, "sd": g[m].sd} for m in ("victim", "surrogate")},
            "welch": {"t": an.welch.t, "df": an.welch.df, "p": an.welch.p},
            "tost": {
                "p_low": t.p_low,
                "p_high": t.p_high,
                "p": t.p,
                "ci": list(t.ci),
                "low": t.low,
                "high": t.high,
                "equivalent": t.equivalent,
                "tightest_bound": t.tightest_bound,
                "tightest_bound_d": t.tightest_bound_d,
            },
            "participants_needed": an.power.participants_needed,
            "demographics": an.demographics,
        }
    )
    run.log("%s", an.verdict)
    for grp in g.values():
        typer.echo(f"{grp.model:9s} n={grp.n:5d} mean={grp.mean:.3f} sd={grp.sd:.3f} participants={grp.participants}")
    typer.echo(
        f"TOST: p_low={t.p_low:.4g} p_high={t.p_high:.4g}; {round(100 * (1 - 2 * t.alpha))}% CI "
        f"[{t.ci[0]:+.3f}, {t.ci[1]:+.3f}] vs raw bounds [{t.low:+.3f}, {t.high:+.3f}]"
    )
    typer.echo(
        f"tightest bound established at alpha {t.alpha:g}: raw +/-{t.tightest_bound:.3f} = d +/-{t.tightest_bound_d:.3f}"
    )
    typer.echo(
        f"power: {an.power.participants_needed} participants needed for {an.power.target_power:.0%} TOST power; "
        f"achieved {an.power.achieved_tost_power:.3f}"
    )
    typer.echo(an.verdict)
    typer.echo(f"report: {paths['markdown']} and {paths['html']}")


def _analyze_summary(path: Path, out: Path | None, *, bound_d: float, alpha: float) -> None:
    from copymark.runs import create_run
    from copymark.study.summary import analyze_summary, consistency_lines, load_summary, write_summary_report

    an = analyze_summary(load_summary(path), bound_d=bound_d, alpha=alpha)  # validated before any folder is made
    out = out or _default_out(path)
    run = create_run(out, {"kind": "study-analyze-summary", "source": str(path), "bound_d": bound_d, "alpha": alpha})
    paths = write_summary_report(an, out)
    run.update_metrics(
        {
            c.name: {
                "welch_p": c.welch.p,
                "tost_p": c.tost.p,
                "equivalent": c.tost.equivalent,
                "tightest_bound": c.tost.tightest_bound,
                "tightest_bound_d": c.tost.tightest_bound_d,
                "figures": [
                    {"figure": f.figure, "reading": f.reading, "published": f.published, "n": f.n, "n_range": f.n_range}
                    for f in c.figures
                ],
                "consistent_n": c.consistent_n,
            }
            for c in an.settings
        }
        | {"consistent_n": an.consistent_n}
    )
    for c in an.settings:
        t = c.tost
        typer.echo(
            f"{c.name}: Welch t({c.welch.df:.1f}) = {c.welch.t:.3f}, p = {c.welch.p:.3g}; TOST d +/-{bound_d:g}: "
            f"p = {t.p:.3g} ({'equivalent' if t.equivalent else 'not equivalent'}); tightest bound at alpha "
            f"{alpha:g}: raw +/-{t.tightest_bound:.3f} = d +/-{t.tightest_bound_d:.3f}"
        )
        for f in c.figures:
            rng = f"{f.n_range[0]:.0f}-{f.n_range[1]:.0f}" if f.n_range else "none"
            what = f.figure + (f" ({f.reading})" if f.reading else "")
            n = "none" if f.n is None else f"{f.n:.0f}"
            typer.echo(f"  published {what} = {f.published:g}: reproduced at n = {n} per model (rounding: {rng})")
    for line in consistency_lines(an):
        typer.echo(line)
    typer.echo(f"report: {paths['markdown']} and {paths['html']}")


@study_app.command("power")
def power_cmd(
    bound_d: float = typer.Option(0.3, "--bound-d", help="equivalence bounds +/- this Cohen's d"),
    alpha: float = typer.Option(0.05, "--alpha"),
    power: float = typer.Option(0.8, "--power"),
    per_participant: int = typer.Option(20, "--per-participant", help="ratings per participant (half per model)"),
) -> None:
    """Plan a study: ratings and participants needed for the TOST (true d = 0) and for a t test."""
    import math

    from copymark.stats import tost_ind_n, ttest_ind_n

    n_tost = math.ceil(tost_ind_n(bound_d, alpha=alpha, power=power))
    n_t = math.ceil(ttest_ind_n(bound_d, alpha=alpha, power=power))
    k = per_participant / 2
    typer.echo(
        f"TOST, bounds d = +/-{bound_d:g}, alpha {alpha:g}, power {power:.0%}: {n_tost} ratings per model = "
        f"{math.ceil(n_tost / k)} participants at {k:g} ratings per model each"
    )
    typer.echo(
        f"t test detecting d = {bound_d:g} (two-sided): {n_t} ratings per model = {math.ceil(n_t / k)} participants"
    )
    typer.echo(
        "(every rating counted as an independent observation, as in the analysis; ratings of one participant "
        "are correlated in practice, so treat these as lower bounds)"
    )


def register(app: typer.Typer) -> None:
    """Add the ``study`` command group to ``app``."""
    app.add_typer(study_app, name="study")
