"""CLI commands of the user study (registered by copymark.cli): ``copymark study ...``.

create -> serve -> export -> analyze; simulate makes planning data in the export schema.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

ADMIN_ENV = "COPYMARK_STUDY_ADMIN_PASSWORD"

study_app = typer.Typer(
    help="User study of victim vs surrogate images: create, serve, export, analyze, simulate.", no_args_is_help=True
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
) -> None:
    """Create a study folder from two folders of paired outputs."""
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
    )
    typer.echo(
        f"created study {out}: {len(cfg.inputs)} inputs, {len(cfg.examples)} style examples, "
        f"{cfg.per_participant} images + {cfg.attention_checks} attention checks per participant"
    )


@study_app.command("serve")
def serve(
    study: Path = typer.Argument(..., help="study folder (from `copymark study create`)"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    admin_password: str | None = typer.Option(
        None, "--admin-password", help=f"password of the admin pages (user 'admin'); default ${ADMIN_ENV}"
    ),
    secure_cookie: bool = typer.Option(False, "--secure-cookie", help="mark the session cookie Secure (behind HTTPS)"),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve the study web app (participants at /, admin at /admin)."""
    import secrets

    import uvicorn

    from copymark.study.app import create_app

    password = admin_password or os.environ.get(ADMIN_ENV)
    if not password:
        password = secrets.token_urlsafe(12)
        typer.echo(f"no admin password given; generated one for this run: {password}", err=True)
    app_ = create_app(study, password, secure_cookie=secure_cookie)
    typer.echo(f"study at http://{host}:{port}/  (admin: http://{host}:{port}/admin, user 'admin')", err=True)
    uvicorn.run(app_, host=host, port=port, log_level=log_level)


@study_app.command("export")
def export(
    study: Path = typer.Argument(..., help="study folder"),
    out: Path = typer.Option(..., "--out", help="CSV file to write"),
) -> None:
    """Write all answers of a study as CSV (the schema `analyze` and `simulate` use)."""
    from copymark.files import atomic_write_bytes
    from copymark.study.analysis import load_ratings
    from copymark.study.store import rows_to_csv

    rows = load_ratings(study)
    atomic_write_bytes(out, rows_to_csv(rows).encode())
    typer.echo(f"wrote {len(rows)} answers to {out}")


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
    source: Path = typer.Argument(..., help="study folder or ratings CSV"),
    out: Path | None = typer.Option(
        None, "--out", help="new report/run folder (default: STUDY/analysis/analyze-TIME or CSV-analysis/analyze-TIME)"
    ),
    bound_d: float = typer.Option(0.3, "--bound-d", help="equivalence bounds +/- this Cohen's d"),
    alpha: float = typer.Option(0.05, "--alpha"),
    power: float = typer.Option(0.8, "--power", help="target power for the sample-size analysis"),
    equal_var: bool = typer.Option(False, "--equal-var", help="pooled-variance TOST instead of Welch"),
    drop_inattentive: bool = typer.Option(False, "--drop-inattentive", help="drop participants who failed a check"),
    complete_only: bool = typer.Option(False, "--complete-only", help="only participants who finished"),
) -> None:
    """Welch t test, TOST equivalence (Cohen's d bounds), power, per-image table, plots; Markdown + HTML.

    Writes a run folder (config.json, env.json, metrics.json, log.txt) holding the report files.
    """
    from copymark.runs import create_run, new_run_dir
    from copymark.study.analysis import analyze_ratings, load_ratings, write_report

    settings = {
        "source": str(source),
        "bound_d": bound_d,
        "alpha": alpha,
        "power": power,
        "usevar": "pooled" if equal_var else "unequal",
        "drop_inattentive": drop_inattentive,
        "complete_only": complete_only,
    }
    an = analyze_ratings(
        load_ratings(source),
        bound_d=bound_d,
        alpha=alpha,
        power=power,
        usevar="pooled" if equal_var else "unequal",
        drop_inattentive=drop_inattentive,
        complete_only=complete_only,
    )
    if out is None:
        base = source / "analysis" if source.is_dir() else source.with_name(source.stem + "-analysis")
        out = new_run_dir(base, "analyze")
    run = create_run(out, {"kind": "study-analyze", **settings})
    paths = write_report(an, out)
    t = an.tost
    run.update_metrics(
        {
            "victim": {"n": an.groups["victim"].n, "mean": an.groups["victim"].mean, "sd": an.groups["victim"].sd},
            "surrogate": {
                "n": an.groups["surrogate"].n,
                "mean": an.groups["surrogate"].mean,
                "sd": an.groups["surrogate"].sd,
            },
            "welch": {"t": an.welch.t, "df": an.welch.df, "p": an.welch.p},
            "tost": {
                "p_low": t.p_low,
                "p_high": t.p_high,
                "p": t.p,
                "ci": list(t.ci),
                "low": t.low,
                "high": t.high,
                "equivalent": t.equivalent,
            },
            "participants_needed": an.power.participants_needed,
        }
    )
    run.log("%s", an.verdict)
    for g in an.groups.values():
        typer.echo(f"{g.model:9s} n={g.n:5d} mean={g.mean:.3f} sd={g.sd:.3f} participants={g.participants}")
    t = an.tost
    typer.echo(
        f"TOST: p_low={t.p_low:.4g} p_high={t.p_high:.4g}; {round(100 * (1 - 2 * t.alpha))}% CI "
        f"[{t.ci[0]:+.3f}, {t.ci[1]:+.3f}] vs raw bounds [{t.low:+.3f}, {t.high:+.3f}]"
    )
    typer.echo(
        f"power: {an.power.participants_needed} participants needed for {power:.0%} TOST power; "
        f"achieved {an.power.achieved_tost_power:.3f}"
    )
    typer.echo(an.verdict)
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
