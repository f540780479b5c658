"""UGATIT generator (full and light) and CAM discriminators."""

from __future__ import annotations

import _nets_counts as _counts
import pytest
import torch
import torch.nn.functional as F

from copymark.nets import count_parameters
from copymark.nets.ugatit import ILN, AdaLIN, UGATITDiscriminator, UGATITGenerator


def test_param_counts():
    # No published per-network count was found; the figures are the exact sums over the layers
    # of znxlwm/UGATIT-pytorch networks.py (ResnetGenerator / Discriminator) at the reference's
    # training settings (main.py: --ch 64 --n_res 4 --img_size 256; disGA n_layers=7, disLA 5).
    # Whole model (2 G + 2 global D + 2 local D): 670.76 M full, 134.02 M light.
    with torch.device("meta"):
        full = count_parameters(UGATITGenerator())
        light = count_parameters(UGATITGenerator(light=True))
        dg = count_parameters(UGATITDiscriminator(n_layers=7))
        dl = count_parameters(UGATITDiscriminator(n_layers=5))
    assert full == _counts.ugatit_generator() == 278_959_808
    assert light == _counts.ugatit_generator(light=True) == 10_589_888
    assert dg == _counts.ugatit_discriminator(n_layers=7) == 53_130_176
    assert dl == _counts.ugatit_discriminator(n_layers=5) == 3_290_560
    assert f"{(2 * (full + dg + dl)) / 1e6:.1f}" == "670.8"
    assert f"{(2 * (light + dg + dl)) / 1e6:.1f}" == "134.0"


def test_generator_full_and_light_shapes_range_determinism():
    torch.manual_seed(0)
    full = UGATITGenerator(ngf=4, n_blocks=2, img_size=32).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        y, cam, heat = full.forward_cam(x)
        assert torch.equal(full(x), y)
    assert y.shape == x.shape and cam.shape == (2, 2) and heat.shape == (2, 1, 8, 8)
    assert y.min() >= 0 and y.max() <= 1
    with pytest.raises(ValueError, match="light=True"):
        full(torch.rand(1, 3, 48, 48))
    light = UGATITGenerator(ngf=4, n_blocks=2, light=True).eval()
    x2 = torch.rand(1, 3, 40, 24)
    with torch.no_grad():
        assert light(x2).shape == x2.shape
        assert torch.equal(light(x2), light(x2))


def test_discriminators_shapes():
    torch.manual_seed(0)
    for n_layers, size, out in [(5, 64, 6), (7, 256, 6)]:
        d = UGATITDiscriminator(ndf=2, n_layers=n_layers).eval()
        x = torch.rand(2, 3, size, size)
        with torch.no_grad():
            logits, cam, heat = d.forward_cam(x)
            assert torch.equal(d(x), logits)  # eval: spectral norm's power iteration is frozen
        assert logits.shape == (2, 1, out, out)
        assert cam.shape == (2, 2)
        assert heat.shape[:2] == (2, 1)
    assert any("weight_orig" in k for k in d.state_dict())  # spectral norm in place


def test_adalin_and_iln_mix_instance_and_layer_norm():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 7) * 3 + 1
    gamma, beta = torch.ones(2, 5), torch.zeros(2, 5)
    a = AdaLIN(5)
    with torch.no_grad():
        a.rho.fill_(1.0)
        assert torch.allclose(a(x, gamma, beta), F.instance_norm(x), atol=1e-5)
        a.rho.fill_(0.0)
        assert torch.allclose(a(x, gamma, beta), F.layer_norm(x, x.shape[1:]), atol=1e-5)
        g2, b2 = torch.full((2, 5), 2.0), torch.full((2, 5), 0.5)
        assert torch.allclose(a(x, g2, b2), 2 * F.layer_norm(x, x.shape[1:]) + 0.5, atol=1e-5)
    iln = ILN(5)  # rho starts at 0: pure layer norm
    with torch.no_grad():
        assert torch.allclose(iln(x), F.layer_norm(x, x.shape[1:]), atol=1e-5)


def test_clip_rho():
    g = UGATITGenerator(ngf=4, n_blocks=1, light=True)
    with torch.no_grad():
        for p in (g.up_blocks[0].norm1.rho, g.up[3].rho):
            p.fill_(1.7)
        g.up[8].rho.fill_(-0.3)
    g.clip_rho_()
    rhos = [m.rho.detach() for m in g.modules() if isinstance(m, (AdaLIN, ILN))]
    assert len(rhos) == 4
    assert all(float(r.min()) >= 0 and float(r.max()) <= 1 for r in rhos)
    assert float(g.up_blocks[0].norm1.rho.detach().max()) == 1.0 and float(g.up[8].rho.detach().min()) == 0.0
