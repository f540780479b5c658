"""CLI commands of the caller's side (registered by copymark.cli): ``copymark store check``.

``store check --store DIR`` reads every file of a query store and checks it against its hash
(the SQLite index too); it prints a JSON report and exits 2 when anything is damaged.
``--repair --victim-url URL --api-key KEY`` then re-queries exactly the answered rows whose
answer file is damaged (their input file intact), with the same Idempotency-Key as the first
time: while the server keeps that reply the re-query is a free replay, otherwise it is paid
once. Nothing intact is touched; damaged *inputs* cannot be re-made by the client (they are the
attacker's crops): rerunning the ``copymark extract`` command that made the store rewrites them
from the photos.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def check_report(store_dir: Path) -> tuple[dict[str, Any], Any]:
    """``(JSON-able report, IntegrityReport)`` of the store at ``store_dir`` (which must exist)."""
    from copymark.client.store import QueryStore

    with QueryStore(store_dir) as store:
        rep = store.integrity_check()
        counts = store.counts()
        victims = store.victims()
    summary: dict[str, Any] = {
        "store": str(store_dir),
        "rows": rep.rows,
        "answered": rep.answered,
        "pending": counts["pending"],
        "failed": counts["failed"],
        "victims": victims,
        "problems": rep.problems,
        "orphan_files": rep.orphan_files,
        "ok": rep.ok,
    }
    return summary, rep


async def repair_store(store_dir: Path, victim_url: str, api_key: str, concurrency: int, retry: Any) -> dict[str, Any]:
    """Re-query the damaged answers of the victim at ``victim_url``; return what was done."""
    from copymark.client.http import ApiClient
    from copymark.client.queries import query_all
    from copymark.client.store import QueryStore

    async with ApiClient(victim_url, api_key, concurrency=concurrency, retry=retry) as client:
        info = await client.info()
        victim_id = str(info.get("victim_id") or victim_url)
        with QueryStore(store_dir) as store:
            damaged = store.requeue_damaged(victim_id)
            bad_inputs = {d.input_sha for d in damaged if d.what == "input"}
            expected = {
                d.input_sha: d.path.stem for d in damaged if d.what == "answer" and d.input_sha not in bad_inputs
            }
            rows = {r["input_sha"]: r for r in store.rows(victim_id)}
            items = [(store.input_path(sha).read_bytes(), str(rows[sha]["source"] or "")) for sha in expected]
            client.local_budget = len(items)  # re-query the damaged rows, never anything more
            report = await query_all(client, store, victim_id, items)
            rows = {r["input_sha"]: r for r in store.rows(victim_id)}
            others = sum(
                1 for v in store.victims() if v != victim_id for d in store.integrity_check(victim_id=v).damaged
            )
    changed = [
        sha[:12]
        for sha, ans in expected.items()
        if rows[sha]["status"] == "answered" and rows[sha]["answer_sha"] != ans
    ]
    out: dict[str, Any] = {
        "victim_id": victim_id,
        "requeried": len(items),
        "replayed_free": report.replayed,
        "paid": report.answered,
        "failed": report.failed,
        "not_sent": report.not_sent,
        "stop_reason": report.stop_reason,
        "inputs_damaged": len(bad_inputs),
        "answers_differ_from_the_original": changed,  # the victim answered differently this time
        "damaged_files_of_other_victims": others,
    }
    if report.stop_error is not None:
        out["stop_hint"] = report.stop_error.hint
    return out


def register(app: typer.Typer) -> None:
    """Add ``copymark store ...`` to ``app``."""
    store_app = typer.Typer(
        help="Query stores: check (and repair) the answers a campaign stored.", no_args_is_help=True
    )
    app.add_typer(store_app, name="store")

    @store_app.command("check")
    def check(
        store: Path = typer.Option(..., "--store", help="query store folder (made by `copymark extract`)"),
        repair: bool = typer.Option(
            False, "--repair", help="re-query the damaged answers (needs --victim-url and --api-key)"
        ),
        victim_url: str | None = typer.Option(None, "--victim-url", help="base URL of the victim API (for --repair)"),
        api_key: str | None = typer.Option(
            None, "--api-key", envvar="COPYMARK_API_KEY", help="API key (or $COPYMARK_API_KEY; for --repair)"
        ),
        concurrency: int = typer.Option(4, "--concurrency", help="requests in flight at once (for --repair)"),
        timeout_s: float = typer.Option(60.0, "--timeout", help="seconds per request before a retry"),
        max_retries: int = typer.Option(8, "--max-retries", help="retries per request after transient failures"),
        max_rate_wait_s: float = typer.Option(
            300.0,
            "--max-rate-wait",
            help="seconds of waits the key's rate limit (429) may ask of one request in total; not failed attempts",
        ),
    ) -> None:
        """Check every file of a query store against its hash; with --repair, re-query what is damaged.

        Prints a JSON report (rows, answered, pending, failed, problems, orphan files) and exits 2
        when the store is damaged. Orphan files (no row names them: leftovers of a killed run) are
        harmless. `--repair` re-queries only answered rows whose answer file is missing or
        damaged, with the same Idempotency-Key as the first query: a free replay while the
        server keeps that reply. Damaged input files are rewritten by rerunning the
        `copymark extract` command that made the store (same --data, --size, --seed).
        """
        import asyncio

        from copymark.client.http import RetryPolicy
        from copymark.client.pairs import repair_hint
        from copymark.config import parse_config
        from copymark.errors import ConfigError, DataError

        if not (store / "index.sqlite").is_file():
            raise DataError(
                f"{store}: not a query store (no index.sqlite)", hint="pass the --store of `copymark extract`"
            )
        if repair and (not victim_url or not api_key):
            raise ConfigError("--repair needs --victim-url and --api-key", hint="the victim that answered the store")
        if concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")
        retry = parse_config(
            RetryPolicy,
            {"max_retries": max_retries, "timeout_s": timeout_s, "max_rate_wait_s": max_rate_wait_s},
            where="store check options",
        )
        summary, rep = check_report(store)
        if repair and not rep.ok:
            assert victim_url is not None and api_key is not None
            summary = {"before_repair": summary}
            summary["repair"] = asyncio.run(repair_store(store, victim_url, api_key, concurrency, retry))
            after, rep = check_report(store)
            summary.update(after)
        typer.echo(json.dumps(summary, indent=2))
        if not rep.ok:
            from copymark.client.store import QueryStore

            with QueryStore(store) as s:
                meta = s.campaign()
            if victim_url:
                meta["victim_url"] = victim_url
            hint = repair_hint(store, meta, rep.damaged)
            if repair and any(d.what == "input" for d in rep.damaged):
                hint = f"damaged input files cannot be re-queried: {hint}"
            if any(p.startswith("sqlite:") for p in rep.problems):
                hint = "the SQLite index itself is damaged: restore the store folder from a backup"
            raise DataError(f"query store {store} is damaged: {len(rep.problems)} problem(s)", hint=hint)
