"""SRResNet and the SRGAN discriminator."""

from __future__ import annotations

import _nets_counts as _counts
import pytest
import torch

from copymark.nets import count_parameters
from copymark.nets.srresnet import SRGANDiscriminator, SRResNet


def test_param_counts():
    # Ledig et al. 2017 (arXiv 1609.04802) give no parameter count; SRResNet is commonly quoted
    # as "1.5 M". The exact sum over the layers of their Fig. 4 (biased convs, BN, one-slope PReLU)
    # is 1,549,462; with per-channel PReLU slopes it would be 1,550,659.
    with torch.device("meta"):
        g = count_parameters(SRResNet())
        d = count_parameters(SRGANDiscriminator())
        g2 = count_parameters(SRResNet(scale=2))
    assert g == _counts.srresnet() == 1_549_462
    assert f"{g / 1e6:.1f}" == "1.5"
    assert g2 == _counts.srresnet(scale=2)
    # Fig. 4 discriminator on 96x96 crops: 8 convs, dense 1024 over 6x6x512, dense 1.
    assert d == _counts.srgan_discriminator() == 23_565_505


@pytest.mark.parametrize("scale", [2, 4])
def test_srresnet_shapes_range_determinism(scale):
    torch.manual_seed(0)
    net = SRResNet(scale=scale, n_blocks=2, nf=8).eval()
    x = torch.rand(2, 3, 10, 13)
    with torch.no_grad():
        y1, y2 = net(x), net(x)
    assert y1.shape == (2, 3, 10 * scale, 13 * scale)
    assert torch.equal(y1, y2)
    assert y1.min() >= 0 and y1.max() <= 1


def test_srresnet_without_bn_has_no_batchnorm():
    net = SRResNet(n_blocks=2, nf=8, batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_srgan_discriminator_any_size_and_paper_layout_at_96():
    torch.manual_seed(0)
    net = SRGANDiscriminator(ndf=4, dense=16).eval()
    for h, w in [(96, 96), (40, 72), (128, 100)]:
        with torch.no_grad():
            y = net(torch.rand(3, 3, h, w))
        assert y.shape == (3, 1)
    # At 96 px the feature map is already 6x6: the adaptive pooling is the identity.
    with torch.no_grad():
        f = net.features(torch.rand(1, 3, 96, 96))
    assert f.shape[-2:] == (6, 6)
    assert torch.equal(net.pool(f), f)


def test_srresnet_image_skip_starts_as_bicubic_and_learns_a_residual():
    from torch.nn import functional as F

    torch.manual_seed(0)
    net = SRResNet(scale=4, n_blocks=2, nf=8, image_skip=True).eval()
    x = torch.rand(2, 3, 12, 10)
    from copymark.images import quantize, upscale_bicubic

    up = upscale_bicubic(x, 4)  # the evaluation's bicubic baseline (MATLAB-style)
    with torch.no_grad():
        assert torch.equal(net(x), up)  # untrained: exactly the baseline's bicubic upscaling, bit for bit
        assert torch.equal(quantize(net(x)), quantize(up))
    # same parameter count as without the skip (it adds no weights)
    assert count_parameters(net) == count_parameters(SRResNet(scale=4, n_blocks=2, nf=8))
    # a few steps towards a sharpened target move the output off bicubic and lower the loss
    target = (up + 0.5 * (up - F.avg_pool2d(up, 3, 1, 1, count_include_pad=False))).clamp(0, 1)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(80):
        loss = F.mse_loss(net(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]
    net.eval()
    with torch.no_grad():
        y = net(x)
    assert y.min() >= 0 and y.max() <= 1 and not torch.equal(y, up)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        assert torch.allclose(scripted(x), y, atol=1e-6)
