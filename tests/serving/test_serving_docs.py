"""docs/API.md stays honest: every `error` code the server's code can send (found in its source),
every metric a live server exports (with its labels), every route, status, header and keys-file
field is in it, and it documents no error code the server cannot send."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import pytest
from servehelpers import CountingVictim, asgi_client, auth, rand_png, settings, write_keys

import copymark.serving
from copymark.cli import main
from copymark.serving.app import create_app
from copymark.serving.http_errors import STATUS_TEXT
from copymark.serving.models import function_classifier
from copymark.serving.settings import KeyPolicy

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "API.md").read_text()
SERVING = Path(copymark.serving.__file__).parent


def emitted_error_codes() -> dict[str, set[str]]:
    """``error`` code -> statuses (as source text), from the serving package's source: every
    ``ApiError(status, "code", ...)`` / ``json_error(status, "code", ...)``, and every
    ``(code, detail)`` a model's ``input_refusal`` returns (answered 422)."""
    codes: dict[str, set[str]] = {}
    for path in SERVING.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                if name in ("ApiError", "json_error") and len(node.args) >= 2:
                    status, code = node.args[0], node.args[1]
                    if isinstance(code, ast.Constant) and isinstance(code.value, str):
                        s = str(status.value) if isinstance(status, ast.Constant) else ast.unparse(status)
                        codes.setdefault(code.value, set()).add(s)
            if isinstance(node, ast.FunctionDef) and node.name == "input_refusal":
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple):
                        first = ret.value.elts[0]
                        if isinstance(first, ast.Constant) and isinstance(first.value, str):
                            codes.setdefault(first.value, set()).add("422")
    return codes


def table_rows(heading: str) -> list[list[str]]:
    """The cells of each row of the first table under ``heading``."""
    section = DOC.split(heading, 1)[1]
    rows = []
    started = False
    for line in section.splitlines():
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set(cells[0]) <= {"-", ""}:
                rows.append(cells)
        elif started:
            break
    return rows[1:]  # without the header row


def test_every_error_code_is_documented_with_its_status_and_no_other():
    codes = emitted_error_codes()
    assert {"rate_limited", "budget_exhausted", "wrong_input_size", "corrupt_image", "http_error"} <= set(codes)
    rows = {}
    for cells in table_rows("## Status and error codes"):
        for code in re.findall(r"`([a-z_]+)`", cells[1]):
            rows[code] = cells
    for code, statuses in codes.items():
        assert code in rows, f"error code {code!r} is not in docs/API.md"
        documented = set(re.findall(r"\d{3}", rows[code][0]))
        for s in statuses:
            if s.isdigit():
                assert s in documented, (code, s, documented)
            else:  # a status computed at run time (Starlette's 404 / 405)
                assert documented, code
        assert len(rows[code]) == 4 and rows[code][2] and rows[code][3], f"{code}: cause and action needed"
    assert set(rows) == set(codes), f"documented but never sent: {set(rows) - set(codes)}"
    for status in STATUS_TEXT:
        assert any(str(status) in cells[0] for cells in rows.values()), status


def _metrics_text(model, tmp_path) -> str:
    write_keys(tmp_path)

    async def go():
        async with asgi_client(model, settings(tmp_path)) as c:
            route = "/v1/translate" if model.output_kind == "image" else "/v1/classify"
            await c.post(route, content=rand_png(16, 16), headers=auth())
            await c.post(route, content=b"x", headers=auth())
            await c.get("/v1/usage", headers=auth())
            return (await c.get("/metrics")).text

    return asyncio.run(go())


@pytest.mark.parametrize("kind", ["image", "label"])
def test_every_exported_metric_and_label_is_documented(tmp_path, kind):
    model = (
        CountingVictim().victim()
        if kind == "image"
        else function_classifier(lambda x: x.mean(dim=(2, 3)), 3, (16, 16), name="mean")
    )
    text = _metrics_text(model, tmp_path)
    names = re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M)
    assert len(names) >= 8
    rows = {re.sub(r"`", "", cells[0]): cells for cells in table_rows("## Metrics")}
    for name, kind_ in names:
        assert name in rows, f"metric {name} is not in docs/API.md"
        assert rows[name][1] == kind_, (name, rows[name][1], kind_)
        labels = set()
        for sample in re.findall(rf"^{name}(?:_bucket|_sum|_count)?\{{([^}}]*)\}}", text, flags=re.M):
            labels |= {kv.split("=")[0] for kv in sample.split(",")}
        for label in labels:
            assert f"`{label}`" in rows[name][2], (name, label, rows[name][2])
    assert set(rows) == {n for n, _ in names}, "documented metrics the server does not export"


def test_every_route_header_status_and_keys_field_is_documented(tmp_path):
    write_keys(tmp_path)
    apps = [
        create_app(CountingVictim().victim(), settings(tmp_path, docs=True)),
        create_app(function_classifier(lambda x: x.mean(dim=(2, 3)), 3, (16, 16)), settings(tmp_path)),
    ]
    assert "## `/docs` (Swagger UI)" in DOC and "### `GET /openapi.json`" in DOC
    for app in apps:
        headers = set()
        for path, ops in app.openapi()["paths"].items():
            for method, op in ops.items():
                assert f"### `{method.upper()} {path}`" in DOC, (method, path)
                headers |= {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
                for resp in op["responses"].values():
                    headers |= set(resp.get("headers", {}))
        header_rows = {re.sub(r"`|:.*", "", cells[0]).strip() for cells in table_rows("## Headers")}
        assert headers - {"Authorization"} <= header_rows, headers - header_rows
    assert "Authorization: Bearer <key>" in DOC
    key_rows = {cells[0].strip("`") for cells in table_rows("## The keys file")}
    assert set(KeyPolicy.model_fields) <= key_rows


def test_serve_help_points_to_the_api_doc(capsys):
    assert main(["serve", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "docs/API.md" in out and "--classifier" in out and "--answer" in out
