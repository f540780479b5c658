"""UNet generator of pix2pix (Isola et al. 2017; junyanz/pytorch-CycleGAN-and-pix2pix ``unet_256``).

Structure: ``num_downs`` stride-2 4x4 convs down to 1x1 at 256 px (num_downs=8), mirrored by
stride-2 4x4 transposed convs up, with a skip connection (channel concat) around every level
but the outermost. Encoder: LeakyReLU(0.2) - conv - norm; decoder: ReLU - convT - norm, plus
``Dropout(0.5)`` in the ``num_downs - 5`` levels just outside the innermost one (the decoder's
innermost 3 blocks at num_downs=8) when ``use_dropout``. Dropout is an ordinary ``nn.Dropout``:
active in ``train()``, off in ``eval()`` (so inference is deterministic).

The module layout (nested ``UNetBlock`` objects, each with a ``model`` ``nn.Sequential``)
follows the reference so that the state-dict keys have the same shape of names
(``model.model.1.model...``). I/O: images in ``[0, 1]``; converted to ``[-1, 1]`` inside
``forward``; the final ``tanh`` is mapped back to ``[0, 1]``. Input H and W must be multiples of
``2 ** num_downs``.
"""

from __future__ import annotations

import torch
from torch import nn

from copymark.nets import conv_bias, make_norm, to_signed, to_unit


class UNetBlock(nn.Module):
    """One UNet level: ``down -> submodule -> up``, concatenated with its input (not outermost)."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        bias = conv_bias(norm)
        in_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(in_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        downrelu = nn.LeakyReLU(0.2, inplace=True)
        uprelu = nn.ReLU(inplace=True)
        layers: list[nn.Module]
        if outermost:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [downrelu, downconv, uprelu, upconv, make_norm(norm, outer_nc)]
        else:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [
                downrelu,
                downconv,
                make_norm(norm, inner_nc),
                submodule,
                uprelu,
                upconv,
                make_norm(norm, outer_nc),
            ]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UNetGenerator(nn.Module):
    """pix2pix UNet generator. Defaults = ``unet_256`` (num_downs 8, ngf 64, BatchNorm, dropout).

    Args:
        in_channels / out_channels: image channels (3).
        ngf: channels of the first level; levels double up to ``8 * ngf``.
        num_downs: number of stride-2 levels (>= 5); input sizes must be multiples of 2**num_downs.
        norm: "batch" (pix2pix), "instance" or "none".
        use_dropout: Dropout(0.5) in the ``num_downs - 5`` decoder blocks next to the innermost.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        num_downs: int = 8,
        norm: str = "batch",
        use_dropout: bool = True,
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5 (got {num_downs})")
        self.num_downs = num_downs
        self.stride: int = 2**num_downs  # input H and W must be multiples of this
        block = UNetBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UNetBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout)
        block = UNetBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UNetBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UNetBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UNetBlock(out_channels, ngf, input_nc=in_channels, submodule=block, outermost=True, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [0, 1] (N x C x H x W, H and W multiples of ``stride``) -> image in [0, 1]."""
        return to_unit(self.model(to_signed(x)))
