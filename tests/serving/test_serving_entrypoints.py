"""`python:PKG.MODULE:FACTORY --weights FILE` victims: a net given only as a module path and a
state dict, served through the real API (worker process), and every bad input as a one-line
error with exit status 2."""

from __future__ import annotations

import httpx
import pytest
import torch
from safetensors.torch import save_file
from servehelpers import auth, rand_png, settings, write_keys

from copymark.cli import main
from copymark.errors import ConfigError, WeightsError
from copymark.images import decode_image_bytes, quantize, to_uint8
from copymark.serving.app import create_app
from copymark.serving.models import load_model
from copymark.serving.server import BackgroundServer

SPEC = "python:models_for_tests:tiny_bgr_net"


def _state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    import models_for_tests

    torch.manual_seed(seed)
    return {k: v.clone() for k, v in models_for_tests.TinyBGRNet().state_dict().items()}


def _reference(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The declared convention by hand: RGB [0, 1] -> BGR [-1, 1] -> net -> back."""
    import models_for_tests

    net = models_for_tests.TinyBGRNet().eval()
    net.load_state_dict(sd)
    with torch.no_grad():
        y = net(x.flip(1) * 2 - 1)
    return ((y + 1) / 2).flip(1).clamp(0, 1)


def test_python_entry_point_served_through_the_api_gives_the_in_process_pixels(tmp_path):
    sd = _state_dict()
    save_file(sd, str(tmp_path / "tiny.safetensors"))
    write_keys(tmp_path, budget=3)
    model = load_model(SPEC, weights=tmp_path / "tiny.safetensors")
    assert (model.task, model.scale) == ("sr", 2)
    png = rand_png(20, 28, seed=5)
    x = decode_image_bytes(png)[None]
    app = create_app(model, settings(tmp_path))
    assert app.state.copymark.runner.isolation == "worker"  # rebuilt in its own process from spec + weights
    with BackgroundServer(app) as srv:
        r = httpx.post(f"{srv.url}/v1/translate", content=png, headers=auth(), timeout=60)
        info = httpx.get(f"{srv.url}/v1/info").json()
    assert r.status_code == 200, r.text
    got = decode_image_bytes(r.content)
    assert got.shape == (3, 40, 56) and info["scale"] == 2 and info["victim_id"] == model.id
    assert torch.equal(got, quantize(model(x))[0])  # the worker's pixels are the in-process pixels
    # and the convention was applied: within one 8-bit level of the hand-made reference (float
    # rounding of the same operations may move a value across a rounding boundary, never more)
    diff = (to_uint8(got).int() - to_uint8(_reference(sd, x)[0]).int()).abs()
    assert int(diff.max()) <= 1 and float((diff == 0).float().mean()) > 0.99
    assert load_model(SPEC, weights=tmp_path / "tiny.safetensors").id == model.id
    save_file(_state_dict(seed=1), str(tmp_path / "other.safetensors"))
    assert load_model(SPEC, weights=tmp_path / "other.safetensors").id != model.id


def test_spec_options_declare_the_convention_of_a_module_that_does_not(tmp_path):
    import models_for_tests

    torch.manual_seed(0)
    net = models_for_tests.PlainNet().eval()
    torch.save(net.state_dict(), tmp_path / "plain.pt")  # a torch.save state dict, read with weights_only
    model = load_model(
        "python:models_for_tests:plain_net?value_range=-1,1&scale=1&stride=1", weights=tmp_path / "plain.pt"
    )
    x = quantize(torch.rand(2, 3, 16, 20, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        ref = ((net(x * 2 - 1) + 1) / 2).clamp(0, 1)
    assert torch.allclose(model(x), ref, atol=1e-6)


def _serve(tmp_path, capsys, *args: str) -> str:
    keys = write_keys(tmp_path)
    assert main(["serve", "--keys", str(keys), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("python:no_such_module_xyz:build", "cannot import module 'no_such_module_xyz'"),
        ("python:nosuchpkg.mod:build", "cannot import module 'nosuchpkg.mod'"),
        ("python:models_for_tests:nope", "module 'models_for_tests' has no factory 'nope'"),
        ("python:models_for_tests:NOT_CALLABLE", "is a int, not a factory function"),
        ("python:models_for_tests:not_a_module", "not_a_module() returned int, not a torch.nn.Module"),
        ("python:models_for_tests:failing_factory", "failing_factory() raised RuntimeError"),
        ("python:models_for_tests", "is not of the form python:PKG.MODULE:FACTORY"),
        ("python:models_for_tests:hanging_net?colour=BGR", "unknown option 'colour'"),
        (SPEC + "?scale=4", "option scale=4 contradicts the module's declared scale 2"),
        (SPEC + "?value_range=0,1", "contradicts the module's declared value_range"),
        ("python:models_for_tests:plain_net?value_range=0,2", "value_range '0,2' is not one of"),
    ],
)
def test_bad_python_victims_exit_2_with_one_line(tmp_path, capsys, spec, expected):
    save_file(_state_dict(), str(tmp_path / "tiny.safetensors"))
    weights = ["--weights", str(tmp_path / "tiny.safetensors")] if "tiny_bgr" in spec or "plain" in spec else []
    err = _serve(tmp_path, capsys, "--victim", spec, *weights)
    assert expected in err, err


def test_state_dict_mismatches_are_named(tmp_path, capsys):
    sd = _state_dict()
    sd["extra.bias"] = torch.zeros(3)
    del sd["conv.bias"]
    save_file(sd, str(tmp_path / "bad.safetensors"))
    err = _serve(tmp_path, capsys, "--victim", SPEC, "--weights", str(tmp_path / "bad.safetensors"))
    assert "missing keys conv.bias" in err and "unexpected keys extra.bias" in err
    sd = _state_dict()
    sd["conv.weight"] = torch.zeros(12, 3, 5, 5)
    save_file(sd, str(tmp_path / "shape.safetensors"))
    with pytest.raises(
        WeightsError, match=r"shape mismatch conv.weight \(file \(12, 3, 5, 5\), module \(12, 3, 3, 3\)\)"
    ):
        load_model(SPEC, weights=tmp_path / "shape.safetensors")
    prefixed = {f"module.{k}": v for k, v in _state_dict().items()}
    save_file(prefixed, str(tmp_path / "ddp.safetensors"))
    with pytest.raises(WeightsError) as ei:
        load_model(SPEC, weights=tmp_path / "ddp.safetensors")
    assert "module." in (ei.value.hint or "")


def test_weights_that_are_not_a_plain_state_dict_are_refused(tmp_path, capsys):
    import models_for_tests

    torch.save({"conv.weight": models_for_tests.Payload()}, tmp_path / "pickle.pt")  # code, not data
    with pytest.raises(WeightsError, match="refused by torch.load\\(weights_only=True\\)"):
        load_model(SPEC, weights=tmp_path / "pickle.pt")
    torch.save({"params_ema": _state_dict()}, tmp_path / "nested.pt")
    with pytest.raises(WeightsError, match="nested dicts params_ema") as ei:
        load_model(SPEC, weights=tmp_path / "nested.pt")
    assert "weights_key" in (ei.value.hint or "")
    assert load_model(SPEC + "?weights_key=params_ema", weights=tmp_path / "nested.pt").scale == 2
    sd = _state_dict()
    sd["conv.bias"][0] = float("nan")
    save_file(sd, str(tmp_path / "nan.safetensors"))
    with pytest.raises(WeightsError, match="NaN or infinite values: conv.bias"):
        load_model(SPEC, weights=tmp_path / "nan.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_model(SPEC, weights=tmp_path / "junk.safetensors")
    err = _serve(tmp_path, capsys, "--victim", SPEC, "--weights", str(tmp_path / "missing.safetensors"))
    assert "weights file not found" in err


def test_weights_required_for_a_module_with_parameters_and_only_for_python_specs(tmp_path, capsys):
    err = _serve(tmp_path, capsys, "--victim", SPEC)
    assert "no --weights were given" in err
    save_file(_state_dict(), str(tmp_path / "tiny.safetensors"))
    err = _serve(tmp_path, capsys, "--victim", "classical:stylize", "--weights", str(tmp_path / "tiny.safetensors"))
    assert "only for python: victims" in err
    with pytest.raises(ConfigError, match="only for python"):
        load_model("classical:stylize", weights=tmp_path / "tiny.safetensors")
    assert load_model("python:models_for_tests:hanging_net").scale == 1  # no parameters: no weights needed
