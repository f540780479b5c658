"""copymark.nets: pure ``nn.Module`` architectures, one file per family (no training, no I/O).

Image convention for every net here (see DESIGN.md): inputs and outputs are float32
``N x 3 x H x W`` RGB tensors in ``[0, 1]`` (classifiers, steganalyzers and discriminators
return logits instead). Nets that were designed for ``[-1, 1]`` (all the
GANs here) convert inside ``forward`` with :func:`to_signed`, and generators end with ``tanh``
mapped back to ``[0, 1]`` with :func:`to_unit`. Callers never convert.

Generators carry an int attribute ``stride`` (input H and W must be multiples of it for the
output to keep the input's size, or, for UNet, to run at all) and super-resolution nets an int
``scale``; translation code pads to ``stride`` and crops back. Both survive ``torch.jit.script``.
Every generator here scripts; eval mode makes them deterministic (no dropout; BatchNorm uses
running statistics).

Families: :mod:`.unet` (pix2pix UNet-256), :mod:`.patchgan` (70x70 PatchGAN),
:mod:`.resnet_gen` (CycleGAN ResNet-9), :mod:`.ugatit` (UGATIT generator + CAM discriminators),
:mod:`.srresnet` (SRResNet + SRGAN discriminator), :mod:`.stego` (En2D, GglNet codecs),
:mod:`.steganalysis` (XuNet, YeNet, SRNet), :mod:`.classifiers` (host classifiers: ResNet-18
with a stem per input size, a small CNN; they normalise inside ``forward``), :mod:`.victims`
(modules compatible with third-party pretrained weights). :mod:`.build` holds the configs, ``build_net``, ``save_net``
and ``load_net``.
"""

from __future__ import annotations

import torch
from torch import nn


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """Map an image in ``[0, 1]`` to ``[-1, 1]`` (what the GAN nets compute on)."""
    return x * 2.0 - 1.0


def to_unit(y: torch.Tensor) -> torch.Tensor:
    """Map a ``tanh`` output in ``[-1, 1]`` back to the image range ``[0, 1]``."""
    return (y + 1.0) * 0.5


def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter values (as junyanz/pytorch-CycleGAN-and-pix2pix prints them)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer as in junyanz ``get_norm_layer``.

    ``"batch"``: ``BatchNorm2d`` (affine, running stats); ``"instance"``: ``InstanceNorm2d``
    without affine parameters or running stats (junyanz's CycleGAN default); ``"none"``: identity.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected 'batch', 'instance' or 'none'")


def conv_bias(norm: str) -> bool:
    """Whether convs followed by ``norm`` carry a bias (junyanz: only when not BatchNorm)."""
    return norm != "batch"
