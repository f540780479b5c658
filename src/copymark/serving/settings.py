"""Server settings and API keys.

:class:`ServeSettings` holds every limit the inference API enforces; :func:`load_keys` reads the
keys file, a JSON object ``{"<api key>": {"budget": 1000, "rate_per_s": 5, "burst": 10}}``.
Budgets are spent answers per key and persist across restarts in a small SQLite file beside
the keys file (``<keys>.usage.sqlite`` unless ``usage_db`` says otherwise).

``isolation`` says where the model runs: ``"worker"`` in a supervised child process that
rebuilds the model from its spec (a crash or hang in the model's native code fails only the
requests it was answering; the worker is restarted), ``"inline"`` in an inference thread of
the server process (no restart cost, no copy across processes, but a crash takes the server
down and a hang blocks it), ``"auto"`` (default) the worker when the model was built from a
spec by :func:`~copymark.serving.models.load_model`, inline for in-process callables
(:func:`~copymark.serving.models.function_model`), which cannot be rebuilt elsewhere.

``classify_answer`` (classifiers only): ``"topk"`` answers the label and the ``top_k`` most
probable classes with their probabilities; ``"label"`` the label alone, as APIs that hide
their scores do. ``docs``: Swagger UI at ``/docs`` (off by default: see docs/API.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from copymark.config import StrictModel, parse_config
from copymark.errors import ConfigError
from copymark.files import read_json


class KeyPolicy(StrictModel):
    """Limits of one API key: total answered queries, sustained rate and burst."""

    budget: int = Field(ge=0, description="answers this key may receive in total (persisted)")
    rate_per_s: float = Field(default=10.0, gt=0, description="token-bucket refill rate, requests/s")
    burst: int = Field(default=20, ge=1, description="token-bucket capacity")


class ServeSettings(StrictModel):
    """Everything the inference API enforces. Defaults suit a CPU demo server."""

    keys_file: Path
    usage_db: Path | None = Field(default=None, description="SQLite file for spent budgets; default beside keys_file")
    max_upload_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(default=1024 * 1024, ge=1, description="input width*height limit, checked from the header")
    min_side: int = Field(default=8, ge=1, description="shortest input side in pixels, checked from the header")
    max_aspect: float = Field(
        default=16.0, ge=1.0, description="longest / shortest input side, checked from the header"
    )
    max_batch: int = Field(default=8, ge=1)
    max_wait_ms: float = Field(default=5.0, ge=0)
    queue_size: int = Field(default=64, ge=1, description="requests waiting for the victim; more get 503")
    inference_timeout_s: float = Field(
        default=60.0, gt=0, description="wait for an answer before 504; an isolated model worker is then restarted"
    )
    read_timeout_s: float = Field(default=30.0, gt=0, description="time allowed to receive the upload")
    idempotency_cache: int = Field(
        default=256, ge=0, description="answers kept per key for Idempotency-Key replays (0 disables)"
    )
    request_log: Path | None = Field(default=None, description="JSON-lines audit log of every request")
    isolation: Literal["auto", "worker", "inline"] = Field(
        default="auto", description="where the model runs: a supervised worker process, or inline (see module doc)"
    )
    classify_answer: Literal["topk", "label"] = Field(
        default="topk",
        description="classifiers: answer the top-k labels with probabilities, or the label alone (scores hidden)",
    )
    docs: bool = Field(
        default=False,
        description="serve Swagger UI at /docs (its page loads Swagger's JavaScript from a CDN in the viewer's browser)",
    )

    def usage_path(self) -> Path:
        return (
            self.usage_db
            if self.usage_db is not None
            else self.keys_file.with_name(self.keys_file.name + ".usage.sqlite")
        )


def load_keys(path: Path) -> dict[str, KeyPolicy]:
    """Read the keys file: ``{key: {budget, rate_per_s, burst}}``; errors name the key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"keys file not found: {p}",
            hint='write JSON like {"my-secret-key": {"budget": 1000, "rate_per_s": 5, "burst": 10}}',
        )
    raw = read_json(p, ConfigError)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{p}: expected a non-empty JSON object mapping API keys to their limits")
    keys: dict[str, KeyPolicy] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or len(k) < 8 or any(c.isspace() for c in k):
            raise ConfigError(f"{p}: API key {k[:4]!r}... must be at least 8 characters without spaces")
        if not isinstance(v, dict):
            raise ConfigError(f"{p}: limits of key {k[:4]}... must be an object")
        keys[k] = parse_config(KeyPolicy, v, where=f"{p}[{k[:4]}...]")
    return keys
