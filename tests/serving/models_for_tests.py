"""Factories for ``python:models_for_tests:FACTORY`` specs in the serving tests.

They are real ``nn.Module``s served through the real worker process: a small net with a
declared I/O convention (the entry-point equality test), models that crash or hang in
their forward on chosen inputs (the isolation tests), and classifiers (the classify tests). Test-only models live here, never in
copymark itself.
"""

from __future__ import annotations

import ctypes
import os
import time

import numpy as np
import torch
from torch import nn

from copymark.images import from_uint8, to_uint8
from copymark.serving.classical import cartoon_uint8


class TinyBGRNet(nn.Module):
    """x2 super-resolution net that wants BGR in [-1, 1] (declared, as a third-party net would)."""

    value_range = (-1, 1)
    color_order = "BGR"
    scale = 2
    stride = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.shuffle(self.conv(x)))


def tiny_bgr_net() -> nn.Module:
    return TinyBGRNet()


class PlainNet(nn.Module):
    """A net that declares nothing: the spec options must say its convention."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))


def plain_net() -> nn.Module:
    return PlainNet()


def _marked(x: torch.Tensor) -> bool:
    """Any image of the batch whose top-left pixel is exactly magenta (1, 0, 1)."""
    corner = x[:, :, 0, 0]
    return bool(((corner[:, 0] == 1) & (corner[:, 1] == 0) & (corner[:, 2] == 1)).any())


def _double_free() -> None:
    """What OpenCV did in issue 10: a glibc "double free" abort of the whole process."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    p = libc.malloc(64)
    libc.free(p)
    libc.free(p)
    os.abort()  # a libc that did not notice still dies here


class CrashingCartoon(nn.Module):
    """classical:cartoon as it behaved on the machine of issue 10: a 1-pixel-high (or wide)
    image, or a magenta-marked one, kills the process inside native code."""

    stride = 1
    scale = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) == 1 or _marked(x):
            _double_free()
        u8 = to_uint8(x).permute(0, 2, 3, 1).numpy()
        out = np.stack([cartoon_uint8(np.ascontiguousarray(img)) for img in u8])
        return from_uint8(torch.from_numpy(out).permute(0, 3, 1, 2).contiguous())


def crashing_cartoon() -> nn.Module:
    return CrashingCartoon()


class HangingNet(nn.Module):
    """Inverts colours; never returns on a magenta-marked image."""

    stride = 1
    scale = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _marked(x):
            time.sleep(3600)
        return 1 - x


def hanging_net() -> nn.Module:
    return HangingNet()


class ExactClassifier(nn.Module):
    """A 5-class classifier of 32 x 32 images whose float32 arithmetic is exact, so the same
    logits come out whatever the batch size, summation order or CPU kernels: the input is
    rounded back to its 8-bit integers, the conv and linear weights are integers (in -1..1,
    integer biases), every sum stays below 2**24 (27 * 255 per conv output, 225 positions,
    4 features: 4 * 225 * 6885 < 2**23; stride 2, so no Winograd transform with fractional
    intermediates applies), and the final scaling is a power of two. It crashes
    (glibc abort) on a magenta-marked image, like the isolation tests' nets."""

    input_size = 32
    num_classes = 5

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, bias=False)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _marked(x):
            _double_free()
        u = torch.round(x * 255)
        f = torch.relu(self.conv(u)).sum(dim=(2, 3))
        return self.fc(f) * 2.0**-16


def exact_classifier() -> nn.Module:
    return ExactClassifier()


def exact_classifier_state(seed: int = 3) -> dict[str, torch.Tensor]:
    """Integer weights for :class:`ExactClassifier` (the state dict a test saves as --weights)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randint(-1, 2, (4, 3, 3, 3), generator=g).float(),
        "fc.weight": torch.randint(-1, 2, (5, 4), generator=g).float(),
        "fc.bias": torch.randint(-100000, 100001, (5,), generator=g).float(),
    }


class ColourClassifier(nn.Module):
    """Three named classes of 16 x 16 images (red, green, blue): the logits are 8 x each
    channel's mean. No weights."""

    input_size = 16
    class_names = ("red", "green", "blue")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) * 8


def colour_classifier() -> nn.Module:
    return ColourClassifier()


class UndeclaredClassifier(nn.Module):
    """Like :class:`ColourClassifier` but declares nothing (the spec must give its input size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def undeclared_classifier() -> nn.Module:
    return UndeclaredClassifier()


def not_a_module() -> int:
    return 42


def failing_factory() -> nn.Module:
    raise RuntimeError("the factory could not find its config")


NOT_CALLABLE = 3


class Payload:
    """A pickled object that torch.load(weights_only=True) must refuse to build."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))
