"""UGATIT generator and CAM discriminators (Kim et al., ICLR 2020, arXiv 1907.10830).

Structure and parameter shapes follow the PyTorch reference (znxlwm/UGATIT-pytorch
``networks.py``: ``ResnetGenerator``, ``Discriminator``); the code here is our own.

Generator: encoder (reflection-pad 7x7 conv, two stride-2 3x3 convs, ``n_blocks`` residual
blocks; InstanceNorm without affine, bias-free convs), then the CAM attention: global average
and global max pooling each feed a bias-free ``Linear(C, 1)`` (the auxiliary classifier whose
logits the CAM loss uses); the feature map is reweighted by each classifier's weights, the two
reweighted maps are concatenated and fused by a 1x1 conv + ReLU (``heatmap`` = channel sum).
An MLP (``fc``) maps the features to AdaLIN's per-channel ``gamma`` and ``beta``: the full model
flattens the whole ``C x (img_size/4)^2`` map (so it only runs at ``img_size``), the light model
global-average-pools first (any size that is a multiple of 4). The decoder has ``n_blocks``
residual blocks with AdaLIN, then two nearest-upsample + 3x3 conv + ILN + ReLU stages and a
reflection-pad 7x7 conv + tanh.

Discriminator: reflection-pad + spectral-norm 4x4 convs with LeakyReLU(0.2): ``n_layers - 3``
stride-2 ones doubling the channels after the first, one stride-1, then the same CAM block (with
spectral-norm classifiers and LeakyReLU) and a final spectral-norm 4x4 conv to one channel of
patch logits. ``n_layers=7`` is the global D (sees ~286 px: the whole image), ``n_layers=5`` the
local D (~70 px patches).

Deliberate differences from the PyTorch reference (none changes a parameter shape):
- Instance and layer statistics are the (biased) variance over ``H, W`` and ``C, H, W``, as in
  the TensorFlow original (taki0112/UGATIT, ``tf.nn.moments``); the PyTorch port nests
  ``torch.var`` calls (variance of variances), which is not the variance.
- The discriminator's CAM reweighting uses the spectrally normalised classifier weight (what
  the classifier actually applies), not the raw ``weight_orig`` parameter.

I/O: images in ``[0, 1]``; ``[-1, 1]`` inside. ``forward`` returns only the image (generator,
in ``[0, 1]``) or the patch logits (discriminator) so that translation code can treat every
generator alike; training code calls ``forward_cam`` to also get the CAM logits and heatmap.
``clip_rho_()`` clamps every AdaLIN/ILN ``rho`` to ``[0, 1]`` (call it after each optimiser
step, as the reference's ``RhoClipper`` does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from copymark.nets import to_signed, to_unit


def _layer_instance_mix(x: torch.Tensor, rho: torch.Tensor, eps: float) -> torch.Tensor:
    """``rho * InstanceNorm(x) + (1 - rho) * LayerNorm(x)`` (no affine)."""
    in_var, in_mean = torch.var_mean(x, dim=(2, 3), keepdim=True, unbiased=False)
    ln_var, ln_mean = torch.var_mean(x, dim=(1, 2, 3), keepdim=True, unbiased=False)
    out_in = (x - in_mean) * torch.rsqrt(in_var + eps)
    out_ln = (x - ln_mean) * torch.rsqrt(ln_var + eps)
    return rho * out_in + (1.0 - rho) * out_ln


class AdaLIN(nn.Module):
    """Adaptive Layer-Instance Normalization: gamma/beta come from the MLP; rho learned (init 0.9)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, num_features, 1, 1), 0.9))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        out = _layer_instance_mix(x, self.rho, self.eps)
        return out * gamma[:, :, None, None] + beta[:, :, None, None]


class ILN(nn.Module):
    """Layer-Instance Normalization with learned per-channel rho (init 0), gamma (1), beta (0)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, num_features, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _layer_instance_mix(x, self.rho, self.eps) * self.gamma + self.beta


class ResnetBlock(nn.Module):
    """Encoder residual block: (pad, 3x3 conv, IN, ReLU, pad, 3x3 conv, IN) + input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=False),
            nn.InstanceNorm2d(dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=False),
            nn.InstanceNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetAdaLINBlock(nn.Module):
    """Decoder residual block with AdaLIN after each conv."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pad1 = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(dim, dim, 3, bias=False)
        self.norm1 = AdaLIN(dim)
        self.pad2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(dim, dim, 3, bias=False)
        self.norm2 = AdaLIN(dim)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(self.pad1(x)), gamma, beta))
        out = self.norm2(self.conv2(self.pad2(out)), gamma, beta)
        return out + x


class UGATITGenerator(nn.Module):
    """UGATIT generator. Defaults: ngf 64, 4 residual blocks, 256 px, full (not light)."""

    n_downsampling: int = 2

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 4,
        img_size: int = 256,
        light: bool = False,
    ) -> None:
        super().__init__()
        self.light = light
        self.stride: int = 2**self.n_downsampling  # H, W multiples of this (full: exactly img_size)
        self.img_size = img_size
        mult = 2**self.n_downsampling
        ch = ngf * mult
        if not light and img_size % mult:
            raise ValueError(f"img_size must be a multiple of {mult} (got {img_size})")
        down: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=False),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(True),
        ]
        for i in range(self.n_downsampling):
            m = 2**i
            down += [
                nn.ReflectionPad2d(1),
                nn.Conv2d(ngf * m, ngf * m * 2, 3, 2, bias=False),
                nn.InstanceNorm2d(ngf * m * 2),
                nn.ReLU(True),
            ]
        down += [ResnetBlock(ch) for _ in range(n_blocks)]
        self.down = nn.Sequential(*down)
        # Class activation map: auxiliary classifiers on GAP and GMP features.
        self.gap_fc = nn.Linear(ch, 1, bias=False)
        self.gmp_fc = nn.Linear(ch, 1, bias=False)
        self.conv1x1 = nn.Conv2d(ch * 2, ch, 1)
        # MLP producing AdaLIN's gamma and beta.
        fc_in = ch if light else (img_size // mult) ** 2 * ch
        self.fc = nn.Sequential(
            nn.Linear(fc_in, ch, bias=False), nn.ReLU(True), nn.Linear(ch, ch, bias=False), nn.ReLU(True)
        )
        self.gamma = nn.Linear(ch, ch, bias=False)
        self.beta = nn.Linear(ch, ch, bias=False)
        self.up_blocks = nn.ModuleList([ResnetAdaLINBlock(ch) for _ in range(n_blocks)])
        up: list[nn.Module] = []
        for i in range(self.n_downsampling):
            m = 2 ** (self.n_downsampling - i)
            up += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.ReflectionPad2d(1),
                nn.Conv2d(ngf * m, ngf * m // 2, 3, bias=False),
                ILN(ngf * m // 2),
                nn.ReLU(True),
            ]
        up += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7, bias=False), nn.Tanh()]
        self.up = nn.Sequential(*up)

    def forward_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` in [0, 1] -> ``(image in [0, 1], cam_logit N x 2, heatmap N x 1 x h/4 x w/4)``."""
        h = self.down(to_signed(x))
        gap_logit = self.gap_fc(F.adaptive_avg_pool2d(h, 1).flatten(1))
        gmp_logit = self.gmp_fc(F.adaptive_max_pool2d(h, 1).flatten(1))
        gap = h * self.gap_fc.weight[:, :, None, None]
        gmp = h * self.gmp_fc.weight[:, :, None, None]
        cam_logit = torch.cat([gap_logit, gmp_logit], 1)
        h = F.relu(self.conv1x1(torch.cat([gap, gmp], 1)))
        heatmap = h.sum(dim=1, keepdim=True)
        if self.light:
            style = self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))
        else:
            if h.shape[-2:] != (self.img_size // self.stride, self.img_size // self.stride):
                raise ValueError(
                    f"the full UGATIT generator only takes {self.img_size}x{self.img_size} inputs "
                    f"(got {x.shape[-2]}x{x.shape[-1]}); use light=True for other sizes"
                )
            style = self.fc(h.flatten(1))
        gamma, beta = self.gamma(style), self.beta(style)
        for block in self.up_blocks:
            h = block(h, gamma, beta)
        return to_unit(self.up(h)), cam_logit, heatmap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [0, 1] -> translated image in [0, 1]."""
        return self.forward_cam(x)[0]

    @torch.no_grad()
    def clip_rho_(self) -> None:
        """Clamp every AdaLIN / ILN ``rho`` to [0, 1] in place."""
        for m in self.modules():
            if isinstance(m, (AdaLIN, ILN)):
                m.rho.clamp_(0.0, 1.0)


class UGATITDiscriminator(nn.Module):
    """UGATIT CAM discriminator with spectral norm: ``n_layers=7`` global, ``5`` local."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 7) -> None:
        super().__init__()
        if n_layers < 3:
            raise ValueError(f"n_layers must be >= 3 (got {n_layers})")
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            spectral_norm(nn.Conv2d(in_channels, ndf, 4, 2)),
            nn.LeakyReLU(0.2, True),
        ]
        for i in range(1, n_layers - 2):
            m = 2 ** (i - 1)
            layers += [
                nn.ReflectionPad2d(1),
                spectral_norm(nn.Conv2d(ndf * m, ndf * m * 2, 4, 2)),
                nn.LeakyReLU(0.2, True),
            ]
        m = 2 ** (n_layers - 3)
        layers += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(ndf * m, ndf * m * 2, 4, 1)), nn.LeakyReLU(0.2, True)]
        self.model = nn.Sequential(*layers)
        ch = ndf * 2 ** (n_layers - 2)
        self.gap_fc = spectral_norm(nn.Linear(ch, 1, bias=False))
        self.gmp_fc = spectral_norm(nn.Linear(ch, 1, bias=False))
        self.conv1x1 = nn.Conv2d(ch * 2, ch, 1)
        self.pad = nn.ReflectionPad2d(1)
        self.conv = spectral_norm(nn.Conv2d(ch, 1, 4, bias=False))

    def forward_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` in [0, 1] -> ``(patch logits N x 1 x h x w, cam_logit N x 2, heatmap)``."""
        h = self.model(to_signed(x))
        gap_logit = self.gap_fc(F.adaptive_avg_pool2d(h, 1).flatten(1))
        gmp_logit = self.gmp_fc(F.adaptive_max_pool2d(h, 1).flatten(1))
        # After the calls above, .weight holds the spectrally normalised weight just used.
        gap = h * self.gap_fc.weight[:, :, None, None]
        gmp = h * self.gmp_fc.weight[:, :, None, None]
        cam_logit = torch.cat([gap_logit, gmp_logit], 1)
        h = F.leaky_relu(self.conv1x1(torch.cat([gap, gmp], 1)), 0.2)
        heatmap = h.sum(dim=1, keepdim=True)
        return self.conv(self.pad(h)), cam_logit, heatmap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [0, 1] -> patch logits (no sigmoid)."""
        return self.forward_cam(x)[0]
