"""The model's inference API: an app factory that only assembles.

``create_app(model, settings)`` builds the app's state (:mod:`.state`), installs the JSON
error handlers (:mod:`.http_errors`) and includes the routers (:mod:`.routes`); docs/API.md
describes every endpoint, header, status and error code:

* the model's route, by the kind of its answers (:data:`MODEL_ROUTERS`): ``POST /v1/translate``
  for image -> image models (the answer as PNG), ``POST /v1/classify`` for classifiers (the
  label, and the top-k probabilities unless ``classify_answer="label"``, as JSON). Image bytes
  in (multipart field ``image`` or the raw body), ``X-Request-Id`` and ``X-Budget-Remaining``
  out; optional ``Idempotency-Key`` (replays are free; see :mod:`.answering`).
* ``GET /v1/usage`` (the caller's own budget, spending and rate limit; authenticated, free),
  ``GET /v1/health``, ``GET /v1/info`` (task, opaque model id, interface, limits; never the
  architecture), ``GET /metrics`` (Prometheus text), ``GET /openapi.json`` (the schema of all
  of these; it names no model, kind or parameter), and ``GET /docs`` (Swagger UI) only when
  ``settings.docs``: its page loads Swagger's JavaScript from a CDN in the viewer's browser,
  where users may paste an API key, so it is off unless the owner asks for it.

Checks, in order, each a JSON error ``{"error": code, "detail": text}``: auth, rate limit and
budget (:mod:`.deps`), the upload and its image header (:mod:`.uploads`), the model's own
input checks, then the model (:mod:`.answering`): 401, 403, 429, 400, 402, 413, 408, 422, 415,
413, 422, 503, 504, 500. Only a 200 answer of the model's route is charged to the key's budget.

The model runs where ``settings.isolation`` says (:mod:`.execution`): a supervised worker
process for models built from a spec (a crash or hang fails only the requests it was
answering), or an inference thread for in-process callables.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from copymark.errors import ConfigError
from copymark.serving.http_errors import install_error_handlers
from copymark.serving.models import ServedModel
from copymark.serving.routes import classify, info, metrics, translate, usage
from copymark.serving.settings import ServeSettings
from copymark.serving.state import AppState

MODEL_ROUTERS = {"image": translate.router, "label": classify.router}  # the route of each kind of answer
DESCRIPTION = (
    "A model behind a budgeted, rate-limited API. Authenticate with `Authorization: Bearer <key>`. "
    'Every error is JSON `{"error": code, "detail": text}`; the codes, headers, metrics and the usage '
    "ledger are described in copymark's docs/API.md."
)


def create_app(model: ServedModel, settings: ServeSettings) -> FastAPI:
    """Build the inference API around ``model`` with the limits of ``settings``."""
    if model.output_kind not in MODEL_ROUTERS:
        raise ConfigError(f"no API route serves models whose answers are {model.output_kind!r}")
    state = AppState(model, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="copymark victim API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs" if settings.docs else None,
        redoc_url=None,
    )
    app.state.copymark = state
    install_error_handlers(app)
    app.include_router(info.router)
    app.include_router(metrics.router)
    app.include_router(usage.router)
    app.include_router(MODEL_ROUTERS[model.output_kind])
    return app


def start_model(app: FastAPI) -> None:
    """Start the app's model now (its worker, if isolated) and wait until it is built; raises
    a CopymarkError saying why it cannot start. The lifespan does this too, so it is optional:
    ``copymark serve`` calls it to fail with a one-line error before listening."""
    app.state.copymark.runner.prepare()
