"""Tiny ONNX graphs for the tests, exported from small torch nets with ``torch.onnx.export``.

* :class:`SRNet`: float32, NCHW, any batch and size, x2 super-resolution, stride 2, [0, 1].
* :class:`AnimeLikeNet`: AnimeGANv3's convention (``../shared/data/weights/animeganv3_jpface``):
  float16 weights and I/O, NHWC, batch fixed at 1, [-1, 1] (a tanh output), stride 2.
* small nets for the bad inputs: two inputs, a classifier, a uint8 input, fixed shapes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


def export(
    net: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    dynamic: dict[str, dict[int, str]] | None = None,
    inputs: tuple[str, ...] = ("image",),
    outputs: tuple[str, ...] = ("out",),
) -> Path:
    """``net`` (eval mode) as an ONNX graph file; ``dynamic``: the symbolic axes per tensor name."""
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated; it needs no onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(),
            example,
            str(path),
            dynamo=False,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=17,
        )
    return path


NCHW_FREE = {"image": {0: "n", 2: "h", 3: "w"}, "out": {0: "n", 2: "oh", 3: "ow"}}


class SRNet(nn.Module):
    """x2 super-resolution with one stride-2 convolution and a pixel shuffle: stride 2, scale 2."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 3 * 16, 3, padding=1),
            nn.PixelShuffle(4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(x))


class AnimeLikeNet(nn.Module):
    """NHWC in [-1, 1] -> NHWC in [-1, 1]: reflect-padded conv, a stride-2 conv, a bilinear x2
    upsampling and a tanh, like AnimeGANv3's generator in miniature (stride 2, scale 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, padding_mode="reflect")
        self.c3 = nn.Conv2d(8, 3, 3, padding=1, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 3, 1, 2)
        y = nn.functional.leaky_relu(self.c1(y), 0.2)
        y = nn.functional.leaky_relu(self.c2(y), 0.2)
        y = nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        return torch.tanh(self.c3(y)).permute(0, 2, 3, 1)


def sr_graph(path: Path, seed: int = 0) -> tuple[Path, SRNet]:
    torch.manual_seed(seed)
    net = SRNet().eval()
    return export(net, (torch.rand(1, 3, 16, 16),), path, NCHW_FREE), net


ANIME_INPUT = "AnimeLike_input:0"


def anime_like_graph(path: Path, seed: int = 0) -> tuple[Path, AnimeLikeNet]:
    """The float16 NHWC batch-1 graph, and the float32 net with the same (float16-rounded) weights."""
    torch.manual_seed(seed)
    net = AnimeLikeNet().eval().half()
    dynamic = {ANIME_INPUT: {1: "h", 2: "w"}, "out:0": {1: "oh", 2: "ow"}}  # batch stays 1
    export(net, (torch.rand(1, 16, 16, 3).half(),), path, dynamic, inputs=(ANIME_INPUT,), outputs=("out:0",))
    return path, net.float()


class PlainConv(nn.Module):
    """One 3x3 convolution, no activation: its output keeps its input's convention."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def plain_graph(path: Path, seed: int = 0) -> tuple[Path, PlainConv]:
    torch.manual_seed(seed)
    net = PlainConv().eval()
    return export(net, (torch.rand(1, 3, 16, 16),), path, NCHW_FREE), net


class TwoInputs(nn.Module):
    def forward(self, x: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        return x * strength


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


class ImageAndLogits(nn.Module):
    """Two outputs: logits first, the image second (a net with an auxiliary head)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.sigmoid(self.conv(x))
        return y.mean(dim=(2, 3)), y


class Uint8Input(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


class Grey(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True)


def bad_graphs(folder: Path) -> dict[str, Path]:
    """One graph per kind of bad input, by name."""
    x = torch.rand(1, 3, 8, 8)
    free = {"image": {0: "n", 2: "h", 3: "w"}}
    return {
        "two_inputs": export(
            TwoInputs(), (x, torch.ones(1)), folder / "two_inputs.onnx", free, inputs=("image", "strength")
        ),
        "rank2": export(Identity(), (torch.rand(2, 12),), folder / "rank2.onnx"),
        "four_channels": export(Identity(), (torch.rand(1, 4, 8, 8),), folder / "four_channels.onnx"),
        "ambiguous": export(Identity(), (torch.rand(1, 3, 8, 3),), folder / "ambiguous.onnx"),
        "classifier": export(Classifier(), (x,), folder / "classifier.onnx", free),
        "grey": export(Grey(), (x,), folder / "grey.onnx", {"image": {0: "n", 2: "h", 3: "w"}}),
        "two_outputs": export(
            ImageAndLogits(),
            (x,),
            folder / "two_outputs.onnx",
            {"image": {0: "n", 2: "h", 3: "w"}, "image_out": {0: "n", 2: "oh", 3: "ow"}},
            outputs=("logits", "image_out"),
        ),
        "uint8": export(Uint8Input(), (torch.zeros(1, 3, 8, 8, dtype=torch.uint8),), folder / "uint8.onnx", free),
        "fixed": export(Identity(), (torch.rand(1, 3, 16, 16),), folder / "fixed.onnx"),
    }
