"""/openapi.json: served, accurate (a bounded schemathesis run against a real uvicorn server: no
5xx, every status, content type, header and body as declared) and revealing no architecture."""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from servehelpers import CountingVictim, auth, write_keys
from servehelpers import settings as serve_settings

from copymark.serving.app import create_app
from copymark.serving.models import load_model
from copymark.serving.server import BackgroundServer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("openapi")
    write_keys(d, budget=10**6, rate=1e6, burst=10**6)
    with BackgroundServer(create_app(CountingVictim().victim(), serve_settings(d, max_pixels=4096))) as srv:
        yield srv


@pytest.mark.parametrize("path", ["/v1/translate", "/v1/info", "/v1/health", "/metrics"])
def test_api_conforms_to_its_schema(server, path):
    """Hypothesis-generated requests per operation (bounded: 15 each, derandomized); with a
    valid key, so that generated bodies reach the upload and decoder checks."""
    api = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [r.ok() for r in api.get_all_operations() if r.ok().path == path]
    assert len(operations) == 1

    @given(case=operations[0].as_strategy())
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case):
        case.call_and_validate(base_url=server.url, headers=auth(), checks=CHECKS)

    check()


def test_schema_names_no_model(tmp_path):
    """The schema of a served bicubic model and of a python: entry point says nothing about
    either: no name, kind, parameter, module or id; only what /v1/info declares in general."""
    write_keys(tmp_path)
    texts = []
    for model in (load_model("classical:bicubic_x4?sharpen=1"), load_model("python:models_for_tests:hanging_net")):
        app = create_app(model, serve_settings(tmp_path, isolation="inline"))
        texts.append((json.dumps(app.openapi()).lower(), model))
    assert texts[0][0] == texts[1][0]  # the same document whatever is served
    text = texts[0][0]
    for model in (m for _, m in texts):
        for secret in (model.name, model.id, *map(str, model.params), "bicubic", "matlab", "sharpen"):
            assert secret.lower() not in text, secret
    for secret in ("models_for_tests", "hanging", "python:", "classical", "unet", "resnet", "torchscript"):
        assert secret not in text, secret
    paths = json.loads(texts[0][0])["paths"]
    assert set(paths) == {"/v1/translate", "/v1/info", "/v1/health", "/v1/usage", "/metrics"}


def test_openapi_json_is_served(server):
    r = httpx.get(f"{server.url}/openapi.json")
    assert r.status_code == 200 and r.json()["info"]["title"] == "copymark victim API"
    body = r.json()["paths"]["/v1/translate"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/png" in body
