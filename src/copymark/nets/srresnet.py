"""SRResNet generator and SRGAN discriminator (Ledig et al. 2017, arXiv 1609.04802, Fig. 4).

SRResNet: 9x9 conv (64) + PReLU; ``n_blocks`` residual blocks (3x3 conv, BN, PReLU, 3x3 conv,
BN, + input); 3x3 conv + BN, plus the output of the first conv (the global skip); per x2 stage a
3x3 conv 64 -> 256, PixelShuffle(2), PReLU (``log2(scale)`` stages: scale 2 or 4); a 9x9 conv
to 3 channels. PReLUs have one shared slope (PyTorch's default ``nn.PReLU()``); every conv has a
bias. ``batch_norm=False`` drops the BN layers (the EDSR / MSRResNet observation that BN hurts
PSNR-oriented training); the default follows the paper.

I/O: LR images in ``[0, 1]``, converted to ``[-1, 1]`` inside ``forward``; the output is
``(tanh(x) + 1) / 2`` in ``[0, 1]`` at ``scale`` times the input size (the paper scales HR
targets to ``[-1, 1]``; tanh is how the common PyTorch ports, e.g. leftthomas/SRGAN, bound it).

``image_skip=True`` (not in the paper; off by default) makes the net predict a residual on top
of the bicubic upscale of its input, as VDSR and BasicSR's MSRResNet do (MATLAB-style bicubic,
:mod:`copymark.resample`, the same as the SR baselines of the evaluation): the last conv starts
at zero, so the untrained net *is* bicubic upscaling, and training only has to learn what the
target adds to it (sharpening, detail). Output clamped to ``[0, 1]`` in eval mode. Small nets
trained briefly (the demo, tests) reach a given PSNR far sooner this way.

SRGAN discriminator: 8 3x3 convs 64-64-128-128-256-256-512-512 (strides 1,2,1,2,...), BN on all
but the first, LeakyReLU(0.2); then dense 1024, LeakyReLU(0.2), dense 1 (a logit, no sigmoid).
The paper's dense layer sees the flattened 6x6x512 map of a 96x96 crop; here an
``AdaptiveAvgPool2d(pool_size)`` (default 6) precedes the flattening, so the net takes any
input size and, at 96x96 input, the pooling is the identity and the net equals the paper's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from copymark.nets import to_signed, to_unit
from copymark.resample import phase_weights, upscale_with


class SRResidualBlock(nn.Module):
    """conv-BN-PReLU-conv-BN plus the input."""

    def __init__(self, nf: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(nf) if batch_norm else nn.Identity()
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(nf, nf, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(nf) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))


class UpsampleBlock(nn.Module):
    """x2 sub-pixel upsampling: conv nf -> 4 nf, PixelShuffle(2), PReLU."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(nf, nf * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.prelu = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """SRResNet; defaults = the paper's (16 blocks, 64 channels, BN, x4)."""

    def __init__(
        self,
        scale: int = 4,
        n_blocks: int = 16,
        nf: int = 64,
        batch_norm: bool = True,
        in_channels: int = 3,
        image_skip: bool = False,
    ) -> None:
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8 (got {scale})")
        self.scale = scale
        self.stride: int = 1  # any input size
        self.head = nn.Sequential(nn.Conv2d(in_channels, nf, 9, padding=4), nn.PReLU())
        self.body = nn.Sequential(*[SRResidualBlock(nf, batch_norm) for _ in range(n_blocks)])
        self.body_tail = nn.Sequential(
            nn.Conv2d(nf, nf, 3, padding=1), nn.BatchNorm2d(nf) if batch_norm else nn.Identity()
        )
        self.upsample = nn.Sequential(*[UpsampleBlock(nf) for _ in range(int(math.log2(scale)))])
        self.tail = nn.Conv2d(nf, in_channels, 9, padding=4)
        self.image_skip = image_skip
        # the bicubic of the skip: MATLAB-style phase weights, not part of the state dict (derived from scale)
        self.register_buffer("bicubic_weights", phase_weights(scale), persistent=False)
        if image_skip:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """LR ``x`` in [0, 1] (N x 3 x h x w) -> SR image in [0, 1] (N x 3 x scale*h x scale*w)."""
        feat = self.head(to_signed(x))
        feat = feat + self.body_tail(self.body(feat))
        out = self.tail(self.upsample(feat))
        if not self.image_skip:
            return to_unit(torch.tanh(out))
        out = out + upscale_with(x, self.bicubic_weights)
        return out if self.training else out.clamp(0.0, 1.0)


class SRGANDiscriminator(nn.Module):
    """SRGAN discriminator (Ledig et al. Fig. 4), any input size through adaptive pooling."""

    def __init__(
        self, in_channels: int = 3, ndf: int = 64, n_blocks: int = 4, dense: int = 1024, pool_size: int = 6
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 3, 1, 1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for i in range(n_blocks):
            out = ndf * 2**i
            if i > 0:  # stride-1 conv doubling the channels (64->128, 128->256, ...)
                layers += [nn.Conv2d(ch, out, 3, 1, 1), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, True)]
                ch = out
            layers += [nn.Conv2d(ch, out, 3, 2, 1), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(ch * pool_size * pool_size, dense), nn.LeakyReLU(0.2, True), nn.Linear(dense, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [0, 1] (any H, W >= 16) -> one real/fake logit per image, shape ``N x 1``."""
        return self.classifier(self.pool(self.features(to_signed(x))))
