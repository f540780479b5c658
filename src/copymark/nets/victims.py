"""Modules compatible with third-party pretrained victims, their key maps and loaders.

Two real pretrained image-translation models serve as black-box victims (see
``../shared/data/weights/*/MANIFEST.md``):

- :class:`LeftthomasSRGANGenerator`: the SRGAN x4 generator of leftthomas/SRGAN at commit
  ``b0323c6`` (``netG_epoch_4_100.pth``): 9x9 conv + PReLU (``block1``), five residual blocks
  (``block2`` .. ``block6``: conv-BN-PReLU-conv-BN + input), ``block7`` = 3x3 conv + **PReLU**
  (at that commit; later versions end block7 in BatchNorm), the global skip
  ``block1 + block7``, then ``block8`` = log2(scale) x (conv 64->256, PixelShuffle(2), PReLU) and a
  9x9 conv to 3 channels. Input RGB in ``[0, 1]`` (no normalisation); output
  ``(tanh(x) + 1) / 2`` in ``[0, 1]``.
- :class:`TransformerMobileNet`: the fast-neural-style transformer of
  mmalotin/pytorch-fast-neural-style-mobilenetV2 (``candy.pth``): Johnson et al.'s transformer
  with MobileNetV2 bottlenecks, all convs bias-free, ``InstanceNorm2d(affine=True)``. The
  original takes and returns RGB in ``[0, 255]``; this module takes ``[0, 1]``, scales by 255
  inside ``forward``, and returns the output divided by 255 and clamped to ``[0, 1]`` (the
  original clamps to [0, 255] when saving).
- :class:`MobileResnetGenerator`: GAN Compression's compressed CycleGAN horse->zebra generator
  (``cyclegan_h2z_compressed/latest_net_G.pth``): the junyanz ResNet-9 layout with
  depthwise-separable residual blocks; ``[-1, 1]`` inside, ``[0, 1]`` at the module's edges.

Submodule names equal the originals' so the key maps are identities plus explicit fixes
(:func:`srgan_leftthomas_key_map` adds the ``num_batches_tracked`` buffers that a pre-0.4.1
checkpoint lacks). The loaders read the ``.pth`` only through
``torch.load(weights_only=True)`` (:func:`copymark.checkpoints.load_third_party_state_dict`)
and load strictly; they return the module in eval mode.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from copymark.checkpoints import load_strict, load_third_party_state_dict
from copymark.errors import WeightsError

# --------------------------------------------------------------------------- SRGAN (leftthomas)


class _SRGANResidualBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(ch)
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))


class _SRGANUpsampleBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch * 4, 3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.prelu = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.pixel_shuffle(self.conv(x)))


class LeftthomasSRGANGenerator(nn.Module):
    """SRGAN generator compatible with leftthomas/SRGAN @ b0323c6 state dicts (keys ``block1.0...``)."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8 (got {scale})")
        self.scale = scale
        self.stride: int = 1  # any input size
        self.block1 = nn.Sequential(nn.Conv2d(3, 64, 9, padding=4), nn.PReLU())
        self.block2 = _SRGANResidualBlock(64)
        self.block3 = _SRGANResidualBlock(64)
        self.block4 = _SRGANResidualBlock(64)
        self.block5 = _SRGANResidualBlock(64)
        self.block6 = _SRGANResidualBlock(64)
        self.block7 = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.PReLU())
        up: list[nn.Module] = [_SRGANUpsampleBlock(64) for _ in range(int(math.log2(scale)))]
        up.append(nn.Conv2d(64, 3, 9, padding=4))
        self.block8 = nn.Sequential(*up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """LR ``x`` in [0, 1] -> SR image in [0, 1] at ``scale`` times the size."""
        b1 = self.block1(x)
        h = self.block6(self.block5(self.block4(self.block3(self.block2(b1)))))
        h = self.block7(h)
        return (torch.tanh(self.block8(b1 + h)) + 1.0) / 2.0


def srgan_leftthomas_key_map(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Key map for leftthomas SRGAN checkpoints: names are kept as they are.

    The b0323c6 checkpoint predates PyTorch 0.4.1 and has no ``bn*.num_batches_tracked``;
    we add each one explicitly as ``tensor(0)`` (the value PyTorch itself fills in for old
    checkpoints; it only matters for BatchNorm with ``momentum=None``, unused here).
    """
    out = dict(state)
    for key in state:
        if key.endswith(".running_mean"):
            nbt = key[: -len("running_mean")] + "num_batches_tracked"
            out.setdefault(nbt, torch.tensor(0, dtype=torch.long))
    return out


def load_srgan_x4(path: str | Path) -> LeftthomasSRGANGenerator:
    """Load ``netG_epoch_4_100.pth`` (leftthomas/SRGAN @ b0323c6) strictly; eval mode."""
    state = load_third_party_state_dict(path, srgan_leftthomas_key_map)
    net = LeftthomasSRGANGenerator(4)
    load_strict(net, state, str(path))
    return net.eval()


# --------------------------------------------------------------------------- fast neural style


class _Bottleneck(nn.Module):
    """MobileNetV2 bottleneck: 1x1 expand, depthwise kxk (reflection pad), 1x1 project; IN after each."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, t: int = 1) -> None:
        super().__init__()
        hidden = in_ch * t
        self.residual = stride == 1 and in_ch == out_ch
        self.conv1 = nn.Conv2d(in_ch, hidden, 1, bias=False)
        self.in1 = nn.InstanceNorm2d(hidden, affine=True)
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv2 = nn.Conv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self.in2 = nn.InstanceNorm2d(hidden, affine=True)
        self.conv3 = nn.Conv2d(hidden, out_ch, 1, bias=False)
        self.in3 = nn.InstanceNorm2d(out_ch, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.in1(self.conv1(x)))
        h = F.relu6(self.in2(self.conv2(self.pad(h))))
        h = self.in3(self.conv3(h))
        return x + h if self.residual else h


class _UpsampleConv(nn.Module):
    """Nearest x2 upsampling, a bottleneck, ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = _Bottleneck(in_ch, out_ch, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv1(F.interpolate(x, scale_factor=2.0, mode="nearest")))


class TransformerMobileNet(nn.Module):
    """Fast-neural-style MobileNetV2 transformer (``candy.pth`` layout); ``[0, 1]`` in and out.

    Fully convolutional; the output has the input's size when H and W are multiples of 4.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stride: int = 4  # H, W multiples of this keep the size
        self.pad_in = nn.ReflectionPad2d(4)
        self.conv1 = nn.Conv2d(3, 32, 9, bias=False)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = _Bottleneck(32, 64, 3, 2)
        self.conv3 = _Bottleneck(64, 128, 3, 2)
        self.res1 = _Bottleneck(128, 128, 3, 1)
        self.res2 = _Bottleneck(128, 128, 3, 1)
        self.res3 = _Bottleneck(128, 128, 3, 1)
        self.res4 = _Bottleneck(128, 128, 3, 1)
        self.res5 = _Bottleneck(128, 128, 3, 1)
        self.upconv1 = _UpsampleConv(128, 64)
        self.upconv2 = _UpsampleConv(64, 32)
        self.pad_out = nn.ReflectionPad2d(4)
        self.conv4 = nn.Conv2d(32, 3, 9, bias=False)

    def forward_255(self, x: torch.Tensor) -> torch.Tensor:
        """The original network: RGB in [0, 255] -> unclamped RGB around [0, 255]."""
        h = F.relu(self.in1(self.conv1(self.pad_in(x))))
        h = self.conv3(self.conv2(h))
        h = self.res5(self.res4(self.res3(self.res2(self.res1(h)))))
        h = self.upconv2(self.upconv1(h))
        return self.conv4(self.pad_out(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [0, 1] -> stylised image in [0, 1] (clamped)."""
        return (self.forward_255(x * 255.0) / 255.0).clamp(0.0, 1.0)


def fnst_mobilenet_key_map(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Key map for pytorch-fast-neural-style-mobilenetV2 checkpoints: names are kept as they are.

    InstanceNorm layers there have no running statistics; any such entries (written by
    PyTorch 0.4.0's InstanceNorm, which briefly tracked them) are dropped explicitly.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf in ("running_mean", "running_var", "num_batches_tracked"):
            continue
        out[key] = value
    if not out:
        raise WeightsError("fast-neural-style checkpoint holds no weights")
    return out


def load_style_candy(path: str | Path) -> TransformerMobileNet:
    """Load ``candy.pth`` (mmalotin/pytorch-fast-neural-style-mobilenetV2 @ b8d9a17) strictly; eval."""
    state = load_third_party_state_dict(path, fnst_mobilenet_key_map)
    net = TransformerMobileNet()
    load_strict(net, state, str(path))
    return net.eval()


# --------------------------------------------------------------------------- CycleGAN (GAN Compression)


class _SepConv(nn.Module):
    """Depthwise 3x3 conv, instance norm, pointwise 1x1 conv (GAN Compression's SeparableConv2d)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, 3, groups=in_ch), nn.InstanceNorm2d(in_ch), nn.Conv2d(in_ch, out_ch, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _MobileResnetBlock(nn.Module):
    """``x + conv_block(x)``: pad, sep-conv dim->hidden, IN, ReLU, dropout(0), pad, sep-conv hidden->dim, IN."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), _SepConv(dim, hidden), nn.InstanceNorm2d(hidden), nn.ReLU(True), nn.Dropout(0.0),
            nn.ReflectionPad2d(1), _SepConv(hidden, dim), nn.InstanceNorm2d(dim),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class MobileResnetGenerator(nn.Module):
    """GAN Compression's ``sub_mobile_resnet_9blocks`` CycleGAN generator; ``[0, 1]`` in and out.

    The junyanz ResNet-9 layout (``model.N`` indices: 7x7 head, two stride-2 convs, nine residual
    blocks, two transposed convs, 7x7 tail, tanh) with depthwise-separable residual blocks and the
    channel widths of ``channels`` = ``[c0, c1, c2, h1, h2, h3, u1, u2]`` (the released horse->zebra
    student: ``16_16_32_16_32_32_16_16`` at ngf 64, i.e. stem 16, down 32 and 128 (= 2 x 64), blocks
    with hidden width 64 (blocks 1-3) and 128 (4-9), up 32 and 16). Instance norms have no affine
    parameters. The original maps ``[-1, 1]`` to ``[-1, 1]`` and clamps its input first; this module
    converts from and to ``[0, 1]`` inside ``forward``. H and W must be multiples of 4 (``stride``).
    """

    def __init__(self, stem: int = 16, down: int = 32, dim: int = 128, hidden: tuple[int, ...] = (64,) * 3 + (128,) * 6,
                 up: tuple[int, int] = (32, 16)) -> None:  # fmt: skip
        super().__init__()
        self.stride: int = 4
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(3, stem, 7), nn.InstanceNorm2d(stem), nn.ReLU(True),
            nn.Conv2d(stem, down, 3, stride=2, padding=1), nn.InstanceNorm2d(down), nn.ReLU(True),
            nn.Conv2d(down, dim, 3, stride=2, padding=1), nn.InstanceNorm2d(dim), nn.ReLU(True),
        ]  # fmt: skip
        layers += [_MobileResnetBlock(dim, h) for h in hidden]
        layers += [
            nn.ConvTranspose2d(dim, up[0], 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(up[0]), nn.ReLU(True),
            nn.ConvTranspose2d(up[0], up[1], 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(up[1]), nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(up[1], 3, 7), nn.Tanh(),
        ]  # fmt: skip
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [0, 1] -> translated image in [0, 1]."""
        y = self.model((x * 2.0 - 1.0).clamp(-1.0, 1.0))
        return (y + 1.0) / 2.0


def cyclegan_h2z_key_map(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Key map of GAN Compression's ``latest_net_G.pth``: the names are ours already (``model.N...``).

    Instance norms there are affine-free and untracked, so the file holds no norm entries; any
    ``module.`` prefix (a DataParallel save) is removed explicitly.
    """
    out = {k.removeprefix("module."): v for k, v in state.items()}
    if not out or not all(k.startswith("model.") for k in out):
        raise WeightsError("not a CycleGAN-family generator state dict (keys should start with 'model.')")
    return out


def load_cyclegan_h2z(path: str | Path) -> MobileResnetGenerator:
    """Load GAN Compression's compressed horse->zebra generator (``latest_net_G.pth``) strictly; eval."""
    state = load_third_party_state_dict(path, cyclegan_h2z_key_map)
    net = MobileResnetGenerator()
    load_strict(net, state, str(path))
    return net.eval()
