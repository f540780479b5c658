"""CLI commands of this package (registered by copymark.cli).

``extract`` lives in :func:`_register_extract`; evaluate / learning-curve / demo are added
beside it by their own ``_register_*`` functions.
"""

from __future__ import annotations

from pathlib import Path

import typer


def _register_extract(app: typer.Typer) -> None:
    @app.command("extract")
    def extract(
        victim_url: str = typer.Option(
            ..., "--victim-url", help="base URL of the victim API, e.g. http://127.0.0.1:8000"
        ),
        api_key: str = typer.Option(..., "--api-key", envvar="COPYMARK_API_KEY", help="API key (or $COPYMARK_API_KEY)"),
        data: Path = typer.Option(..., "--data", help="folder of the attacker's own photos (searched recursively)"),
        budget: int = typer.Option(..., "--budget", help="total answers to hold for this victim in the store"),
        store: Path = typer.Option(..., "--store", help="query store folder (created; reruns resume it)"),
        strategy: str = typer.Option("random", "--strategy", help="query selection: random | diverse (k-center)"),
        size: int = typer.Option(128, "--size", help="query image size in pixels (square crops)"),
        concurrency: int = typer.Option(4, "--concurrency", help="requests in flight at once"),
        seed: int = typer.Option(0, "--seed"),
        timeout_s: float = typer.Option(60.0, "--timeout", help="seconds per request before a retry"),
        max_retries: int = typer.Option(8, "--max-retries", help="retries per request (backoff with jitter)"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    ) -> None:
        """Query a victim API with the attacker's images and store every answer (resumable)."""
        import json

        from copymark.client.http import BudgetExhausted, RetryPolicy
        from copymark.extraction.campaign import run_campaign

        res = run_campaign(
            victim_url,
            api_key,
            data,
            budget,
            store,
            strategy=strategy,
            size=size,
            seed=seed,
            concurrency=concurrency,
            retry=RetryPolicy(max_retries=max_retries, timeout_s=timeout_s),
            progress=not quiet,
        )
        r = res.report
        summary = {
            "victim_id": res.victim_id,
            "task": res.task,
            "scale": res.scale,
            "strategy": res.strategy,
            "budget": res.budget,
            "answered_total": res.answered_total,
            "already_in_store": res.already_answered,
            "new_answers": r.answered,
            "replayed": r.replayed,
            "failed": r.failed,
            "not_sent": r.not_sent,
            "server_budget_remaining": r.server_budget_remaining,
            "stop_reason": r.stop_reason,
            "seconds": round(res.seconds, 2),
            "store": res.store_dir,
        }
        typer.echo(json.dumps(summary, indent=2))
        if r.stop_reason and res.answered_total < res.budget:
            from copymark.errors import CopymarkError

            msg = f"campaign stopped after {res.answered_total} of {res.budget} answers: {r.stop_reason}"
            kept = f"the store keeps all {res.answered_total} answers received"
            if "budget" in r.stop_reason:
                raise BudgetExhausted(msg, hint=f"{kept}; train on them, or get a larger budget and rerun to continue")
            if "API key" in r.stop_reason:
                raise CopymarkError(msg, hint=f"check --api-key; {kept}")
            raise CopymarkError(msg, hint=f"{kept}; rerun the same command to resume")


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""
    _register_extract(app)
