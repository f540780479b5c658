"""``onnx:PATH`` victims: ONNX graphs made in the test (exported from small torch nets) served
through the real API (uvicorn, worker process) with the pixels of the in-process model; the
convention read from the graph, the options and the sidecar; every bad input a one-line error
(exit 2); and, in the slow tier, the real AnimeGANv3 JP_face graph against onnxruntime run by hand."""

from __future__ import annotations

import asyncio
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnx_graphs
import pytest
import torch
from servehelpers import auth, rand_png, settings, write_keys
from tests.conftest import require_shared

from copymark.cli import main
from copymark.errors import ConfigError, CopymarkError
from copymark.images import decode_image_bytes, encode_png, quantize, to_uint8
from copymark.onnx_graphs import OnnxNet
from copymark.serving.app import create_app
from copymark.serving.execution import WorkerRunner
from copymark.serving.models import load_model
from copymark.serving.server import BackgroundServer
from copymark.translate import wrap_module

U16 = 2.0**-11  # float16 unit roundoff (10 stored mantissa bits, round to nearest)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    sr, sr_net = onnx_graphs.sr_graph(d / "sr.onnx")
    anime, anime_net = onnx_graphs.anime_like_graph(d / "anime_like.onnx")
    return {"dir": d, "sr": sr, "sr_net": sr_net, "anime": anime, "anime_net": anime_net}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return onnx_graphs.bad_graphs(tmp_path_factory.mktemp("bad_onnx"))


def _contract(model):
    net = model.fn.net
    assert isinstance(net, OnnxNet)
    return net.contract


# ---------------------------------------------------------------------------------------------
# served through the API


def test_onnx_graph_served_through_the_api_gives_the_in_process_pixels(tmp_path, graphs):
    model = load_model(f"onnx:{graphs['sr']}")
    c = _contract(model)
    assert (c.layout, c.dtype, c.batch, c.fixed_size, c.stride, c.scale) == ("NCHW", "float32", None, None, 2, 2)
    assert (c.input, c.output, c.value_range, c.color_order) == ("image", "out", (0.0, 1.0), "RGB")
    assert (model.task, model.scale) == ("sr", 2)
    assert model.source is not None and model.source.spec == f"onnx:{graphs['sr'].resolve()}"
    write_keys(tmp_path, budget=5)
    png = rand_png(21, 30, seed=3)  # odd sizes: padded to the stride, cropped back
    x = decode_image_bytes(png)[None]
    app = create_app(model, settings(tmp_path))
    assert app.state.copymark.runner.isolation == "worker"  # rebuilt in its own process from the spec
    with BackgroundServer(app) as srv:
        r = httpx.post(f"{srv.url}/v1/translate", content=png, headers=auth(), timeout=60)
        info = httpx.get(f"{srv.url}/v1/info").json()
    assert r.status_code == 200, r.text
    got = decode_image_bytes(r.content)
    assert got.shape == (3, 42, 60) and info["scale"] == 2 and info["victim_id"] == model.id
    assert torch.equal(got, quantize(model(x))[0])  # the worker's pixels are the in-process pixels
    # and the graph computes the torch net it was exported from: float32 with fewer than 100
    # products per output (values within [0, 1] at every layer's scale) rounds to ~1e-6
    ref = wrap_module(graphs["sr_net"], stride=2, scale=2)  # the same padding and cropping, in torch
    assert torch.allclose(model(x), ref(x), atol=2e-5)


def _fp16_error_bound(net: onnx_graphs.AnimeLikeNet, x: torch.Tensor) -> torch.Tensor:
    """An a-priori bound on |float16 graph - float32 net| for NHWC input ``x`` in [-1, 1].

    With float16's unit roundoff u, a sum of K products computed in float16 is within
    gamma_K = K u / (1 - K u) of the exact sum of the terms' magnitudes (Higham, Accuracy and
    Stability of Numerical Algorithms, section 3.1); every rounded result adds u times its
    magnitude. Each layer's error is carried to the output through the absolute values of the
    later linear maps (leaky ReLU, tanh and bilinear interpolation are 1-Lipschitz and shrink
    magnitudes; permutes are exact); the magnitudes are those of the same net with absolute
    weights on the absolute input, in float64. The weights are the graph's float16 values."""

    def gamma(k: int) -> float:
        return k * U16 / (1 - k * U16)

    def conv(conv: torch.nn.Conv2d, a: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = conv.weight.double().abs(), conv.bias.double().abs()
        pad = lambda t: torch.nn.functional.pad(t, (1, 1, 1, 1), mode="reflect")
        a2 = torch.nn.functional.conv2d(pad(a), w, b, stride=conv.stride)
        k = w[0].numel() + 1
        e2 = torch.nn.functional.conv2d(pad(e), w, stride=conv.stride) + (gamma(k) + 2 * U16) * a2
        return a2, e2  # 2u: the output rounding and the leaky ReLU's product

    a = x.permute(0, 3, 1, 2).double().abs()
    e = U16 * a  # the input rounded to float16
    a, e = conv(net.c1, a, e)
    a, e = conv(net.c2, a, e)
    up = lambda t: torch.nn.functional.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False)
    a = up(a)
    e = up(e) + (gamma(4) + 5 * U16) * a  # four products and their float16 weights
    a, e = conv(net.c3, a, e)
    e = e + 2 * U16  # tanh: float16 rounding of a value within [-1, 1], plus its own error
    return e.permute(0, 2, 3, 1)


def test_float16_nhwc_batch1_graph_fed_one_image_at_a_time_gives_the_same_pixels(tmp_path, graphs):
    """AnimeGANv3's convention: the graph's shapes tell NHWC, float16 and batch 1; the option
    tells the value range. A batch of several images is fed one at a time, in process and
    in the worker, and several concurrent requests are all answered."""
    import onnxruntime as ort

    spec = f"onnx:{graphs['anime']}?value_range=-1,1"
    model = load_model(spec)
    c = _contract(model)
    assert (c.layout, c.dtype, c.batch, c.stride, c.scale) == ("NHWC", "float16", 1, 2, 1)
    assert c.input == onnx_graphs.ANIME_INPUT and model.task == "style"
    session = ort.InferenceSession(str(graphs["anime"]), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="index: 0 Got: 3 Expected: 1"):  # the graph itself takes batch 1 only
        session.run(None, {c.input: np.zeros((3, 8, 8, 3), np.float16)})
    x = quantize(torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(1)))
    y = model(x)
    alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert torch.equal(y, alone)  # a batch of 3 is three batches of 1
    # the convention is right: within the float16 error bound of the float32 torch net ([0, 1] units)
    nhwc = (x * 2 - 1).permute(0, 2, 3, 1)
    with torch.no_grad():
        ref = (graphs["anime_net"](nhwc) + 1) / 2
    bound = _fp16_error_bound(graphs["anime_net"], nhwc) / 2 + 1e-6
    assert bool(((y.permute(0, 2, 3, 1) - ref).abs() <= bound).all())
    # the supervised worker answers a batch of 3 with the in-process pixels
    runner = WorkerRunner(model, timeout_s=120)
    try:
        runner.prepare()
        results = asyncio.run(runner.run(x))
    finally:
        runner.close()
    assert all(isinstance(r, torch.Tensor) for r in results)
    assert torch.equal(torch.stack(results), to_uint8(y))  # type: ignore[arg-type]
    # and through the API, concurrent requests (which the batcher may stack)
    write_keys(tmp_path, budget=10)
    pngs = [encode_png(x[i]) for i in range(3)]
    with BackgroundServer(create_app(model, settings(tmp_path, max_batch=4, max_wait_ms=50))) as srv:

        def post(body: bytes) -> httpx.Response:
            return httpx.post(f"{srv.url}/v1/translate", content=body, headers=auth(), timeout=60)

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(post, pngs))
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    for i, a in enumerate(answers):
        assert torch.equal(decode_image_bytes(a.content), quantize(y[i]))


def test_sidecar_says_what_options_say_and_the_id_follows_what_changes_answers(tmp_path, graphs):
    d = tmp_path / "with_sidecar"
    d.mkdir()
    graph = shutil.copy(graphs["anime"], d / "anime_like.onnx")
    sidecar = d / "anime_like.onnx.json"
    sidecar.write_text(json.dumps({"value_range": [-1, 1], "layout": "NHWC"}))
    by_sidecar = load_model(f"onnx:{graph}")
    by_option = load_model(f"onnx:{graphs['anime']}?value_range=-1,1")
    assert by_sidecar.id == by_option.id  # same graph bytes, same contract: same victim
    assert load_model(f"onnx:{graphs['anime']}?value_range=-1,1&layout=NHWC&batch=1").id == by_option.id
    x = quantize(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(by_sidecar(x), by_option(x))
    assert load_model(f"onnx:{graph}?value_range=-1,1").id == by_option.id  # saying it twice, the same
    other = load_model(f"onnx:{graphs['anime']}?value_range=0,1")
    assert other.id != by_option.id and not torch.equal(other(x), by_option(x))
    assert load_model(f"onnx:{graphs['anime']}?value_range=-1,1&color_order=BGR").id != by_option.id
    assert load_model(f"onnx:{graphs['sr']}").id != by_option.id
    with pytest.raises(ConfigError, match=r"the spec says value_range=0,1 but the sidecar .* value_range=-1,1"):
        load_model(f"onnx:{graph}?value_range=0,1")
    sidecar.write_text(json.dumps({"value_range": [-1, 1], "colour_order": "BGR"}))
    with pytest.raises(ConfigError, match="unknown key 'colour_order'"):
        load_model(f"onnx:{graph}")
    sidecar.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="the sidecar must be a JSON object"):
        load_model(f"onnx:{graph}")


def test_bgr_0_255_graph_and_a_declared_batch_get_their_convention(tmp_path, graphs):
    graph, net = onnx_graphs.plain_graph(tmp_path / "bgr255.onnx")
    model = load_model(f"onnx:{graph}?value_range=0,255&color_order=bgr")
    c = _contract(model)
    assert (c.value_range, c.color_order, c.layout, c.stride, c.scale) == ((0.0, 255.0), "BGR", "NCHW", 1, 1)
    x = quantize(torch.rand(3, 3, 12, 17, generator=torch.Generator().manual_seed(5)))
    with torch.no_grad():
        ref = (net(x.flip(1) * 255) / 255).flip(1).clamp(0, 1)
    # 28 float32 products of values up to 255, then / 255: rounding well under 1e-5
    assert torch.allclose(model(x), ref, atol=1e-5)
    twos = load_model(f"onnx:{graphs['sr']}?batch=2")  # a free batch fed 2 at a time (the last run padded)
    assert _contract(twos).batch == 2 and twos.id != load_model(f"onnx:{graphs['sr']}").id
    assert torch.allclose(twos(x), load_model(f"onnx:{graphs['sr']}")(x), atol=2e-5)


def test_fixed_size_graph_runs_in_tiles_and_output_can_be_picked(tmp_path, bad):
    fixed = load_model(f"onnx:{bad['fixed']}")
    c = _contract(fixed)
    assert (c.fixed_size, c.batch, c.layout, c.scale) == ((16, 16), 1, "NCHW", 1)
    x = quantize(torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(4)))
    assert torch.allclose(fixed(x), x, atol=1e-6)  # an identity graph, tiled at 16 x 16 and blended
    with pytest.raises(ConfigError, match=r"says fixed_size=32,32, but the graph's input .* has fixed_size 16,16"):
        load_model(f"onnx:{bad['fixed']}?fixed_size=32")
    with pytest.raises(ConfigError, match="says scale=2, but the graph maps 16x16 to 16x16"):
        load_model(f"onnx:{bad['fixed']}?scale=2")
    picked = load_model(f"onnx:{bad['two_outputs']}?output=image_out")
    assert _contract(picked).output == "image_out" and picked(x).shape == x.shape


# ---------------------------------------------------------------------------------------------
# bad input: one line (and a hint), exit status 2


def _serve_error(tmp_path, capsys, *args: str) -> str:
    keys = write_keys(tmp_path)
    assert main(["serve", "--keys", str(keys), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), err
    return err


@pytest.mark.parametrize(
    "name, options, expected",
    [
        ("two_inputs", "", "the graph has 2 inputs ('image' (n x 3 x h x w, tensor(float)), 'strength'"),
        ("rank2", "", "has 2 axes, not an image batch"),
        ("four_channels", "", "is not an RGB image batch (no axis of 3 channels at 1 or 3)"),
        (
            "four_channels",
            "?layout=NCHW",
            "layout=NCHW puts the channels on axis 1, but the graph's input 'image' (1 x 4 x 8 x 8) has 4 there",
        ),
        ("ambiguous", "", "cannot tell the layout of the graph's input 'image' (1 x 3 x 8 x 3)"),
        ("uint8", "", "is tensor(uint8); copymark feeds float32, float16 or float64 images"),
        ("classifier", "", "output 'out' (n x 10, tensor(float)) is not an RGB image batch (2 axes"),
        ("grey", "", "is not an RGB image batch (1 channels on axis 1, layout NCHW)"),
        ("two_outputs", "", "output 'logits' (n x 3, tensor(float)) is not an RGB image batch"),
        ("two_outputs", "?output=heatmap", "names output 'heatmap', but the graph's outputs are 'logits', 'image_out'"),
        (
            "sr",
            "?layout=NHWC",
            "layout=NHWC contradicts the graph's input 'image' (n x 3 x h x w) (3 channels on axis 1: NCHW)",
        ),
        ("anime", "?layout=NCHW", "layout=NCHW contradicts the graph's input 'AnimeLike_input:0' (1 x h x w x 3)"),
        ("anime", "?batch=4", "says batch=4, but the graph's input 'AnimeLike_input:0' (1 x h x w x 3) has batch 1"),
        ("sr", "?scale=4", "says scale=4, but one forward pass maps 32x32 to 64x64 (scale 2)"),
        ("sr", "?stride=3", "a 1 x 3 x 33 x 33 probe input came back as (1, 3, 64, 64) (as NCHW), not an RGB image"),
        ("sr", "?colour=BGR", "unknown option 'colour'"),
        ("sr", "?scale=2&scale=2", "option 'scale' is given twice"),
        ("sr", "?value_range=0,2", "'value_range': Value error, must be one of [0, 1], [-1, 1], [0, 255]"),
        ("sr", "?scale=two", "'scale': Input should be a valid integer"),
    ],
)
def test_bad_onnx_victims_exit_2_with_one_line(tmp_path, capsys, graphs, bad, name, options, expected):
    path = graphs.get(name) or bad[name]
    err = _serve_error(tmp_path, capsys, "--victim", f"onnx:{path}{options}")
    assert expected in err, err


def test_bad_files_devices_and_weights_are_one_line_errors(tmp_path, capsys, graphs):
    import onnxruntime as ort

    err = _serve_error(tmp_path, capsys, "--victim", f"onnx:{tmp_path / 'missing.onnx'}")
    assert "ONNX graph not found" in err
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07 not a protobuf of a graph" * 10)
    err = _serve_error(tmp_path, capsys, "--victim", f"onnx:{tmp_path / 'junk.onnx'}")
    assert "onnxruntime cannot load the graph" in err
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(graphs["sr"].read_bytes()[:-200])
    assert "onnxruntime cannot load the graph" in _serve_error(tmp_path, capsys, "--victim", f"onnx:{truncated}")
    err = _serve_error(tmp_path, capsys, "--victim", "onnx:")
    assert "names no graph file" in err
    err = _serve_error(tmp_path, capsys, "--victim", str(graphs["sr"]))
    assert "an ONNX graph is given as onnx:" in err
    err = _serve_error(tmp_path, capsys, "--victim", f"onnx:{graphs['sr']}", "--weights", str(graphs["sr"]))
    assert "only for python: victims" in err
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        err = _serve_error(
            tmp_path, capsys, "--victim", f"onnx:{graphs['sr']}", "--device", "cuda", "--isolation", "inline"
        )
        assert "this onnxruntime has no CUDA provider" in err
    with pytest.raises(ConfigError, match="ONNX graphs run on cpu or cuda"):
        load_model(f"onnx:{graphs['sr']}", device="meta")


@pytest.mark.gpu
def test_cuda_provider_gives_the_cpu_pixels_within_float_rounding(graphs):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu (the CUDA execution provider); this onnxruntime has none")
    cpu, cuda = load_model(f"onnx:{graphs['sr']}"), load_model(f"onnx:{graphs['sr']}", device="cuda")
    assert cuda.id == cpu.id  # the device does not change what the victim is
    x = quantize(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(cuda(x), cpu(x), atol=2e-5)  # TF32 is off in onnxruntime's CUDA provider by default


# ---------------------------------------------------------------------------------------------
# the real AnimeGANv3 JP_face graph (slow tier)


@pytest.mark.slow
def test_animeganv3_served_through_the_api_equals_onnxruntime_by_the_manifest_recipe(tmp_path):
    """MANIFEST.md's recipe: RGB uint8 -> x / 127.5 - 1 -> float16 NHWC batch 1 -> the graph ->
    (y + 1) / 2; copymark quantizes to 8 bits by rounding (the recipe's astype(uint8) truncates:
    within one level of it)."""
    import onnxruntime as ort
    from PIL import Image

    folder = require_shared("weights", "animeganv3_jpface")
    faces = require_shared("selfie2anime", "testA")
    graph = folder / "AnimeGANv3_JP_face_v1.0_fp16.onnx"
    face = sorted(faces.glob("*.jpg"))[0]
    rgb = np.array(Image.open(face).convert("RGB"))
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    x = (rgb.astype(np.float32) / 127.5 - 1).astype(np.float16)[None]
    y = session.run(None, {"AnimeGANv3_input:0": x})[0][0].astype(np.float32)
    expected = to_uint8(torch.from_numpy((y + 1) / 2).permute(2, 0, 1))
    truncated = np.clip((y + 1) / 2 * 255, 0, 255).astype(np.uint8)

    model = load_model(f"onnx:{graph}?value_range=-1,1")
    c = _contract(model)
    assert (c.layout, c.dtype, c.batch, c.stride, c.scale) == ("NHWC", "float16", 1, 8, 1)
    write_keys(tmp_path, budget=2)
    with BackgroundServer(create_app(model, settings(tmp_path))) as srv:
        r = httpx.post(f"{srv.url}/v1/translate", content=face.read_bytes(), headers=auth(), timeout=120)
    assert r.status_code == 200, r.text
    got = to_uint8(decode_image_bytes(r.content))
    assert got.shape == (3, *rgb.shape[:2]) and rgb.shape[0] % 8 == 0 and rgb.shape[1] % 8 == 0  # no padding
    assert torch.equal(got, expected)
    assert int((got.permute(1, 2, 0).int() - torch.from_numpy(truncated).int()).abs().max()) <= 1
    assert float((got.float() - torch.from_numpy(rgb).permute(2, 0, 1).float()).abs().mean()) > 10  # it did restyle


def test_copymark_errors_are_raised_in_process_too(graphs, bad):
    with pytest.raises(CopymarkError, match="the graph has 2 inputs"):
        load_model(f"onnx:{bad['two_inputs']}")
