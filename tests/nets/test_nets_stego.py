"""Stego nets (En2D, GglNet): paper parameter counts, and the residual / decoder-width options."""

from __future__ import annotations

import pytest
import torch
from _nets_counts import conv
from torch import nn

from copymark.nets import count_parameters
from copymark.nets.stego import En2D, En2DConfig, GglNet, GglNetConfig, build_stego_net


def en2d_count(w: int = 16, decoder_width: int | None = None) -> int:
    """ur Rehman et al. 2018 (RGB secret): guest 7 convs, host 7 convs (2w in after each fusion),
    three 1x1 fuse convs, decoder six 3x3 convs (w, w, w/2, w/2, 3, 3) + one to the secret."""
    h = w // 2
    guest = conv(3, w, 3, True) + 6 * conv(w, w, 3, True)
    host = sum(conv(c, w, 3, True) for c in (3, 2 * w, w, 2 * w, w, 2 * w, w))
    fuse = conv(2 * w, w, 1, True) + conv(w, h, 1, True) + conv(h, 3, 1, True)
    chans = [3, w, w, h, h, 3, 3] if decoder_width is None else [3] + [decoder_width] * 6
    dec = sum(conv(a, b, 3, True) for a, b in zip(chans[:-1], chans[1:])) + conv(chans[-1], 3, 3, True)
    return guest + host + fuse + dec


def gglnet_count(f: int = 50, prep: int = 2, hide: int = 5, reveal: int = 5) -> int:
    """Baluja 2017: each layer is 3x3, 4x4, 5x5 convs of f filters (biased); 1x1 convs to RGB."""

    def layer(cin: int) -> int:
        return sum(conv(cin, f, k, True) for k in (3, 4, 5))

    def stack(cin: int, n: int) -> int:
        return layer(cin) + (n - 1) * layer(3 * f)

    return (
        stack(3, prep) + stack(3 + 3 * f, hide) + conv(3 * f, 3, 1, True) + stack(3, reveal) + conv(3 * f, 3, 1, True)
    )


def test_paper_parameter_counts():
    """The default configs build the papers' nets; the residual option adds no parameter."""
    assert count_parameters(build_stego_net(En2DConfig())) == en2d_count(16) == 41_238
    with torch.device("meta"):
        assert count_parameters(build_stego_net(GglNetConfig())) == gglnet_count() == 3_775_206
        assert count_parameters(build_stego_net(GglNetConfig(residual_scale=0.1))) == gglnet_count()
    assert count_parameters(build_stego_net(En2DConfig(residual_scale=0.1))) == en2d_count(16)
    assert count_parameters(build_stego_net(En2DConfig(width=24, decoder_width=32))) == en2d_count(24, 32)


def test_default_config_is_the_paper_layout():
    net = build_stego_net(En2DConfig())
    assert net.encoder.residual_scale is None
    dec = [m.out_channels for m in net.decoder.body if isinstance(m, torch.nn.Conv2d)]
    assert dec == [16, 16, 8, 8, 3, 3, 3]
    wide = build_stego_net(En2DConfig(decoder_width=24))
    assert [m.out_channels for m in wide.decoder.body if isinstance(m, torch.nn.Conv2d)] == [24] * 6 + [3]


def _pair(n: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.rand(n, 3, size, size, generator=g)


RESIDUAL = {
    "en2d": En2DConfig(width=4, residual_scale=0.05),
    "gglnet": GglNetConfig(filters=4, prep_layers=1, hide_layers=1, reveal_layers=1, residual_scale=0.05),
}


def _head(net):
    return net.encoder.fuse[-1] if isinstance(net, En2D) else net.hide[-1]


@pytest.mark.parametrize("kind", ["en2d", "gglnet"])
def test_residual_stego_is_cover_plus_bounded_residual(kind):
    """stego = cover + s * tanh(head): the cover passes unchanged when the head outputs 0, and
    the residual never exceeds s, whatever the weights."""
    torch.manual_seed(0)
    net = build_stego_net(RESIDUAL[kind])
    cover, secret = _pair()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
        r = (net.encode(cover, secret) - cover).abs()
        # (float32: cover + s * tanh - cover may exceed s by a rounding step of values near 1, < 1e-6)
        assert float(r.max()) <= 0.05 + 1e-6 and float(r.max()) > 0.01
        nn.init.zeros_(_head(net).weight)
        nn.init.zeros_(_head(net).bias)
        assert torch.equal(net.encode(cover, secret), cover)


@pytest.mark.parametrize("kind", ["en2d", "gglnet"])
def test_residual_head_keeps_a_random_init(kind):
    """The head starts random (not zero): a zero start is a saddle where the decoder never learns
    to read the residual and the codec collapses to stego = cover (measured; see train.stego)."""
    torch.manual_seed(0)
    net = build_stego_net(RESIDUAL[kind])
    cover, secret = _pair()
    assert float(_head(net).weight.detach().abs().sum()) > 0
    stego, revealed = net(cover, secret)
    assert not torch.equal(stego, cover)
    ((revealed - secret) ** 2).mean().backward()
    assert float(_head(net).weight.grad.abs().sum()) > 0


def test_gglnet_channel_noise_only_in_training():
    net = GglNet(filters=4, prep_layers=1, hide_layers=1, reveal_layers=1, noise_std=0.1)
    x = torch.rand(1, 3, 32, 32)
    assert not torch.equal(net.train().channel(x), x)
    assert torch.equal(net.eval().channel(x), x)
    assert torch.equal(En2D(width=4).train().channel(x), x)
