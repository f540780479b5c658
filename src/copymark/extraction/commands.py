"""CLI commands of this package (registered by copymark.cli).

``extract`` lives in :func:`_register_extract`; evaluate / learning-curve / demo are added
beside it by their own ``_register_*`` functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

# CampaignConfig field -> the extract option that sets it (for error messages)
OPTION_OF = {
    "victim_url": "--victim-url",
    "data_dir": "--data",
    "budget": "--budget",
    "store_dir": "--store",
    "strategy": "--strategy",
    "size": "--size",
    "seed": "--seed",
    "concurrency": "--concurrency",
    "retry.timeout_s": "--timeout",
    "retry.max_retries": "--max-retries",
    "retry.max_rate_wait_s": "--max-rate-wait",
    "allow_upscale": "--allow-upscale",
}


def campaign_config(options: dict[str, Any]) -> Any:
    """Validate the extract options as a CampaignConfig; a ConfigError names the option."""
    from pydantic import ValidationError

    from copymark.errors import ConfigError
    from copymark.extraction.campaign import CampaignConfig

    try:
        return CampaignConfig.model_validate(options)
    except ValidationError as err:
        parts = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            parts.append(f"{OPTION_OF.get(loc, loc or 'options')}: {e['msg']}")
        raise ConfigError("copymark extract: " + "; ".join(parts), hint="see `copymark extract --help`") from None


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
        max_retries: int = typer.Option(
            8, "--max-retries", help="retries per request after transient failures (errors, timeouts, 5xx)"
        ),
        max_rate_wait_s: float = typer.Option(
            300.0,
            "--max-rate-wait",
            help="seconds of waits the key's rate limit (429 Retry-After) may ask of one request in total "
            "before it gives up; rate-limit waits are not failed attempts",
        ),
        allow_upscale: bool = typer.Option(
            False, "--allow-upscale", help="query upscaled crops of photos smaller than --size (refused otherwise)"
        ),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    ) -> None:
        """Query a victim API with the attacker's images and store every answer (resumable).

        All workers share one pace learned from the server's 429 hints (Retry-After), and no
        request is sent that the key's remaining budget (X-Budget-Remaining) cannot pay for.
        A rerun verifies the store it reuses: damaged inputs are rewritten from the photos,
        damaged answers are queried again (see also `copymark store check`).
        """
        import json

        from copymark.client.http import BudgetExhausted
        from copymark.errors import CopymarkError, DataError
        from copymark.extraction.campaign import run_campaign

        config = campaign_config(
            {
                "victim_url": victim_url,
                "data_dir": data,
                "budget": budget,
                "store_dir": store,
                "strategy": strategy,
                "size": size,
                "seed": seed,
                "concurrency": concurrency,
                "retry": {"max_retries": max_retries, "timeout_s": timeout_s, "max_rate_wait_s": max_rate_wait_s},
                "allow_upscale": allow_upscale,
            }
        )
        res = run_campaign(config, api_key, progress=not quiet)
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
            "candidates_exhausted": res.candidates_exhausted,
            "store_repair": {
                "inputs_restored": res.repair.inputs_restored,
                "answers_requeried": res.repair.answers_requeried,
                "unrepaired": len(res.repair.unrepaired),
            },
            "seconds": round(res.seconds, 2),
            "store": res.store_dir,
        }
        typer.echo(json.dumps(summary, indent=2))
        if res.candidates_exhausted and res.answered_total < res.budget:
            typer.echo(
                f"warning: the photos in {data} give no more distinct {size} px crops: the store holds "
                f"{res.answered_total} of the {res.budget} answers asked for (add photos, or use a smaller --size: "
                "more distinct crops per photo)",
                err=True,
            )
        if r.stop_reason and res.answered_total < res.budget:
            msg = f"campaign stopped after {res.answered_total} of {res.budget} answers: {r.stop_reason}"
            kept = f"the store keeps all {res.answered_total} answers received"
            err = r.stop_error
            if isinstance(err, BudgetExhausted):
                raise BudgetExhausted(msg, hint=f"{kept}; train on them, or get a larger budget and rerun to continue")
            cause = f"{err.hint}; " if err is not None and err.hint else ""
            raise CopymarkError(msg, hint=f"{cause}{kept}; rerun the same command to resume")
        if res.repair.unrepaired:
            shown = "; ".join(res.repair.unrepaired[:3])
            raise DataError(
                f"query store {res.store_dir}: {len(res.repair.unrepaired)} damaged file(s) could not be repaired "
                f"(their input crops cannot be re-made from {data}): {shown}",
                hint="restore the photos the store was made from and rerun, or start a new store",
            )


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""
    _register_extract(app)
