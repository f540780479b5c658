"""Inference: padding to the stride, overlapping tiles, scale, TorchScript, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from copymark.errors import ImageError, WeightsError
from copymark.images import save_image
from copymark.translate import (
    load_translation_model,
    probe_stride_scale,
    reflect_pad,
    translate_batch,
    translate_folder,
    wrap_module,
)


class TinyStrided(nn.Module):
    """Fully convolutional, stride 4 (two stride-2 convs, two transposed convs), no global stats."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(x * 2 - 1))


class TinySR(nn.Module):
    """x2 super-resolution with PixelShuffle; stride 1."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 12, 3, padding=1)
        self.ps = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.ps(self.c1(x)))


def _img(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 4 + 1, w // 4 + 1, generator=g)
    return torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)


def test_probe_finds_stride_and_scale():
    torch.manual_seed(0)
    assert probe_stride_scale(TinyStrided().eval(), torch.device("cpu")) == (4, 1)
    assert probe_stride_scale(TinySR().eval(), torch.device("cpu")) == (1, 2)


def test_attributes_override_probe():
    net = TinyStrided()
    net.stride, net.scale = 8, 1  # type: ignore[assignment]
    m = wrap_module(net)
    assert (m.stride, m.scale) == (8, 1)


@pytest.mark.parametrize("h,w", [(37, 53), (64, 64), (5, 3), (1, 9)])
def test_any_size_pads_and_crops_back(h, w):
    torch.manual_seed(0)
    m = wrap_module(TinyStrided())
    x = _img(h, w)
    y = m(x)
    assert y.shape == (1, 3, h, w)
    assert 0 <= float(y.min()) and float(y.max()) <= 1
    # an exact multiple of the stride is passed through unpadded: equals the raw net
    if h % 4 == 0 and w % 4 == 0:
        with torch.no_grad():
            assert torch.equal(y, m.net(x).clamp(0, 1))


def test_tiles_match_whole_image_for_fully_convolutional_net():
    torch.manual_seed(0)
    m = wrap_module(TinyStrided())
    x = _img(101, 150, seed=1)
    whole = translate_batch(m, x)
    tiled = translate_batch(m, x, tile=48, overlap=24)
    # the receptive field (~ 22 px) is inside the overlap; ramps put low weight near tile edges
    assert (tiled - whole).abs().max() < 2e-3
    assert (tiled - whole).abs().mean() < 2e-4
    # without overlap, seams show: the test above could fail
    seams = translate_batch(m, x, tile=48, overlap=0)
    assert (seams - whole).abs().max() > (tiled - whole).abs().max()


def test_sr_scale_and_tiles():
    torch.manual_seed(0)
    m = wrap_module(TinySR())
    assert m.scale == 2
    x = _img(33, 47)
    whole = translate_batch(m, x)
    assert whole.shape == (1, 3, 66, 94)
    tiled = translate_batch(m, x, tile=16, overlap=4)
    assert torch.allclose(tiled, whole, atol=1e-5)  # 3x3 receptive field: exact up to rounding


def test_deterministic_in_eval_mode_with_dropout():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Dropout(0.5), nn.Sigmoid())
    m = wrap_module(net)
    x = _img(20, 20)
    assert torch.equal(m(x), m(x))
    assert not net.training


def test_torchscript_loads(tmp_path):
    torch.manual_seed(0)
    net = TinyStrided().eval()
    scripted = torch.jit.script(net)
    p = tmp_path / "model.pt"
    scripted.save(str(p))
    m = load_translation_model(p)
    assert (m.stride, m.scale, m.kind) == (4, 1, "torchscript")
    x = _img(30, 41)
    assert torch.allclose(m(x), wrap_module(net)(x), atol=1e-6)


def test_bad_inputs(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_translation_model(tmp_path / "nope")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="TorchScript"):
        load_translation_model(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no model found"):
        load_translation_model(tmp_path / "empty")
    m = wrap_module(TinySR())
    with pytest.raises(ImageError):
        m(torch.rand(1, 1, 8, 8))


def test_reflect_pad_larger_than_image():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    y = reflect_pad(x, 3, 4, 5, 2)
    assert y.shape == (1, 1, 9, 10)
    assert torch.equal(y[..., 3:5, 5:8], x)


def test_translate_folder(tmp_path):
    torch.manual_seed(0)
    src = tmp_path / "in"
    for i, (h, w) in enumerate([(17, 23), (40, 32)]):
        save_image(_img(h, w, seed=i)[0], src / f"img{i}.png")
    outs = translate_folder(wrap_module(TinySR()), src, tmp_path / "out", progress=False)
    from copymark.images import load_image

    assert [tuple(load_image(p).shape) for p in outs] == [(3, 34, 46), (3, 80, 64)]


def _export_onnx(net: nn.Module, path) -> str:
    """``net`` as an ONNX graph with free batch and size; its onnx: spec."""
    import warnings

    dynamic = {"image": {0: "n", 2: "h", 3: "w"}, "out": {0: "n", 2: "oh", 3: "ow"}}
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated (it needs no onnxscript)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(), (torch.rand(1, 3, 16, 16),), str(path), dynamo=False,
            input_names=["image"], output_names=["out"], dynamic_axes=dynamic, opset_version=17,
        )  # fmt: skip
    return f"onnx:{path}"


def test_onnx_graph_translates_like_the_torch_net_it_was_exported_from(tmp_path):
    from pathlib import Path

    from copymark.errors import ConfigError

    torch.manual_seed(0)
    net = TinyStrided().eval()
    spec = _export_onnx(net, tmp_path / "tiny.onnx")
    m = load_translation_model(Path(spec))  # what `copymark translate --model` passes
    assert (m.kind, m.stride, m.scale, m.fixed_size) == ("onnx", 4, 1, None)  # probed through onnxruntime
    ref = wrap_module(net, stride=4, scale=1)
    x = _img(30, 41)
    # float32 in both; a handful of layers of fewer than 150 products each: rounding ~1e-6
    assert torch.allclose(m(x), ref(x), atol=2e-5)
    assert torch.allclose(
        translate_batch(m, x, tile=16, overlap=8), translate_batch(ref, x, tile=16, overlap=8), atol=2e-5
    )
    assert load_translation_model(spec, stride=4, scale=1).stride == 4
    with pytest.raises(ConfigError, match=r"--stride/--scale says scale=2, but one forward pass maps 32x32 to 32x32"):
        load_translation_model(spec, scale=2)
    with pytest.raises(WeightsError, match="an ONNX graph is given as onnx:"):
        load_translation_model(tmp_path / "tiny.onnx")


def test_translate_command_takes_onnx_graphs(tmp_path, capsys):
    from copymark.cli import main
    from copymark.images import load_image, quantize

    torch.manual_seed(1)
    spec = _export_onnx(TinySR(), tmp_path / "sr.onnx")
    src = tmp_path / "in"
    for i, (h, w) in enumerate([(17, 23), (24, 20)]):
        save_image(_img(h, w, seed=i)[0], src / f"img{i}.png")
    assert (
        main(["translate", "--model", spec, "--input", str(src), "--output", str(tmp_path / "out"), "--no-progress"])
        == 0
    )
    m = load_translation_model(spec)
    for i in range(2):
        got = load_image(tmp_path / "out" / f"img{i}.png")
        assert torch.equal(got, quantize(m(load_image(src / f"img{i}.png")[None]))[0])
    assert got.shape == (3, 48, 40)
    capsys.readouterr()
    args = ["translate", "--model", spec + "?value_range=0,2", "--input", str(src), "--output", str(tmp_path / "o2")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "value_range" in err and "Traceback" not in err
    assert not (tmp_path / "o2").exists()
