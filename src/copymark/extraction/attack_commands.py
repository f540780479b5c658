"""CLI: ``copymark evaluate``, ``copymark learning-curve``, ``copymark demo`` and
``copymark reproduce extraction-tables``.

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
    gt_pairing: str = typer.Option(
        "auto",
        "--gt-pairing",
        help="What --gt is: paired (one ground truth per input, same file stem: per-image PSNR/SSIM), set (an "
        "unpaired target-style set: set-level SWD/KID/FID) or auto (super-resolution: paired; style: set).",
    ),
    benchmark: Path | None = typer.Option(None, "--benchmark", help="A second, benchmark set (same layout as --test)."),
    benchmark_gt: Path | None = typer.Option(None, "--benchmark-gt", help="Ground truth of the benchmark set."),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Run folder to write (default runs/evaluate-DATE-TIME); rerun into it to resume."
    ),
    store: Path | None = typer.Option(
        None,
        "--store",
        help="The extraction's query store (read only): checks the victim, reuses answers it holds, and names "
        "the queries spent, budget, strategy and dates in the report. Default: found from the surrogate's "
        "training record (`copymark train --from-store`).",
    ),
    answers: Path | None = typer.Option(
        None,
        "--answers",
        help="Query store of this evaluation's victim answers, shared by every evaluation that names it "
        "(default STORE/evaluation, or RUN_DIR/answers without a store).",
    ),
    inception_weights: Path | None = typer.Option(
        None,
        "--inception-weights",
        envvar="COPYMARK_INCEPTION_WEIGHTS",
        help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth): FID and KID; without it only SWD.",
    ),
    device: str = typer.Option("cpu", "--device", help="Device of the surrogate (cpu, cuda)."),
    n_boot: int = typer.Option(2000, "--n-boot", min=100, help="Bootstrap resamples for the 95% CIs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap, SWD and the untrained baseline."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests to the victim in flight at once."),
    timeout_s: float = typer.Option(60.0, "--timeout", help="Seconds per request before a retry."),
    max_retries: int = typer.Option(8, "--max-retries", min=0, help="Retries per request (backoff with jitter)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress on stderr (the run's log.txt still has it)."),
) -> None:
    """Tables A (victim vs ground truth), B (surrogate vs victim), C (surrogate vs ground truth).

    The victim is queried only through its API, and only for test inputs it has not answered
    before: answers are kept in a query store keyed by the victim's id and the input's hash, so
    a second evaluation (or a rerun after a crash or a spent budget) pays nothing twice and an
    answer of another victim is never used. A run folder is reused only for the same victim,
    surrogate, sets and options. Per-image PSNR/SSIM (SR: also on Y with a border crop equal to
    the scale) with mean, std, n and bootstrap 95% CIs; SWD always; FID and KID with
    --inception-weights; baselines: the identity map (style) or bicubic (SR) against the victim
    and against the ground truth, and an untrained surrogate. Writes metrics.json, tables.md and
    the images to the run folder; `copymark report RUN_DIR` turns it into an HTML page.
    """
    from copymark.config import parse_config
    from copymark.extraction.evaluate import EvaluateConfig, run_evaluation
    from copymark.runs import new_run_dir

    rd = run_dir or new_run_dir("runs", "evaluate")
    cfg = parse_config(
        EvaluateConfig,
        {
            "victim_url": victim_url,
            "api_key": api_key,
            "surrogate": surrogate,
            "test": test,
            "gt": gt,
            "gt_pairing": gt_pairing,
            "benchmark": benchmark,
            "benchmark_gt": benchmark_gt,
            "run_dir": rd,
            "store": store,
            "answers": answers,
            "inception_weights": inception_weights,
            "device": device,
            "n_boot": n_boot,
            "seed": seed,
            "concurrency": concurrency,
            "timeout_s": timeout_s,
            "max_retries": max_retries,
            "progress": not quiet,
        },
        where="copymark evaluate",
    )
    run_evaluation(cfg)
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
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests to the victim in flight at once."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars (the run's log.txt still has the progress)."),
) -> None:
    """Table-B quality against queries spent, per query-selection strategy (JSON + plot).

    Every point trains a fresh surrogate on a prefix of one campaign per strategy, so no query
    is paid twice; the test answers are fetched once with --eval-api-key and reused.
    """
    from copymark.config import parse_config, parse_json_arg
    from copymark.extraction.learning_curve import LearningCurveConfig, parse_fractions, run_learning_curve
    from copymark.runs import new_run_dir

    rd = run_dir or new_run_dir("runs", "learning-curve")
    cfg = parse_config(
        LearningCurveConfig,
        {
            "victim_url": victim_url,
            "api_key": api_key,
            "eval_api_key": eval_api_key,
            "data": data,
            "test": test,
            "budget": budget,
            "run_dir": rd,
            "strategies": [s.strip() for s in strategies.split(",") if s.strip()],
            "fractions": parse_fractions(fractions),
            "procedure": procedure,
            "net_config": parse_json_arg(net_config, "--net-config"),
            "size": size,
            "train_size": train_size,
            "iters": iters,
            "batch_size": batch_size,
            "seed": seed,
            "concurrency": concurrency,
            "progress": not quiet,
        },
        where="copymark learning-curve",
    )
    curve = run_learning_curve(cfg, echo=typer.echo)
    for p in curve["points"]:
        v = p["value"]
        shown = f"{v:.2f}" if isinstance(v, float) else str(v)
        typer.echo(f"{p['strategy']:>8} {p['queries']:>6} queries: {curve['metric']} = {shown}")
    typer.echo(f"run folder: {rd}")


def demo(
    task: str = typer.Option("style", "--task", help="style (OpenCV stylization victim) or sr (x4 super-resolution)."),
    budget: int | None = typer.Option(None, "--budget", min=1, help="Attacker's query budget."),
    iters: int | None = typer.Option(None, "--iters", min=1, help="Surrogate training iterations."),
    strategy: str = typer.Option("diverse", "--strategy", help="Query selection: random or diverse."),
    seed: int = typer.Option(0, "--seed"),
    runs_root: Path = typer.Option(Path("runs"), "--runs", help="Where the demo's run folder goes."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars (the run's log.txt still has the progress)."),
) -> None:
    """The whole extraction attack on built-in photos, on CPU, in a few minutes.

    Serves a victim on 127.0.0.1, extracts it within a query budget with attacker photos that are
    disjoint from the test photos, trains a small surrogate on the answers, evaluates tables
    A/B/C through the API and writes an HTML report. Same seed, same numbers.
    """
    from copymark.config import parse_config
    from copymark.errors import ConfigError
    from copymark.extraction.demo import DemoConfig, run_demo

    if task not in ("style", "sr"):
        raise ConfigError(f"unknown demo task {task!r}", hint="use --task style or --task sr")
    given = {"budget": budget, "iters": iters}
    cfg = parse_config(
        DemoConfig,
        {
            "task": task,
            "strategy": strategy,
            "seed": seed,
            "runs_root": runs_root,
            "progress": not quiet,
            **{k: v for k, v in given.items() if v is not None},
        },
        where="copymark demo",
    )
    report = run_demo(cfg, echo=typer.echo)
    _print_tables(report.parent / "evaluation")
    typer.echo(f"report: {report}")


reproduce_app = typer.Typer(
    help="Reproduce a study's published tables from configured settings (victims, data, budgets).",
    no_args_is_help=True,
)


@reproduce_app.command("extraction-tables")
def extraction_tables(
    config: Path = typer.Option(..., "--config", help="Reproduction config (JSON; see configs/reproduce/README.md)."),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Run folder (default runs/reproduce-DATE-TIME); rerun into it to resume."
    ),
    inception_weights: Path | None = typer.Option(
        None,
        "--inception-weights",
        envvar="COPYMARK_INCEPTION_WEIGHTS",
        help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth): FID and KID; without it SWD only.",
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", envvar="COPYMARK_SHARED_DATA", help="What {data} in the config's paths stands for."
    ),
    only: list[str] = typer.Option([], "--only", help="Run only this setting (repeatable); the others keep theirs."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars (each run folder's log.txt keeps them)."),
) -> None:
    """The extraction study's Tables 2-4 from real victims, in the study's layout.

    For each setting of the config: serve the victim on 127.0.0.1, run the extraction campaign,
    train the surrogate on the answers, evaluate tables A (victim vs target), B (surrogate vs
    victim) and C (surrogate vs target) on the victim's test set and a benchmark set, and write
    `tables.md` and `tables.html` with the study's figures beside copymark's and the conditions
    that differ. Everything is checked before anything is written; a rerun into the same
    --run-dir resumes and pays no query twice.
    """
    from copymark.extraction.reproduce import goal_summary, load_reproduce_config, run_reproduction
    from copymark.runs import new_run_dir

    cfg = load_reproduce_config(config)
    rd = run_dir or new_run_dir("runs", "reproduce")
    results = run_reproduction(
        cfg,
        rd,
        data_root=data_root,
        inception_weights=inception_weights,
        only=only or None,
        progress=not quiet,
        echo=typer.echo,
    )
    for line in goal_summary({k: v for k, v in results.items() if not only or k in only}):
        typer.echo(line)
    typer.echo(f"tables: {rd / 'tables.md'} and {rd / 'tables.html'}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("learning-curve")(learning_curve)
    app.command("demo")(demo)
    app.add_typer(reproduce_app, name="reproduce")
