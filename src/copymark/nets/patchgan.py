"""PatchGAN discriminator (pix2pix / CycleGAN ``basic`` D = ``NLayerDiscriminator``).

With ``n_layers=3`` each output logit sees a 70x70 input patch. Layout: 4x4 conv stride 2
(no norm) + LeakyReLU(0.2); ``n_layers - 1`` stride-2 4x4 convs with norm, channels doubling up
to ``8 * ndf``; one stride-1 4x4 conv with norm; a final stride-1 4x4 conv to 1 channel.
Output: raw logits (no sigmoid), ``N x 1 x h x w`` (30x30 at 256 px); the loss picks LSGAN or
vanilla BCE-with-logits.

I/O: input images in ``[0, 1]``, converted to ``[-1, 1]`` inside ``forward``. For the
conditional pix2pix D pass ``in_channels=6`` and the channel concatenation
``torch.cat([input_image, output_image], 1)`` (both in [0, 1]).
The module keeps its layers in ``model`` (``nn.Sequential``) in the reference order.
"""

from __future__ import annotations

import torch
from torch import nn

from copymark.nets import conv_bias, make_norm, to_signed


class PatchGANDiscriminator(nn.Module):
    """70x70 PatchGAN at defaults (n_layers 3, ndf 64, BatchNorm)."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=bias),
                make_norm(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=bias),
            make_norm(norm, ndf * mult),
            nn.LeakyReLU(0.2, True),
        ]
        layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [0, 1] (``in_channels`` channels) -> patch logits ``N x 1 x h x w``."""
        return self.model(to_signed(x))
