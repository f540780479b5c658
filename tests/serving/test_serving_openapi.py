"""/openapi.json: served, accurate (a bounded schemathesis run against real uvicorn servers, a
translation and a classifier one: no 5xx, every status, content type, header and body as
declared), described (every route, parameter, response and header) and revealing no
architecture; /docs only when asked."""

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
from servehelpers import CountingVictim, auth, rand_png, write_keys
from servehelpers import settings as serve_settings

from copymark.serving.app import create_app
from copymark.serving.classifiers import load_classifier
from copymark.serving.models import function_classifier, load_model
from copymark.serving.server import BackgroundServer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _classifier():
    return function_classifier(lambda x: x.mean(dim=(2, 3)) * 8, 3, (16, 16), class_names=("r", "g", "b"))


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """A translation server and a classifier server, each on real uvicorn."""
    out = {}
    for kind, model in (("image", CountingVictim().victim()), ("label", _classifier())):
        d = tmp_path_factory.mktemp(f"openapi-{kind}")
        write_keys(d, budget=10**6, rate=1e6, burst=10**6)
        out[kind] = BackgroundServer(create_app(model, serve_settings(d, max_pixels=4096))).start()
    yield out
    for srv in out.values():
        srv.stop()


@pytest.fixture(scope="module")
def server(servers):
    return servers["image"]


def _operation(url: str, path: str):
    api = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [r.ok() for r in api.get_all_operations() if r.ok().path == path]
    assert len(operations) == 1
    return operations[0]


@pytest.mark.parametrize(
    "kind, path",
    [
        ("image", "/v1/translate"),
        ("image", "/v1/info"),
        ("image", "/v1/health"),
        ("image", "/v1/usage"),
        ("image", "/metrics"),
        ("label", "/v1/classify"),
        ("label", "/v1/info"),
        ("label", "/v1/usage"),
    ],
)
def test_api_conforms_to_its_schema(servers, kind, path):
    """Hypothesis-generated requests per operation (bounded: 15 each, derandomized); with a
    valid key, so that generated bodies reach the upload and decoder checks."""
    url = servers[kind].url
    operation = _operation(url, path)

    @given(case=operation.as_strategy())
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case):
        case.call_and_validate(base_url=url, headers=auth(), checks=CHECKS)

    check()


@pytest.mark.parametrize("top_k", [1, 3, 100])
def test_a_real_classify_answer_and_its_replay_conform(servers, top_k):
    """Generated bodies are rarely images of the classifier's size: send real ones, answered
    200 (and replayed), and validate status, headers and body against the schema."""
    url = servers["label"].url
    operation = _operation(url, "/v1/classify")
    png = rand_png(16, 16, seed=top_k)
    for _ in range(2):  # the answer, then its replay
        case = operation.Case(body=png, media_type="image/png", query={"top_k": top_k})
        response = case.call(base_url=url, headers={**auth(), "Idempotency-Key": f"conform-{top_k}"})
        case.validate_response(response, checks=CHECKS)
        assert response.status_code == 200 and len(response.json()["top_k"]) == min(top_k, 3)
    assert response.headers["idempotent-replay"] == ["true"]  # schemathesis keeps header values as lists


def test_every_route_parameter_response_and_header_is_described(servers):
    """What /docs shows comes with words: a summary and description per operation, a
    description per parameter, per response (not FastAPI's default 'Successful Response') and
    per response header, for both kinds of server."""
    for kind, srv in servers.items():
        doc = httpx.get(f"{srv.url}/openapi.json").json()
        assert "docs/API.md" in doc["info"]["description"]
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                where = f"{kind} {method.upper()} {path}"
                assert op.get("summary") and op.get("description"), where
                for param in op.get("parameters", []):
                    assert param.get("description"), (where, param["name"])
                for status, resp in op["responses"].items():
                    assert resp.get("description") not in (None, "", "Successful Response"), (where, status)
                    for name, header in resp.get("headers", {}).items():
                        assert header.get("description"), (where, status, name)
        for name, schema in doc["components"]["schemas"].items():
            for field, prop in schema.get("properties", {}).items():
                if name not in ("HTTPValidationError", "ValidationError"):
                    assert prop.get("description"), (name, field)


def test_swagger_ui_only_when_asked(tmp_path, server):
    assert httpx.get(f"{server.url}/docs").status_code == 404
    write_keys(tmp_path)
    with BackgroundServer(create_app(_classifier(), serve_settings(tmp_path, docs=True))) as srv:
        r = httpx.get(f"{srv.url}/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"] and "/openapi.json" in r.text


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


def test_classifier_schema_names_no_model(tmp_path):
    write_keys(tmp_path)
    texts = []
    for spec in ("python:models_for_tests:colour_classifier", "python:models_for_tests:undeclared_classifier"):
        model = load_classifier(spec, input_size=(16, 16))
        texts.append(json.dumps(create_app(model, serve_settings(tmp_path, isolation="inline")).openapi()).lower())
    assert texts[0] == texts[1]
    for secret in ("models_for_tests", "colour", "undeclared", "python:", '"red"', '"green"', "input_size="):
        assert secret not in texts[0], secret
    assert set(json.loads(texts[0])["paths"]) == {"/v1/classify", "/v1/info", "/v1/health", "/v1/usage", "/metrics"}


def test_openapi_json_is_served(server):
    r = httpx.get(f"{server.url}/openapi.json")
    assert r.status_code == 200 and r.json()["info"]["title"] == "copymark victim API"
    body = r.json()["paths"]["/v1/translate"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/png" in body
