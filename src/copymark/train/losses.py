"""Losses and helpers of the GAN procedures: GAN losses, the image pool, VGG perceptual loss."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from copymark.errors import WeightsError

GanMode = Literal["lsgan", "vanilla"]


def gan_loss(logits: torch.Tensor, real: bool, mode: GanMode) -> torch.Tensor:
    """GAN loss of discriminator ``logits`` against the all-real or all-fake target.

    ``"lsgan"``: mean squared error to 1/0 (Mao et al. 2017; CycleGAN, U-GAT-IT);
    ``"vanilla"``: binary cross-entropy on logits (Goodfellow et al. 2014; pix2pix, SRGAN).
    Computed in float32 (safe under autocast).
    """
    logits = logits.float()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if mode == "lsgan":
        return F.mse_loss(logits, target)
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, target)
    raise ValueError(f"unknown GAN mode {mode!r}")


class ImagePool:
    """History of generated images for the discriminator (Shrivastava et al. 2017; CycleGAN).

    ``query(images)``: while fewer than ``size`` are stored, each image is stored and returned;
    afterwards, with probability 1/2 an image is swapped with a random stored one (the stored
    one is returned), else returned as is. Randomness comes from torch's global RNG (which the
    loop checkpoints); the stored images are part of the checkpoint via :meth:`state`.
    """

    def __init__(self, size: int = 50):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif float(torch.rand(())) > 0.5:
                j = int(torch.randint(0, self.size, ()))
                out.append(self.images[j].clone())
                self.images[j] = img.clone()
            else:
                out.append(img)
        return torch.cat(out, 0)

    def state(self) -> dict[str, Any]:
        return {"size": self.size, "images": [t.cpu() for t in self.images]}

    def load(self, state: Mapping[str, Any], device: torch.device | str) -> None:
        self.size = int(state["size"])
        self.images = [t.to(device) for t in state["images"]]


# ---------------------------------------------------------------------------------------------
# VGG perceptual loss (SRGAN)

# torchvision vgg19().features index of the layer after which SRGAN's VGG5,4 features are taken:
# conv5_4 is features[34], its ReLU features[35]; Ledig et al. use the feature map "obtained by
# the 4th convolution (after activation) before the 5th max-pooling layer".
VGG54_LAST = 35
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGFeatures(nn.Module):
    """VGG19 ``features[: last + 1]`` on ImageNet-normalised input, frozen, eval mode."""

    def __init__(self, last: int = VGG54_LAST):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        # VGG19's conv part only (building the full model would allocate its 120M-parameter head)
        self.features = make_layers(cfgs["E"], batch_norm=False)[: last + 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:  # always eval (no dropout in features anyway)
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)


def load_vgg19_features(path: str | Path | None, last: int = VGG54_LAST) -> VGGFeatures:
    """VGG19 feature extractor from a local torchvision ``vgg19`` state dict file.

    The file is torchvision's ``vgg19-dcbb9e9d.pth`` (or any state dict with its
    ``features.N.weight/bias`` keys), read with ``torch.load(weights_only=True)``. copymark
    never downloads it.
    """
    if path is None:
        raise WeightsError(
            "the SRGAN perceptual loss needs VGG19 weights, and no file was given",
            hint="download torchvision's vgg19-dcbb9e9d.pth (https://download.pytorch.org/models/vgg19-dcbb9e9d.pth) "
            "and pass --vgg-weights PATH (or set COPYMARK_VGG19_WEIGHTS); or train without the perceptual "
            "term on purpose with --no-perceptual",
        )
    from copymark.checkpoints import load_strict, load_third_party_state_dict

    net = VGGFeatures(last)

    def key_map(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in sd.items():
            if k.startswith("features."):
                idx = int(k.split(".")[1])
                if idx <= last:
                    out[k] = v
        return out

    state = load_third_party_state_dict(path, key_map)
    load_strict(net, state, str(path))
    return net


class PerceptualLoss(nn.Module):
    """MSE between VGG features of SR and HR images.

    Feature maps are multiplied by ``rescale`` = 1/12.75 as in SRGAN (Ledig et al. 2017, sec. 3:
    equivalent to scaling the loss by about 0.006 so it is comparable to the pixel MSE).
    """

    def __init__(self, features: nn.Module, rescale: float = 1.0 / 12.75):
        super().__init__()
        self.features = features
        self.rescale = rescale

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        fs = self.features(sr.float()) * self.rescale
        with torch.no_grad():
            fh = self.features(hr.float()) * self.rescale
        return F.mse_loss(fs, fh)
