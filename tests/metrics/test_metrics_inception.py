"""The FID Inception-v3: builder, key mapping, strict loading, FID-specific blocks, weight errors.

We do not have pytorch-fid's weight file here, so we save a state dict with its key names and
shapes (torchvision's Inception3 with 1008 classes and no aux head, the layout of
pt_inception-2015-12-05-6726825d.pth) and load that strictly.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import inception as tv_inception

from copymark.errors import WeightsError
from copymark.metrics.inception import (
    WEIGHTS_ENV,
    WEIGHTS_FILE_NAME,
    FIDInceptionA,
    FIDInceptionE,
    InceptionFeatures,
    fid_inception_key_map,
    inception_v3_features,
)


@pytest.fixture(scope="module")
def fid_layout_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    tv = tv_inception.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    state = tv.state_dict()
    for k, v in state.items():  # He-normal convs keep activations O(1) through the 94 layers
        if k.endswith("conv.weight"):
            v.normal_(0.0, (2.0 / v[0].numel()) ** 0.5)
        elif k.endswith("running_mean") or k.endswith("bn.bias"):
            v.normal_(0.0, 0.05)
    return state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, fid_layout_state) -> str:
    p = tmp_path_factory.mktemp("inception") / WEIGHTS_FILE_NAME
    torch.save(fid_layout_state, p)
    return str(p)


def test_key_map_covers_the_file_layout_exactly(fid_layout_state):
    mapped = fid_inception_key_map(fid_layout_state)
    ours = InceptionFeatures().state_dict()
    assert set(mapped) == set(ours)
    for k, v in mapped.items():
        assert v.shape == ours[k].shape, k
    assert "fc.weight" in fid_layout_state and "inception.fc.weight" not in mapped


def test_loads_strictly_and_gives_2048_features(weights_file, fid_layout_state):
    net = inception_v3_features(weights_file)
    assert not net.training and net.input_size == 299
    assert not any(p.requires_grad for p in net.parameters())
    sd = net.state_dict()
    key = "inception.Mixed_7c.branch_pool.conv.weight"
    assert torch.equal(sd[key], fid_layout_state["Mixed_7c.branch_pool.conv.weight"])
    net.input_size = 75  # the same weights on the smallest input Inception-v3 takes: cheap on CPU
    x = torch.rand(2, 3, 40, 56)
    f = net(x)
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    assert torch.equal(f, net(x))  # deterministic in eval mode
    assert (f >= 0).all()  # pool of ReLU outputs
    assert f.mean() > 0.01  # the loaded weights are used (a zero/garbage net would not give this)
    assert (f[0] - f[1]).abs().max() > 1e-3


@pytest.mark.slow
def test_full_299_forward(weights_file):
    net = inception_v3_features(weights_file)
    f = net(torch.rand(1, 3, 64, 64))
    assert f.shape == (1, 2048) and torch.isfinite(f).all()


def test_env_var_and_missing_num_batches_tracked(tmp_path, monkeypatch, fid_layout_state):
    state = {k: v for k, v in fid_layout_state.items() if not k.endswith("num_batches_tracked")}
    p = tmp_path / "w.pth"
    torch.save(state, p)
    monkeypatch.setenv(WEIGHTS_ENV, str(p))
    net = inception_v3_features()
    assert isinstance(net, InceptionFeatures)


def test_missing_weights_say_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(WeightsError) as e:
        inception_v3_features()
    text = str(e.value)
    for needle in (WEIGHTS_FILE_NAME, "github.com/mseitzer/pytorch-fid", WEIGHTS_ENV, "--inception-weights"):
        assert needle in text
    with pytest.raises(WeightsError, match="not found.*nope.pth"):
        inception_v3_features(tmp_path / "nope.pth")


def test_foreign_weights_fail_strictly(tmp_path, fid_layout_state):
    state = dict(fid_layout_state)
    del state["Mixed_6e.branch7x7dbl_5.conv.weight"]
    p = tmp_path / "bad.pth"
    torch.save(state, p)
    with pytest.raises(WeightsError, match="missing"):
        inception_v3_features(p)


def test_fid_blocks_pool_like_tensorflow():
    torch.manual_seed(0)
    x = torch.randn(1, 192, 6, 6)
    blk = FIDInceptionA(192, pool_features=32).eval()
    tv = tv_inception.InceptionA(192, pool_features=32).eval()
    tv.load_state_dict(blk.state_dict())
    with torch.no_grad():
        out, out_tv = blk(x), tv(x)
        # pool branch is the last 32 channels; it must use padding-excluded averages
        bp = blk.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    torch.testing.assert_close(out[:, -32:], bp)
    torch.testing.assert_close(out[:, :-32], out_tv[:, :-32])
    assert not torch.allclose(out[:, -32:], out_tv[:, -32:])  # borders differ from torchvision's
    e2 = FIDInceptionE(64, pool="max").eval()
    y = torch.randn(1, 64, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(e2(y)[:, -192:], e2.branch_pool(F.max_pool2d(y, 3, 1, 1)))


@pytest.mark.slow
def test_cli_fid_and_kid_with_a_weight_file(weights_file, tmp_path, capsys):
    import json

    from copymark import images
    from copymark.cli import main

    g = torch.Generator().manual_seed(0)
    for i in range(4):
        r = torch.rand(3, 32, 32, generator=g)
        images.save_image(r, tmp_path / "ref" / f"{i}.png")
        images.save_image((r * 0.5).clamp(0, 1), tmp_path / "pred" / f"{i}.png")
    out = tmp_path / "o.json"
    argv = [
        "metrics",
        "--pred",
        str(tmp_path / "pred"),
        "--ref",
        str(tmp_path / "ref"),
        "--fid",
        "--inception-weights",
        weights_file,
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    res = json.loads(out.read_text())["metrics"]
    assert res["fid"]["value"] > 0 and res["kid"]["n"] == 4  # --fid reports KID too
    assert "FID" in capsys.readouterr().out
