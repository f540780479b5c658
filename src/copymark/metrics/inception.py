"""The FID feature net: Inception-v3 2048-d pool features with the standard 2015-12-05 weights.

FID and KID numbers are comparable across papers only with the *TensorFlow* Inception graph of
2015-12-05 that the original FID code used. pytorch-fid ported those weights to a PyTorch file,
``pt_inception-2015-12-05-6726825d.pth`` (published as a release asset of
github.com/mseitzer/pytorch-fid); this module builds the matching network and loads that file.
Nothing is downloaded: the file is given by path, or by the environment variable
``COPYMARK_INCEPTION_WEIGHTS`` (``--inception-weights`` on the command line). A missing file is
an error that says how to get it, never a silent switch to other weights.

The network is torchvision's ``Inception3`` (1008 classes, no auxiliary head) with the blocks
that the TensorFlow graph computes differently replaced:

* ``Mixed_5b/5c/5d`` (Inception-A), ``Mixed_6b..6e`` (Inception-C) and ``Mixed_7b``
  (Inception-E): the 3x3 average pool of the pool branch excludes the zero padding from its
  average (``count_include_pad=False``), as TensorFlow's average pool does.
* ``Mixed_7c`` (the second Inception-E): the pool branch uses a 3x3 *max* pool.

Their parameters (and so the state-dict keys) are those of torchvision's blocks; only the
forward pass differs. Inputs in [0, 1] are resized to 299 x 299 (bilinear,
``align_corners=False``) and scaled to [-1, 1]; the output is the 2048-d global average pool
before the classifier, as pytorch-fid's default block.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception as tv_inception

from copymark.checkpoints import load_strict, load_third_party_state_dict
from copymark.errors import WeightsError

WEIGHTS_FILE_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILE_NAME
WEIGHTS_ENV = "COPYMARK_INCEPTION_WEIGHTS"
FEATURE_DIM = 2048
INPUT_SIZE = 299


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TensorFlow's, ignores the zero padding."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(tv_inception.InceptionA):
    """Inception-A block with TensorFlow's average pool (padding excluded from the mean)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class FIDInceptionC(tv_inception.InceptionC):
    """Inception-C block with TensorFlow's average pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            bd = layer(bd)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class FIDInceptionE(tv_inception.InceptionE):
    """Inception-E block of the FID graph: ``pool="avg"`` (Mixed_7b, TF average pool) or
    ``pool="max"`` (Mixed_7c, which uses a 3x3 max pool in that graph)."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__(in_channels)
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        t = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(t), self.branch3x3_2b(t)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)


def build_fid_inception() -> tv_inception.Inception3:
    """The FID Inception-v3 graph with *uninitialised* weights (load them with the key map)."""
    net = tv_inception.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE(1280, pool="avg")
    net.Mixed_7c = FIDInceptionE(2048, pool="max")
    return net


class InceptionFeatures(nn.Module):
    """``N x 3 x H x W`` in [0, 1] -> ``N x 2048`` FID pool features.

    ``input_size`` is the side images are resized to: 299 for FID (the only value
    :func:`inception_v3_features` uses); smaller values (>= 75) only make tests cheaper.
    """

    def __init__(self, input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        if input_size < 75:
            raise ValueError(f"Inception-v3 needs inputs of at least 75x75, got {input_size}")
        net = build_fid_inception()
        net.fc = nn.Identity()  # the 1008-class head is not part of the features
        self.inception = net
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W images, got {tuple(x.shape)}")
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        n = self.inception
        for layer in (
            n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.maxpool1,
            n.Conv2d_3b_1x1, n.Conv2d_4a_3x3, n.maxpool2,
            n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d, n.Mixed_6e,
            n.Mixed_7a, n.Mixed_7b, n.Mixed_7c, n.avgpool,
        ):  # fmt: skip
            x = layer(x)
        return torch.flatten(x, 1)


def fid_inception_key_map(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the keys of pytorch-fid's ``pt_inception-2015-12-05`` state dict to :class:`InceptionFeatures`.

    The file holds torchvision ``Inception3`` names (``Conv2d_1a_3x3.conv.weight``,
    ``Mixed_7c.branch_pool.bn.running_var``, ..., ``fc.weight``). We drop the 1008-class
    classifier (``fc.*``), strip a ``module.`` prefix (DataParallel saves) and put the rest under
    ``inception.``. Anything else is kept, so a foreign file fails the strict load loudly.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        if k in ("fc.weight", "fc.bias"):
            continue
        out["inception." + k] = value
    return out


def resolve_inception_weights(weights_path: str | Path | None = None) -> Path:
    """The weight file to use: ``weights_path``, else ``$COPYMARK_INCEPTION_WEIGHTS``; must exist."""
    how = (
        f"download {WEIGHTS_FILE_NAME} (pytorch-fid's port of the TensorFlow FID Inception, "
        f"{WEIGHTS_URL}) and pass --inception-weights FILE or set {WEIGHTS_ENV}=FILE"
    )
    src = weights_path if weights_path not in (None, "") else os.environ.get(WEIGHTS_ENV) or None
    if src is None:
        raise WeightsError("FID/KID need the Inception-v3 FID weight file, and none was given", hint=how)
    p = Path(src).expanduser()
    origin = "--inception-weights" if weights_path not in (None, "") else WEIGHTS_ENV
    if not p.is_file():
        raise WeightsError(f"Inception weight file not found: {p} (from {origin})", hint=how)
    return p


def inception_v3_features(
    weights_path: str | Path | None = None, device: str | torch.device = "cpu"
) -> InceptionFeatures:
    """The standard FID feature net, loaded strictly from the 2015-12-05 weight file.

    ``weights_path`` or ``$COPYMARK_INCEPTION_WEIGHTS`` names the file
    (``pt_inception-2015-12-05-6726825d.pth``); a missing file raises
    :class:`~copymark.errors.WeightsError` saying how to provide it. Returns a module in eval
    mode with gradients off: call it on ``N x 3 x H x W`` images in [0, 1] to get ``N x 2048``.
    """
    path = resolve_inception_weights(weights_path)
    state = load_third_party_state_dict(path, fid_inception_key_map)
    model = InceptionFeatures()
    load_strict(model, state, str(path))
    model.eval().requires_grad_(False)
    return model.to(device)
