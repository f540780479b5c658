"""Steganalyzers: SRM kernels, shapes, AUC reference, checkpoints."""

from __future__ import annotations

import pytest
import torch

from copymark.errors import WeightsError
from copymark.nets.steganalysis import (
    KV,
    TLU,
    SRNet,
    SRNetConfig,
    XuNetConfig,
    YeNet,
    YeNetConfig,
    build_steganalyzer,
    srm_kernels,
    stego_score,
)
from copymark.stego.detect import load_steganalyzer, save_steganalyzer

TINY = {
    "xunet": XuNetConfig(width=2),
    "yenet": YeNetConfig(channels=4, deep_channels=4, final_channels=4),
    "srnet": SRNetConfig(c1=4, c2=4, c9=4, c10=4, c11=4, c12=4),
}


def test_srm_kernels_are_30_distinct_high_pass_filters():
    k = srm_kernels().double()
    assert k.shape == (30, 5, 5)
    assert len({tuple(x.flatten().tolist()) for x in k}) == 30
    # every kernel annihilates a constant image
    assert k.sum(dim=(1, 2)).abs().max() < 1e-6
    # first-order kernels: a single +1 off-centre and -1 at the centre
    for x in k[:8]:
        assert x[2, 2] == -1 and x.sum() == 0 and (x != 0).sum() == 2
    # second and third order, SQUARE/EDGE kernels also annihilate linear ramps (in x and in y)
    yy, xx = torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij")
    for x in k[8:]:
        assert abs(float((x * xx.double()).sum())) < 1e-6
        assert abs(float((x * yy.double()).sum())) < 1e-6
    # third order: x[n-d] - 3x[n] + 3x[n+d] - x[n+2d] also annihilates quadratics along d
    assert abs(float((k[16] * xx.double() ** 2).sum())) < 1e-6
    # SQUARE 5x5 is the KV kernel; normalisations: 1/2, 1/3, 1/4, 1/12 of the centre taps
    assert torch.allclose(k[25].float(), KV)
    assert float(k[8, 2, 2]) == -1.0 and float(k[16, 2, 2]) == -1.0
    assert float(k[20, 2, 2]) == -1.0 and float(k[25, 2, 2]) == -1.0


def test_tlu_truncates():
    x = torch.tensor([-5.0, -3.0, 0.5, 3.0, 7.0])
    assert torch.equal(TLU(3.0)(x), torch.tensor([-3.0, -3.0, 0.5, 3.0, 3.0]))


def test_yenet_first_layer_holds_srm_per_channel():
    net = YeNet()
    w = net.srm.weight.detach()
    assert w.shape == (90, 1, 5, 5) and net.srm.groups == 3
    for c in range(3):
        assert torch.equal(w[30 * c : 30 * (c + 1), 0], srm_kernels())
    assert net.srm.weight.requires_grad  # initial weights, trained as in the paper


def test_srnet_has_no_pooling_in_first_seven_layers():
    net = SRNet()
    first7 = net.layers[:7]
    assert not any(isinstance(m, (torch.nn.AvgPool2d, torch.nn.MaxPool2d)) for m in first7.modules())
    assert len(net.layers) == 12
    x = torch.rand(1, 3, 32, 32)
    assert first7(x).shape[-2:] == (32, 32)


@pytest.mark.parametrize("kind", ["xunet", "yenet", "srnet"])
@pytest.mark.parametrize("size", [32, 48, 256])
def test_shapes_and_scores(kind, size):
    net = build_steganalyzer(TINY[kind]).eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        logits = net(x)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    s = stego_score(logits)
    assert s.shape == (2,) and float(s.min()) >= 0 and float(s.max()) <= 1


@pytest.mark.parametrize("kind", ["xunet", "yenet", "srnet"])
def test_full_size_builds(kind):
    cfg = {"xunet": XuNetConfig(), "yenet": YeNetConfig(), "srnet": SRNetConfig()}[kind]
    with torch.no_grad():
        assert build_steganalyzer(cfg).eval()(torch.rand(1, 3, 64, 64)).shape == (1, 2)


def test_steganalyzer_checkpoint(tmp_path):
    cfg = TINY["srnet"]
    net = build_steganalyzer(cfg).eval()
    save_steganalyzer(tmp_path / "s", net, cfg)
    loaded, cfg2, _ = load_steganalyzer(tmp_path / "s", expected_kind="srnet")
    x = torch.rand(2, 3, 32, 32)
    assert cfg2 == cfg and torch.equal(loaded(x), net(x))
    with pytest.raises(WeightsError, match="not a 'yenet'"):
        load_steganalyzer(tmp_path / "s", expected_kind="yenet")
