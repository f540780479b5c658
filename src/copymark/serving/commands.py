"""CLI commands of this package (registered by copymark.cli): ``copymark serve``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""

    @app.command("serve")
    def serve(
        victim: str = typer.Option(
            ...,
            "--victim",
            help="victim SPEC: classical:stylize?sigma_s=20&sigma_r=0.3, "
            "classical:edge_preserving, classical:cartoon, classical:bicubic_x4, "
            "a checkpoint folder or a TorchScript .pt file",
        ),
        keys: Path = typer.Option(
            ..., "--keys", help='JSON keys file {"KEY": {"budget": N, "rate_per_s": R, "burst": B}}'
        ),
        host: str = typer.Option("127.0.0.1", "--host"),
        port: int = typer.Option(8000, "--port"),
        device: str = typer.Option("cpu", "--device", help="device for learned victims (cpu, cuda)"),
        usage_db: Path | None = typer.Option(
            None, "--usage-db", help="SQLite file of spent budgets (default: beside the keys file)"
        ),
        max_upload_bytes: int = typer.Option(8 * 1024 * 1024, "--max-upload-bytes"),
        max_pixels: int = typer.Option(1024 * 1024, "--max-pixels", help="input width*height limit"),
        max_batch: int = typer.Option(8, "--max-batch"),
        max_wait_ms: float = typer.Option(5.0, "--max-wait-ms"),
        queue_size: int = typer.Option(64, "--queue-size"),
        inference_timeout_s: float = typer.Option(60.0, "--inference-timeout"),
        request_log: Path | None = typer.Option(None, "--request-log", help="JSON-lines audit log of requests"),
        idempotency_cache: int = typer.Option(
            256, "--idempotency-cache", help="answers kept per key for Idempotency-Key replays (0: off)"
        ),
        log_level: str = typer.Option("info", "--log-level"),
        threads: int = typer.Option(0, "--threads", help="torch intra-op threads (0: torch's default)"),
    ) -> None:
        """Serve a victim model behind the budgeted, rate-limited inference API."""
        from copymark.config import parse_config
        from copymark.serving.app import create_app
        from copymark.serving.models import load_model
        from copymark.serving.server import serve_forever
        from copymark.serving.settings import ServeSettings

        settings = parse_config(
            ServeSettings,
            {
                "keys_file": keys,
                "usage_db": usage_db,
                "max_upload_bytes": max_upload_bytes,
                "max_pixels": max_pixels,
                "max_batch": max_batch,
                "max_wait_ms": max_wait_ms,
                "queue_size": queue_size,
                "inference_timeout_s": inference_timeout_s,
                "request_log": request_log,
                "idempotency_cache": idempotency_cache,
            },
            where="serve options",
        )
        if threads < 0:
            from copymark.errors import ConfigError

            raise ConfigError(f"--threads must be >= 0, got {threads}")
        if threads:
            import torch

            torch.set_num_threads(threads)
        v = load_model(victim, device)
        app_ = create_app(v, settings)
        typer.echo(f"serving victim {v.id} (task {v.task}, scale {v.scale}) on http://{host}:{port}", err=True)
        serve_forever(app_, host, port, log_level)
