"""Whole-image steganography nets: En2D (ur Rehman et al. 2018) and GglNet (Baluja 2017).

Both hide a full-size RGB *secret* image inside an RGB *cover* image of the same size and
reveal it again from the *stego* image. They are pure ``nn.Module`` s (no training, no I/O):

* ``encode(cover, secret) -> stego`` and ``decode(stego) -> revealed`` work on float
  ``N x 3 x H x W`` images in ``[0, 1]``; outputs are *not* clamped (training wants the raw
  values; :mod:`copymark.stego.codecs` clamps and checks sizes for users).
* ``forward(cover, secret) -> (stego, revealed)`` is the training pass (GglNet adds its
  training noise to the stego image there, in ``train()`` mode only).

Architectures
-------------
**En2D** ("End-to-end trained CNN encoder-decoder networks for image steganography",
ur Rehman, Rahim, Nadeem, ul Hussain, ECCV-W 2018, arXiv:1711.07201). The encoder has a
*host* (cover) branch and a *guest* (secret) branch of 3x3 convolutions with ReLU; after the
first conv and then after every second conv the guest features are concatenated onto the
host features (four fusions), and three 1x1 convolutions map the fused features to the stego
image. The decoder is a plain stack of six 3x3 conv + ReLU layers (16, 16, 8, 8, 3, 3
filters at ``width=16``) and a final 3x3 conv to the secret. The paper hides a 1-channel
secret in an RGB cover; the security study (and we) hide an RGB secret, so the guest branch
and the decoder output take 3 channels.

**GglNet** ("Hiding Images in Plain Sight: Deep Steganography", Baluja, NeurIPS 2017). Every
layer is three parallel convolutions (3x3, 4x4, 5x5; 50 filters each, ReLU) whose outputs
are concatenated (150 channels). The *prep* network (2 such layers) turns the secret into
features; the *hiding* network (5 layers + a 1x1 conv to 3 channels) takes the cover
concatenated with those features and makes the stego image; the *reveal* network (5 layers
+ 1x1 conv) recovers the secret. During training a small Gaussian noise is added to the stego
image before revealing, "to ensure that the secret image isn't simply encoded in the LSBs"
(Baluja, Sec. 3); ``noise_std`` is in image units ([0, 1] scale). 4x4 convolutions are
padded asymmetrically (1 before, 2 after) so every layer keeps the spatial size.

Options (the defaults build the papers' nets exactly)
-----------------------------------------------------
``residual_scale`` (both): the hiding net's last layer gives a bounded *residual* on the cover,
``stego = cover + s * tanh(out)``, instead of the stego itself. The paper nets must learn to
reproduce the cover through a stack of ReLU convs, which is what limits their stego PSNR after a
short training (the measured 23-24 dB, with colour tints); with the residual the cover path is
the identity. The last layer keeps its random init: a zero start (stego = cover exactly) is a
saddle where the decoder never learns to read the residual and the codec collapses to
``stego = cover`` with a constant revealed image (measured on CIFAR-10, 1,000-1,200 iterations,
also with the cover term's weight ramped up from 0). ``s = 1.0`` (the recommended value) starts
with a residual of about 40 levels RMS that training shrinks; ``s = 0.1`` (about 4 levels at the
start) collapsed in the same way with the paper's decoder.

``decoder_width`` (En2D): six decoder layers of ``d`` filters instead of the paper's
``w, w, w/2, w/2, 3, 3``. The paper's two 3-filter ReLU layers die early in training (all three
units inactive for every input), which freezes the decoder at a constant output and with it the
codec; ``d = 16`` costs about 20% more per image at ``w = 16`` and learns from the first
iterations.

:meth:`En2D.channel` / :meth:`GglNet.channel` is what the decoder sees of the stego in training
(GglNet: plus its noise); the training procedure (:mod:`copymark.train.stego`) may round the
stego to 8 bits before it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from copymark.config import StrictModel

# ---------------------------------------------------------------------------------------------
# configs


class En2DConfig(StrictModel):
    """Architecture of En2D. ``width`` is the host/guest branch width (16 in the paper)."""

    kind: Literal["en2d"] = "en2d"
    width: int = Field(
        16, ge=2, le=256, description="channels of each encoder branch; decoder uses w, w, w/2, w/2, 3, 3"
    )
    decoder_width: int | None = Field(
        None,
        ge=2,
        le=256,
        description="None: the paper's decoder (w, w, w/2, w/2, 3, 3 filters); a value d: six layers of d filters",
    )
    residual_scale: float | None = Field(
        None,
        gt=0,
        le=1,
        description="None: the encoder outputs the stego (paper); s: stego = cover + s * tanh(encoder), "
        "the identity on the cover at initialisation",
    )


class GglNetConfig(StrictModel):
    """Architecture of GglNet (Baluja 2017): 50 filters per kernel size, 2/5/5 layers."""

    kind: Literal["gglnet"] = "gglnet"
    filters: int = Field(50, ge=1, le=256, description="filters of each of the 3x3, 4x4, 5x5 convs in a layer")
    prep_layers: int = Field(2, ge=1, le=16, description="layers of the secret's preparation net")
    hide_layers: int = Field(5, ge=1, le=16, description="layers of the hiding net")
    reveal_layers: int = Field(5, ge=1, le=16, description="layers of the revealing net")
    noise_std: float = Field(
        0.01, ge=0.0, le=1.0, description="std of the Gaussian noise added to the stego in training"
    )
    residual_scale: float | None = Field(
        None,
        gt=0,
        le=1,
        description="None: the hiding net outputs the stego (paper); s: stego = cover + s * tanh(hiding net), "
        "the identity on the cover at initialisation",
    )


StegoNetConfig = En2DConfig | GglNetConfig


# ---------------------------------------------------------------------------------------------
# En2D


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


def stego_output(cover: torch.Tensor, out: torch.Tensor, residual_scale: float | None) -> torch.Tensor:
    """The stego image from a hiding net's last layer: ``out`` itself (the papers), or
    ``cover + residual_scale * tanh(out)`` (a bounded residual on the cover)."""
    if residual_scale is None:
        return out
    return cover + residual_scale * torch.tanh(out)


class En2DEncoder(nn.Module):
    """Host and guest branches of 3x3 convs; guest features concatenated into the host branch."""

    def __init__(
        self, width: int = 16, cover_channels: int = 3, secret_channels: int = 3, residual_scale: float | None = None
    ):
        super().__init__()
        w = width
        self.residual_scale = residual_scale
        self.guest = nn.ModuleList([_conv3(secret_channels, w)] + [_conv3(w, w) for _ in range(6)])
        # host layer i takes 2w channels right after a fusion (i = 1, 3, 5), w otherwise
        host_in = [cover_channels, 2 * w, w, 2 * w, w, 2 * w, w]
        self.host = nn.ModuleList([_conv3(c, w) for c in host_in])
        self.fuse = nn.Sequential(
            nn.Conv2d(2 * w, w, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, max(w // 2, 1), kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(max(w // 2, 1), cover_channels, kernel_size=1),
        )

    def forward(self, cover: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        h, g = cover, secret
        for i, (hc, gc) in enumerate(zip(self.host, self.guest)):
            h = F.relu(hc(h))
            g = F.relu(gc(g))
            if i % 2 == 0:  # after layers 0, 2, 4, 6: concatenate the guest features
                h = torch.cat([h, g], dim=1)
        return stego_output(cover, self.fuse(h), self.residual_scale)


class En2DDecoder(nn.Module):
    """Six 3x3 conv + ReLU layers (w, w, w/2, w/2, 3, 3 filters; or six of ``decoder_width``)
    and a 3x3 conv to the secret."""

    def __init__(
        self, width: int = 16, stego_channels: int = 3, secret_channels: int = 3, decoder_width: int | None = None
    ):
        super().__init__()
        half = max(width // 2, 1)
        chans = [stego_channels, width, width, half, half, 3, 3]
        if decoder_width is not None:
            chans = [stego_channels] + [decoder_width] * 6
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [_conv3(cin, cout), nn.ReLU(inplace=True)]
        layers.append(_conv3(chans[-1], secret_channels))
        self.body = nn.Sequential(*layers)

    def forward(self, stego: torch.Tensor) -> torch.Tensor:
        return self.body(stego)


class En2D(nn.Module):
    """En2D encoder-decoder pair (ur Rehman et al. 2018) for RGB-in-RGB hiding."""

    def __init__(self, width: int = 16, decoder_width: int | None = None, residual_scale: float | None = None):
        super().__init__()
        self.encoder = En2DEncoder(width, residual_scale=residual_scale)
        self.decoder = En2DDecoder(width, decoder_width=decoder_width)

    def encode(self, cover: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        return self.encoder(cover, secret)

    def decode(self, stego: torch.Tensor) -> torch.Tensor:
        return self.decoder(stego)

    def channel(self, stego: torch.Tensor) -> torch.Tensor:
        """What the decoder sees of the stego in training: the stego itself (no training noise)."""
        return stego

    def forward(self, cover: torch.Tensor, secret: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stego = self.encode(cover, secret)
        return stego, self.decode(self.channel(stego))


# ---------------------------------------------------------------------------------------------
# GglNet


class _SameConv(nn.Conv2d):
    """Stride-1 conv that keeps H x W for odd and even kernels (even: pad 1 more after)."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__(cin, cout, kernel_size=k, padding=0)
        before = (k - 1) // 2
        self._pad = (before, k - 1 - before, before, k - 1 - before)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self._pad))


class TripleConv(nn.Module):
    """One GglNet layer: 3x3, 4x4 and 5x5 convs in parallel (``filters`` each), ReLU, concat."""

    def __init__(self, cin: int, filters: int = 50):
        super().__init__()
        self.c3 = _SameConv(cin, filters, 3)
        self.c4 = _SameConv(cin, filters, 4)
        self.c5 = _SameConv(cin, filters, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(self.c3(x)), F.relu(self.c4(x)), F.relu(self.c5(x))], dim=1)


def _triple_stack(cin: int, filters: int, layers: int) -> nn.Sequential:
    mods = [TripleConv(cin if i == 0 else 3 * filters, filters) for i in range(layers)]
    return nn.Sequential(*mods)


class GglNet(nn.Module):
    """Baluja's prep / hiding / reveal networks."""

    def __init__(
        self,
        filters: int = 50,
        prep_layers: int = 2,
        hide_layers: int = 5,
        reveal_layers: int = 5,
        noise_std: float = 0.01,
        residual_scale: float | None = None,
    ):
        super().__init__()
        self.noise_std = float(noise_std)
        self.residual_scale = residual_scale
        f3 = 3 * filters
        self.prep = _triple_stack(3, filters, prep_layers)
        self.hide = nn.Sequential(_triple_stack(3 + f3, filters, hide_layers), nn.Conv2d(f3, 3, kernel_size=1))
        self.reveal = nn.Sequential(_triple_stack(3, filters, reveal_layers), nn.Conv2d(f3, 3, kernel_size=1))

    def encode(self, cover: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        return stego_output(cover, self.hide(torch.cat([cover, self.prep(secret)], dim=1)), self.residual_scale)

    def decode(self, stego: torch.Tensor) -> torch.Tensor:
        return self.reveal(stego)

    def channel(self, stego: torch.Tensor) -> torch.Tensor:
        """What the reveal network sees of the stego: plus N(0, noise_std^2) in train mode."""
        if self.training and self.noise_std > 0:
            return stego + self.noise_std * torch.randn_like(stego)
        return stego

    def forward(self, cover: torch.Tensor, secret: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: the reveal network sees the stego through :meth:`channel`."""
        stego = self.encode(cover, secret)
        return stego, self.decode(self.channel(stego))


# ---------------------------------------------------------------------------------------------
# builder


def build_stego_net(config: StegoNetConfig) -> En2D | GglNet:
    """Construct the net a config describes (explicit ``match`` on ``kind``)."""
    match config:
        case En2DConfig():
            return En2D(width=config.width, decoder_width=config.decoder_width, residual_scale=config.residual_scale)
        case GglNetConfig():
            return GglNet(
                filters=config.filters,
                prep_layers=config.prep_layers,
                hide_layers=config.hide_layers,
                reveal_layers=config.reveal_layers,
                noise_std=config.noise_std,
                residual_scale=config.residual_scale,
            )
    raise TypeError(f"not a stego net config: {type(config).__name__}")
