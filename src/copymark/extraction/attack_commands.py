"""CLI: ``copymark evaluate``, ``copymark learning-curve`` and ``copymark demo``.

(``copymark extract`` lives in :mod:`copymark.extraction.commands`.)
"""

from __future__ import annotations

from pathlib import Path

import typer


def _print_tables(run_dir: Path) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    p = run_dir / "tables.md"
    if p.exists():
        Console().print(Markdown(p.read_text()))


def evaluate(
    victim_url: str = typer.Option(..., "--victim-url", help="Base URL of the victim API, e.g. http://127.0.0.1:8000"),
    api_key: str = typer.Option(..., "--api-key", envvar="COPYMARK_API_KEY", help="API key (Bearer) for the victim."),
    surrogate: Path = typer.Option(
        ..., "--surrogate", help="Surrogate: checkpoint folder, training run folder or TorchScript .pt."
    ),
    test: Path = typer.Option(..., "--test", help="Test inputs (SR: LR images, or a folder with HR/ and LR_x4/)."),
    gt: Path | None = typer.Option(
        None,
        "--gt",
        help="Ground truth: paired by stem (SR: HR images), or a folder of target-style images (unpaired).",
    ),
    benchmark: Path | None = typer.Option(None, "--benchmark", help="A second, benchmark set (same layout as --test)."),
    benchmark_gt: Path | None = typer.Option(None, "--benchmark-gt", help="Ground truth of the benchmark set."),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Run folder to write (default runs/evaluate-DATE-TIME)."
    ),
    inception_weights: Path | None = typer.Option(
        None,
        "--inception-weights",
        envvar="COPYMARK_INCEPTION_WEIGHTS",
        help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth) for FID/KID; without it only SWD is reported.",
    ),
    kid: bool = typer.Option(True, "--kid/--no-kid", help="Report KID (needs --inception-weights)."),
    device: str = typer.Option("cpu", "--device", help="Device of the surrogate (cpu, cuda)."),
    n_boot: int = typer.Option(2000, "--n-boot", min=100, help="Bootstrap resamples for the 95% CIs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap, SWD and the untrained baseline."),
) -> None:
    """Tables A (victim vs ground truth), B (surrogate vs victim), C (surrogate vs ground truth).

    The victim is queried only through its API. Per-image PSNR/SSIM (SR: also on Y with a border
    crop equal to the scale) with mean, std, n and bootstrap 95% CIs; SWD always; FID and KID
    with --inception-weights. Writes metrics.json, tables.md and the images to the run folder;
    `copymark report RUN_DIR` turns it into an HTML page.
    """
    from copymark.extraction.evaluate import run_evaluation
    from copymark.runs import new_run_dir

    rd = run_dir or new_run_dir("runs", "evaluate")
    run_evaluation(
        victim_url=victim_url,
        api_key=api_key,
        surrogate_path=surrogate,
        test_dir=test,
        gt_dir=gt,
        benchmark_dir=benchmark,
        benchmark_gt_dir=benchmark_gt,
        run_dir=rd,
        inception_weights=inception_weights,
        kid=kid and inception_weights is not None,
        device=device,
        n_boot=n_boot,
        seed=seed,
    )
    _print_tables(rd)
    typer.echo(f"run folder: {rd}")


def learning_curve(
    victim_url: str = typer.Option(..., "--victim-url", help="Base URL of the victim API."),
    api_key: str = typer.Option(
        ..., "--api-key", envvar="COPYMARK_API_KEY", help="Attacker's API key (pays the queries)."
    ),
    eval_api_key: str | None = typer.Option(
        None, "--eval-api-key", help="Key for the test-set queries (default: --api-key)."
    ),
    data: Path = typer.Option(..., "--data", help="Attacker's photos (queries are crops of them)."),
    test: Path = typer.Option(..., "--test", help="Test inputs for table B."),
    budget: int = typer.Option(..., "--budget", min=1, help="Full query budget; points at fractions of it."),
    fractions: str = typer.Option("1/8,1/4,1/2,1", "--fractions", help="Budget fractions to measure."),
    strategies: str = typer.Option(
        "random,diverse", "--strategies", help="Comma-separated query-selection strategies."
    ),
    procedure: str = typer.Option(
        "pix2pix", "--procedure", help="Surrogate procedure: pix2pix (style) or srresnet (SR)."
    ),
    net_config: str | None = typer.Option(None, "--net-config", help="JSON overrides of the procedure config."),
    size: int = typer.Option(128, "--size", help="Query crop size (style; SR: the HR size of a query's answer)."),
    train_size: int | None = typer.Option(
        None,
        "--train-size",
        help="Training crop size (default --size; style: smaller means random crops of the answers).",
    ),
    iters: int = typer.Option(300, "--iters", min=1, help="Training iterations per point (same for every point)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Run folder (default runs/learning-curve-DATE-TIME)."),
) -> None:
    """Table-B quality against queries spent, per query-selection strategy (JSON + plot)."""
    from copymark.config import parse_json_arg
    from copymark.extraction.learning_curve import parse_fractions, run_learning_curve
    from copymark.runs import new_run_dir

    rd = run_dir or new_run_dir("runs", "learning-curve")
    curve = run_learning_curve(
        victim_url=victim_url,
        api_key=api_key,
        eval_api_key=eval_api_key,
        data_dir=data,
        test_dir=test,
        budget=budget,
        run_dir=rd,
        strategies=[s.strip() for s in strategies.split(",") if s.strip()],
        fractions=parse_fractions(fractions),
        procedure=procedure,
        train_overrides=parse_json_arg(net_config, "--net-config"),
        size=size,
        train_size=train_size,
        iters=iters,
        batch_size=batch_size,
        seed=seed,
    )
    for p in curve["points"]:
        typer.echo(f"{p['strategy']:>8} {p['queries']:>6} queries: {curve['metric']} = {p['value']:.2f}")
    typer.echo(f"run folder: {rd}")


def demo(
    task: str = typer.Option("style", "--task", help="style (OpenCV stylization victim) or sr (x4 super-resolution)."),
    budget: int | None = typer.Option(None, "--budget", min=1, help="Attacker's query budget."),
    iters: int | None = typer.Option(None, "--iters", min=1, help="Surrogate training iterations."),
    strategy: str = typer.Option("diverse", "--strategy", help="Query selection: random or diverse."),
    seed: int = typer.Option(0, "--seed"),
    runs_root: Path = typer.Option(Path("runs"), "--runs", help="Where the demo's run folder goes."),
) -> None:
    """The whole extraction attack on built-in photos, on CPU, in a few minutes.

    Serves a victim on 127.0.0.1, extracts it within a query budget with attacker photos that are
    disjoint from the test photos, trains a small surrogate on the answers, evaluates tables
    A/B/C through the API and writes an HTML report. Same seed, same numbers.
    """
    from dataclasses import replace

    from copymark.extraction.demo import DemoSettings, run_demo

    s = DemoSettings(task=task, strategy=strategy, seed=seed)  # type: ignore[arg-type]
    if budget is not None:
        s = replace(s, budget=budget)
    if iters is not None:
        s = replace(s, iters=iters)
    report = run_demo(s, runs_root, echo=typer.echo)
    _print_tables(report.parent)
    typer.echo(f"report: {report}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("learning-curve")(learning_curve)
    app.command("demo")(demo)
