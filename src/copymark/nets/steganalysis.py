"""Steganalyzers: XuNet (Xu et al. 2016), YeNet (Ye et al. 2017), SRNet (Boroumand et al. 2019).

Each is a pure ``nn.Module`` that maps an RGB batch ``N x 3 x H x W`` in ``[0, 1]`` to two
logits per image, ``(cover, stego)`` as in the papers' softmax output;
``softmax(logits)[:, 1]`` is the stego score. All three compute on pixel values in
``[0, 255]`` (``forward`` multiplies by 255 first), the scale their fixed filters and YeNet's
TLU threshold (T = 3) were designed for. Every net ends in global average pooling, so any
size from 32 to 256 px works (the papers used 256 or 512 px grayscale).

Adaptation to colour input (the papers are for 1-channel grayscale images):

* **XuNet**: the fixed KV high-pass filter is applied to each colour channel separately
  (a depthwise, non-trainable conv), giving 3 residual maps for the first learned conv.
* **YeNet**: the first layer is a grouped conv (``groups=3``) holding the 30 SRM kernels
  for each colour channel (90 residual maps, all initialised from SRM and trainable as in the
  paper), followed by the TLU; the second layer mixes the 90 maps into 30.
* **SRNet**: the first conv takes 3 input channels; nothing else changes.

Architectures
-------------
**XuNet** ("Structural Design of Convolutional Neural Networks for Steganalysis", IEEE SPL
2016): KV high-pass filter; group 1: conv 5x5 (8), ABS, BN, TanH, avg-pool 5x5/2; group 2:
conv 5x5 (16), BN, TanH, avg-pool; groups 3-5: conv 1x1 (32, 64, 128), BN, ReLU, avg-pool
(global in group 5); FC to 2. Convs without bias (BN follows).

**YeNet** ("Deep Learning Hierarchical Representations for Image Steganalysis", IEEE TIFS
2017): layer 1: 30 SRM 5x5 filters as initial weights + TLU(T=3); layers 2-4: conv 3x3 (30),
ReLU, avg-pool 2x2/2 after layer 4; layers 5-7: conv 5x5 (32), ReLU, avg-pool 3x3/2;
layer 8: conv 3x3 (16), ReLU; layer 9: conv 3x3 (16) stride 3, ReLU; FC to 2. We pad the
convs ("same") and add a global average pool before the FC so small images fit.

**SRNet** ("Deep Residual Network for Steganalysis of Digital Images", IEEE TIFS 2019):
layer types 1 (conv-BN-ReLU), 2 (type 1, conv, BN, + identity), 3 (type 1, conv, BN,
avg-pool 3x3/2, + 1x1/2 conv-BN shortcut) and 4 (type 1, conv, BN, global avg-pool).
Layers 1-2: type 1 (64, 16); layers 3-7: type 2 (16); layers 8-11: type 3 (16, 64, 128,
256); layer 12: type 4 (512); FC to 2. No pooling in the first 7 layers, which keeps the
weak stego noise from being averaged away.

The 30 SRM kernels are built here from their definitions in Fridrich & Kodovsky, "Rich Models
for Steganalysis of Digital Images" (IEEE TIFS 2012): 8 first-order, 4 second-order, 8
third-order, SQUARE 3x3, 4 EDGE 3x3, SQUARE 5x5 and 4 EDGE 5x5 residuals, each normalised by
its central coefficient's quantisation step (1, 2, 3, 4, 4, 12, 12) as in YeNet.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from copymark.config import StrictModel

# ---------------------------------------------------------------------------------------------
# high-pass kernels

KV = (
    torch.tensor(
        [
            [-1.0, 2.0, -2.0, 2.0, -1.0],
            [2.0, -6.0, 8.0, -6.0, 2.0],
            [-2.0, 8.0, -12.0, 8.0, -2.0],
            [2.0, -6.0, 8.0, -6.0, 2.0],
            [-1.0, 2.0, -2.0, 2.0, -1.0],
        ]
    )
    / 12.0
)
"""The KV kernel (SQUARE 5x5 of SRM), XuNet's fixed high-pass filter."""

# the 8 neighbour directions (dy, dx), clockwise from east
_DIRS = [(0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1)]


def _place(values: dict[tuple[int, int], float]) -> torch.Tensor:
    """5x5 kernel with ``values[(dy, dx)]`` at offset (dy, dx) from the centre."""
    k = torch.zeros(5, 5)
    for (dy, dx), v in values.items():
        k[2 + dy, 2 + dx] = v
    return k


def srm_kernels() -> torch.Tensor:
    """The 30 SRM high-pass kernels, ``30 x 5 x 5`` float32, each summing to zero.

    Order: 8 first-order (``x[n+d] - x[n]``), 4 second-order (``x[n-d] - 2x[n] + x[n+d]``,
    halved), 8 third-order (``x[n-d] - 3x[n] + 3x[n+d] - x[n+2d]``, divided by 3), SQUARE 3x3
    (/4), 4 EDGE 3x3 (/4), SQUARE 5x5 (KV, /12), 4 EDGE 5x5 (/12).
    """
    ks: list[torch.Tensor] = []
    for dy, dx in _DIRS:  # first order: 8 directions
        ks.append(_place({(0, 0): -1.0, (dy, dx): 1.0}))
    for dy, dx in _DIRS[:4]:  # second order: 4 axes (E-W, SE-NW, S-N, SW-NE)
        ks.append(_place({(-dy, -dx): 1.0, (0, 0): -2.0, (dy, dx): 1.0}) / 2.0)
    for dy, dx in _DIRS:  # third order: 8 directions
        ks.append(_place({(-dy, -dx): 1.0, (0, 0): -3.0, (dy, dx): 3.0, (2 * dy, 2 * dx): -1.0}) / 3.0)
    sq3 = torch.zeros(5, 5)
    sq3[1:4, 1:4] = torch.tensor([[-1.0, 2.0, -1.0], [2.0, -4.0, 2.0], [-1.0, 2.0, -1.0]])
    ks.append(sq3 / 4.0)
    edge3 = sq3.clone()
    edge3[3, 1:4] = 0.0  # keep the upper two rows of the 3x3 block
    for r in range(4):
        ks.append(torch.rot90(edge3, r, dims=(0, 1)) / 4.0)
    kv = KV * 12.0
    ks.append(kv / 12.0)
    edge5 = kv.clone()
    edge5[3:, :] = 0.0  # keep the upper three rows of KV
    for r in range(4):
        ks.append(torch.rot90(edge5, r, dims=(0, 1)) / 12.0)
    out = torch.stack(ks).float()
    assert out.shape == (30, 5, 5)
    return out


class TLU(nn.Module):
    """Truncated linear unit: ``clamp(x, -T, T)`` (YeNet)."""

    def __init__(self, threshold: float = 3.0):
        super().__init__()
        self.threshold = float(threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-self.threshold, self.threshold)


# ---------------------------------------------------------------------------------------------
# configs


class XuNetConfig(StrictModel):
    """XuNet; ``width`` is the first group's filters (8 in the paper), doubled per group."""

    kind: Literal["xunet"] = "xunet"
    width: int = Field(8, ge=1, le=128, description="filters of the first group, doubled per group")


class YeNetConfig(StrictModel):
    """YeNet; ``channels`` (30), ``deep_channels`` (32), ``final_channels`` (16) as in the paper."""

    kind: Literal["yenet"] = "yenet"
    channels: int = Field(
        30, ge=1, le=256, description="SRM maps per colour channel (layer 1) and filters of layers 2-4"
    )
    deep_channels: int = Field(32, ge=1, le=256, description="filters of layers 5-7")
    final_channels: int = Field(16, ge=1, le=256, description="filters of layers 8-9")
    tlu_threshold: float = Field(3.0, gt=0.0, description="truncation of the first layer's linear unit (TLU)")


class SRNetConfig(StrictModel):
    """SRNet; channels of layer 1, layers 2-8, layers 9, 10, 11 and layer 12 (paper: 64, 16, 64, 128, 256, 512)."""

    kind: Literal["srnet"] = "srnet"
    c1: int = Field(64, ge=1, le=1024, description="filters of layer 1")
    c2: int = Field(16, ge=1, le=1024, description="filters of layers 2-8")
    c9: int = Field(64, ge=1, le=1024, description="filters of layer 9")
    c10: int = Field(128, ge=1, le=1024, description="filters of layer 10")
    c11: int = Field(256, ge=1, le=1024, description="filters of layer 11")
    c12: int = Field(512, ge=1, le=2048, description="filters of layer 12 (before global pooling)")


SteganalyzerConfig = XuNetConfig | YeNetConfig | SRNetConfig


# ---------------------------------------------------------------------------------------------
# XuNet


class XuNet(nn.Module):
    """Xu, Wu & Shi (2016) with per-channel KV filtering (see the module docstring)."""

    def __init__(self, width: int = 8, in_channels: int = 3):
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("hpf", KV.view(1, 1, 5, 5).repeat(in_channels, 1, 1, 1))
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, 2 * w, 5, padding=2, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.conv3 = nn.Conv2d(2 * w, 4 * w, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * w)
        self.conv4 = nn.Conv2d(4 * w, 8 * w, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(8 * w)
        self.conv5 = nn.Conv2d(8 * w, 16 * w, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(16 * w)
        self.fc = nn.Linear(16 * w, 2)

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 5, stride=2, padding=2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = F.conv2d(x * 255.0, self.hpf, padding=2, groups=self.in_channels)
        x = self._pool(torch.tanh(self.bn1(self.conv1(r).abs())))
        x = self._pool(torch.tanh(self.bn2(self.conv2(x))))
        x = self._pool(F.relu(self.bn3(self.conv3(x))))
        x = self._pool(F.relu(self.bn4(self.conv4(x))))
        x = F.relu(self.bn5(self.conv5(x))).mean(dim=(2, 3))
        return self.fc(x)


# ---------------------------------------------------------------------------------------------
# YeNet


class YeNet(nn.Module):
    """Ye, Ni & Yi (2017) with 30 SRM kernels per colour channel (see the module docstring)."""

    def __init__(
        self,
        channels: int = 30,
        deep_channels: int = 32,
        final_channels: int = 16,
        tlu_threshold: float = 3.0,
        in_channels: int = 3,
    ):
        super().__init__()
        srm = srm_kernels()
        self.srm = nn.Conv2d(in_channels, 30 * in_channels, 5, padding=2, groups=in_channels)
        with torch.no_grad():
            self.srm.weight.copy_(srm.view(30, 1, 5, 5).repeat(in_channels, 1, 1, 1))
            self.srm.bias.zero_()
        self.tlu = TLU(tlu_threshold)
        c, d, f = channels, deep_channels, final_channels
        self.block1 = nn.Sequential(  # layers 2-4
            nn.Conv2d(30 * in_channels, c, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
            nn.AvgPool2d(2, stride=2),
        )  # fmt: skip
        self.block2 = nn.Sequential(  # layers 5-7
            nn.Conv2d(c, d, 5, padding=2), nn.ReLU(inplace=True), nn.AvgPool2d(3, stride=2, padding=1),
            nn.Conv2d(d, d, 5, padding=2), nn.ReLU(inplace=True), nn.AvgPool2d(3, stride=2, padding=1),
            nn.Conv2d(d, d, 5, padding=2), nn.ReLU(inplace=True), nn.AvgPool2d(3, stride=2, padding=1),
        )  # fmt: skip
        self.block3 = nn.Sequential(  # layers 8-9
            nn.Conv2d(d, f, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(f, f, 3, stride=3, padding=1), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.fc = nn.Linear(f, 2)
        for m in list(self.block1) + list(self.block2) + list(self.block3):
            if isinstance(m, nn.Conv2d):  # Xavier init as in the paper
                nn.init.xavier_uniform_(m.weight)
                nn.init.constant_(m.bias, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tlu(self.srm(x * 255.0))
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(x.mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------------
# SRNet


class _Type1(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Type2(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.t1 = _Type1(c, c)
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn(self.conv(self.t1(x)))


class _Type3(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.t1 = _Type1(cin, cout)
        self.conv = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(self.bn(self.conv(self.t1(x))), 3, stride=2, padding=1)
        return y + self.short(x)


class _Type4(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.t1 = _Type1(cin, cout)
        self.conv = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.t1(x))).mean(dim=(2, 3))


class SRNet(nn.Module):
    """Boroumand, Chen & Fridrich (2019): 12 layers of types 1-4, then a linear classifier."""

    def __init__(
        self,
        c1: int = 64,
        c2: int = 16,
        c9: int = 64,
        c10: int = 128,
        c11: int = 256,
        c12: int = 512,
        in_channels: int = 3,
    ):
        super().__init__()
        self.layers = nn.Sequential(
            _Type1(in_channels, c1),  # L1
            _Type1(c1, c2),  # L2
            *[_Type2(c2) for _ in range(5)],  # L3-L7
            _Type3(c2, c2),  # L8
            _Type3(c2, c9),  # L9
            _Type3(c9, c10),  # L10
            _Type3(c10, c11),  # L11
            _Type4(c11, c12),  # L12
        )
        self.fc = nn.Linear(c12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(x * 255.0))


# ---------------------------------------------------------------------------------------------
# builder


def build_steganalyzer(config: SteganalyzerConfig) -> XuNet | YeNet | SRNet:
    """Construct the steganalyzer a config describes (explicit ``match`` on ``kind``)."""
    match config:
        case XuNetConfig():
            return XuNet(width=config.width)
        case YeNetConfig():
            return YeNet(config.channels, config.deep_channels, config.final_channels, config.tlu_threshold)
        case SRNetConfig():
            return SRNet(config.c1, config.c2, config.c9, config.c10, config.c11, config.c12)
    raise TypeError(f"not a steganalyzer config: {type(config).__name__}")


def stego_score(logits: torch.Tensor) -> torch.Tensor:
    """Probability of "stego" from the two logits (softmax's second entry), shape ``N``."""
    return torch.softmax(logits.float(), dim=1)[:, 1]
