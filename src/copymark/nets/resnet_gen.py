"""ResNet generator of CycleGAN (Zhu et al. 2017; junyanz ``resnet_9blocks`` / ``resnet_6blocks``).

Layout: reflection-pad 3 + 7x7 conv (ngf) + norm + ReLU; two stride-2 3x3 convs (x2 channels
each) + norm + ReLU; ``n_blocks`` residual blocks at ``4 * ngf`` (reflection pad 1, 3x3 conv,
norm, ReLU, [dropout], reflection pad 1, 3x3 conv, norm, plus the input); two stride-2 3x3
transposed convs (output_padding 1) + norm + ReLU; reflection-pad 3 + 7x7 conv + tanh.
CycleGAN uses InstanceNorm (no affine, no running stats) and no dropout: the defaults here.
Convs carry a bias unless followed by BatchNorm (as in the reference).

I/O: images in ``[0, 1]``; ``[-1, 1]`` inside; output ``(tanh + 1) / 2`` in ``[0, 1]``. Input H
and W should be multiples of 4 (otherwise the output size differs from the input's).
The layers live in ``model`` (``nn.Sequential``) in the reference order, residual blocks hold
``conv_block``, so state-dict keys have the reference's form (``model.10.conv_block.1.weight``).
"""

from __future__ import annotations

import torch
from torch import nn

from copymark.nets import conv_bias, make_norm, to_signed, to_unit


class ResnetBlock(nn.Module):
    """``x + conv_block(x)`` with reflection padding."""

    def __init__(self, dim: int, norm: str = "instance", use_dropout: bool = False) -> None:
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=bias),
            make_norm(norm, dim),
            nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), make_norm(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator; defaults = ``resnet_9blocks`` with InstanceNorm, no dropout."""

    n_downsampling: int = 2

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        bias = conv_bias(norm)
        self.stride: int = 2**self.n_downsampling  # H, W multiples of this keep the size
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=bias),
            make_norm(norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(self.n_downsampling):
            m = 2**i
            layers += [nn.Conv2d(ngf * m, ngf * m * 2, 3, 2, 1, bias=bias), make_norm(norm, ngf * m * 2), nn.ReLU(True)]
        m = 2**self.n_downsampling
        layers += [ResnetBlock(ngf * m, norm, use_dropout) for _ in range(n_blocks)]
        for i in range(self.n_downsampling):
            m = 2 ** (self.n_downsampling - i)
            layers += [
                nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, 2, 1, output_padding=1, bias=bias),
                make_norm(norm, ngf * m // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [0, 1] -> translated image in [0, 1], same size (H, W multiples of 4)."""
        return to_unit(self.model(to_signed(x)))
