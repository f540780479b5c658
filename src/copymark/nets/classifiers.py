"""Host image classifiers: ResNet-18 (torchvision's architecture) and a small CNN for tests.

Both take float ``N x 3 x H x W`` RGB batches in ``[0, 1]`` (the copymark image convention),
normalise them inside ``forward`` with the config's per-channel ``mean`` / ``std`` (callers
never normalise), and return ``N x num_classes`` logits. The normalisation constants are
non-persistent buffers: they follow the config, not the weights file, so they are not part of
the weights' fingerprint. Every classifier carries ``num_classes``, ``input_size`` (the side of
the square images it was made for) and ``class_names`` (index = label; may be empty), which is
what serving and ownership verification need to know about it.

**ResNet18** is torchvision's ``resnet18`` (``models/resnet.py``: ``BasicBlock``, layers
``[2, 2, 2, 2]``; He et al. 2016) written out here with torchvision's module names, so its
state-dict keys are torchvision's (a torchvision ``resnet18`` state dict loads strictly into
the ImageNet stem and gives the same logits; tested), and with torchvision's initialisation
(Kaiming-normal convs, BN weight 1 / bias 0). It is not imported from torchvision only
because importing torchvision costs seconds wherever the net configs are read. No pretrained
weights are ever loaded here. Only the stem changes with the input size
(``stem``, by default chosen from ``input_size`` by :func:`stem_for_size`):

``"cifar"`` (inputs < 64 px, e.g. CIFAR-10's 32 px)
    3x3 stride-1 conv, no max-pool: the body sees the full 32 x 32 map and ends at 4 x 4, the
    usual CIFAR ResNet-18 (kuangliu/pytorch-cifar; the ACSAC19 reference code).
``"tiny"`` (64 <= inputs < 128, e.g. Tiny-ImageNet's 64 px)
    3x3 stride-1 conv, then torchvision's 3x3 stride-2 max-pool. Our choice: the first conv
    runs at every pixel (a stride-2 first conv would subsample the pixel-level detail the
    stego triggers live in before any filter has seen it), and the max-pool brings 64 px down
    to the 32 x 32 body geometry of the CIFAR stem, so the body ends at 4 x 4 as on CIFAR and
    costs about what the CIFAR network costs (without the pool, 4x as much).
``"imagenet"`` (inputs >= 128 px, e.g. the study's 256 px mini-ImageNet)
    torchvision's 7x7 stride-2 conv and 3x3 stride-2 max-pool (ends at 8 x 8 for 256 px).

At the ImageNet stem with 1000 classes the parameter count is torchvision's resnet18's
(11,689,512); the 3x3 stems have 3 x 64 x 9 = 1,728 conv1 weights instead of 9,408.

**SmallCNN**: ``len(widths)`` blocks of conv 3x3 - BatchNorm - ReLU - 2x2 max-pool, a global
average pool and a linear layer; a few thousand parameters, for fast CPU tests.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from copymark.config import StrictModel

Stem = Literal["cifar", "tiny", "imagenet"]
STEMS: tuple[str, ...] = ("cifar", "tiny", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def stem_for_size(size: int) -> Stem:
    """The ResNet stem for ``size`` px inputs: < 64 cifar, < 128 tiny, else imagenet (module docstring)."""
    if size < 64:
        return "cifar"
    if size < 128:
        return "tiny"
    return "imagenet"


# ---------------------------------------------------------------------------------------------
# configs


class _ClassifierConfig(StrictModel):
    """What every host classifier config holds: its interface (classes, input size) and normalisation."""

    num_classes: int = Field(10, ge=2, description="number of classes (logits)")
    input_size: int = Field(32, ge=8, le=4096, description="side of the square input images, px")
    class_names: list[str] = Field(
        default_factory=list, description="name of each class (index = label); empty: unnamed"
    )
    mean: tuple[float, float, float] = Field(IMAGENET_MEAN, description="per-channel mean subtracted in forward")
    std: tuple[float, float, float] = Field(IMAGENET_STD, description="per-channel std divided by in forward")

    @model_validator(mode="after")
    def _check(self) -> Any:
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for num_classes={self.num_classes}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        return self


class ResNet18Config(_ClassifierConfig):
    """ResNet-18 (:class:`ResNet18`); ``stem`` defaults to :func:`stem_for_size` of ``input_size``."""

    kind: Literal["resnet18"] = "resnet18"
    stem: Stem = Field(
        "cifar",
        description="cifar: 3x3/1 conv; tiny: 3x3/1 + max-pool; imagenet: 7x7/2 + max-pool (default from input_size)",
    )

    @model_validator(mode="before")
    @classmethod
    def _stem_from_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("stem") is None:
            size = data.get("input_size", 32)
            data = {**data, "stem": stem_for_size(size) if isinstance(size, int) else "cifar"}
        return data


class SmallCNNConfig(_ClassifierConfig):
    """A small CNN (:class:`SmallCNN`) for tests and quick experiments."""

    kind: Literal["small_cnn"] = "small_cnn"
    widths: tuple[int, ...] = Field((16, 32, 64), min_length=1, max_length=6, description="channels of each conv block")


ClassifierConfig = ResNet18Config | SmallCNNConfig
CLASSIFIER_KINDS: tuple[str, ...] = ("resnet18", "small_cnn")


# ---------------------------------------------------------------------------------------------
# nets


class _Normalize(nn.Module):
    """``(x - mean) / std`` per channel, constants as non-persistent buffers (they follow the config)."""

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: two 3x3 convs with BN, identity (or 1x1 conv + BN) shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 as torchvision builds it (same module names), a stem for the input size, and
    normalisation inside ``forward``."""

    def __init__(
        self,
        num_classes: int = 10,
        stem: Stem = "cifar",
        input_size: int = 32,
        class_names: list[str] | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; expected one of {STEMS}")
        self.normalize = _Normalize(mean, std)
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.Identity() if stem == "cifar" else nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():  # torchvision's initialisation (zero_init_residual=False)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        self.stem = stem
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.class_names = list(class_names or [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SmallCNN(nn.Module):
    """Conv-BN-ReLU-maxpool blocks, global average pool, linear classifier."""

    def __init__(
        self,
        num_classes: int = 10,
        widths: tuple[int, ...] = (16, 32, 64),
        input_size: int = 32,
        class_names: list[str] | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.class_names = list(class_names or [])
        self.normalize = _Normalize(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(self.normalize(x))), 1))


def build_classifier(config: ClassifierConfig) -> ResNet18 | SmallCNN:
    """A freshly initialised classifier for ``config`` (explicit ``match`` on ``kind``)."""
    common = {
        "num_classes": config.num_classes,
        "input_size": config.input_size,
        "class_names": config.class_names,
        "mean": config.mean,
        "std": config.std,
    }
    match config:
        case ResNet18Config():
            return ResNet18(stem=config.stem, **common)
        case SmallCNNConfig():
            return SmallCNN(widths=config.widths, **common)
    raise TypeError(f"not a classifier config: {type(config).__name__}")
