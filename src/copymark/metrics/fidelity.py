"""Full-reference fidelity: PSNR and SSIM, per image, with the SR evaluation protocol explicit.

Both functions take a prediction and a reference batch (``N x 3 x H x W`` or ``3 x H x W``,
float RGB in ``[0, data_range]``; the copymark convention is ``data_range=1.0``) and return one
value per image (a float64 tensor of shape ``N``). The protocol of super-resolution papers
(BasicSR's ``calculate_psnr(img, img2, crop_border, test_y_channel)``) is stated in the
signature:

``y_channel``
    ``False``: compare the RGB channels. ``True``: compare the luma Y of YCbCr, ITU-R BT.601
    "studio swing" as MATLAB's ``rgb2ycbcr`` (Y = 16 + 65.481 R + 128.553 G + 24.966 B with R,
    G, B in [0, 1]; the same matrix as :func:`copymark.images.rgb_to_y`, evaluated here in
    float64).
``crop_border``
    pixels removed from every side before comparing (the SR convention: the scale factor).
``quantize``
    ``True`` (default, the SR protocol): the values are computed on 8-bit images, as MATLAB
    evaluation scripts do: RGB is rounded to the nearest of 256 levels, and on the Y channel Y
    is rounded to an integer level too (MATLAB's ``rgb2ycbcr`` on a ``uint8`` image returns
    ``uint8``). Rounding is half away from zero, as MATLAB. For images read from 8-bit files
    the RGB rounding changes nothing. ``False``: raw float values, no rounding anywhere.
    (BasicSR rounds RGB but keeps Y in float; on bicubic x4 Set5 that gives 28.43 dB
    instead of the MATLAB/published 28.42 dB.)

PSNR is ``10 log10(data_range^2 / MSE)`` over all compared pixels and channels of one image
(``inf`` for identical images), as ``skimage.metrics.peak_signal_noise_ratio``.

SSIM is Wang et al. (2004) with a Gaussian window (sigma 1.5, 11 x 11, normalised),
K1 = 0.01, K2 = 0.03, population (not sample) covariances, averaged over the "valid" region
(5 pixels in from each side, where the whole window fits). On RGB, SSIM is computed per
channel and averaged over the channels (skimage's ``channel_axis`` convention). This equals
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=...)``; the tests check it to 1e-4 on Set5 and on
scikit-image's sample photographs. All arithmetic is float64.

:class:`PSNR` and :class:`SSIM` are thin accumulators: ``update`` with batches, ``compute``
returns the :class:`PerImageValues` at the end (summarised by :mod:`copymark.metrics.summary`). They keep only one
float per image, never the images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from copymark.errors import ImageError
from copymark.images import _YCBCR_MATRIX, _YCBCR_OFFSET
from copymark.metrics.summary import DEFAULT_N_BOOT, Summary, summarize

SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03


# ---------------------------------------------------------------------------------------------
# preparation: shapes, 8-bit rounding, Y channel, border crop


def _as_batch(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ImageError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ImageError(f"{what}: expected shape [N x] C x H x W, got {tuple(x.shape)}")
    return x


def prepare_pair(
    pred: torch.Tensor,
    ref: torch.Tensor,
    data_range: float = 1.0,
    y_channel: bool = False,
    crop_border: int = 0,
    quantize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the evaluation protocol to a pair of batches -> float64 ``N x C x h x w`` in [0, 1].

    See the module docstring for what ``y_channel``, ``crop_border`` and ``quantize`` mean.
    The outputs are scaled to ``[0, 1]`` (divided by ``data_range``), so compare them with a
    data range of 1.
    """
    p = _as_batch(pred, "prediction")
    r = _as_batch(ref, "reference")
    if p.shape != r.shape:
        raise ImageError(
            f"prediction and reference differ in shape: {tuple(p.shape)} vs {tuple(r.shape)}",
            hint="compare images of the same size (crop or resize the prediction first)",
        )
    if data_range <= 0:
        raise ImageError(f"data_range must be positive, got {data_range}")
    if crop_border < 0:
        raise ImageError(f"crop_border must be >= 0, got {crop_border}")
    if y_channel and p.shape[1] != 3:
        raise ImageError(f"y_channel needs RGB images (3 channels), got {p.shape[1]} channels")
    out = []
    for x in (p, r):
        # in-place after one float64 copy: a batch of large images needs few temporaries
        x = x.detach().to(torch.float64, copy=True).div_(float(data_range))
        if quantize:
            x.clamp_(0.0, 1.0).mul_(255.0).add_(0.5).floor_().div_(255.0)  # MATLAB round
        if y_channel:
            w = [float(c) for c in _YCBCR_MATRIX[0]]
            y = x[:, 0:1] * w[0]
            y.add_(x[:, 1:2], alpha=w[1]).add_(x[:, 2:3], alpha=w[2]).add_(float(_YCBCR_OFFSET[0]))  # [16, 235]
            if quantize:
                y.add_(0.5).floor_()
            x = y.div_(255.0)
        out.append(x)
    a, b = out
    if crop_border:
        h, w = a.shape[-2:]
        if h <= 2 * crop_border or w <= 2 * crop_border:
            raise ImageError(f"crop_border={crop_border} leaves nothing of a {h}x{w} image")
        a = a[..., crop_border : h - crop_border, crop_border : w - crop_border]
        b = b[..., crop_border : h - crop_border, crop_border : w - crop_border]
    return a, b


# ---------------------------------------------------------------------------------------------
# pure functions


def psnr(
    pred: torch.Tensor,
    ref: torch.Tensor,
    data_range: float = 1.0,
    y_channel: bool = False,
    crop_border: int = 0,
    quantize: bool = True,
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, one value per image (float64 tensor of shape ``N``).

    ``y_channel`` / ``crop_border`` / ``quantize`` follow the SR protocol (module docstring):
    by default computed on 8-bit-rounded values, like the MATLAB scripts of SR papers.
    Identical images give ``inf``.
    """
    a, b = prepare_pair(pred, ref, data_range, y_channel, crop_border, quantize)
    mse = a.sub_(b).pow_(2).flatten(1).mean(dim=1)  # a, b are our own float64 copies
    with torch.no_grad():
        return 10.0 * torch.log10(1.0 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (float64); the 2-D window is its outer product."""
    r = (size - 1) / 2
    x = torch.arange(size, dtype=torch.float64) - r
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _valid_filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of each channel (float64), keeping only the 'valid' region.

    On CPU this runs scipy.ndimage's 1-D correlation (what skimage uses; far faster than a
    float64 ``conv2d`` on CPU), elsewhere a depthwise ``conv2d``. Both are exact in float64.
    """
    k = g.numel()
    r = k // 2
    if x.device.type == "cpu":
        from scipy.ndimage import correlate1d

        a = x.detach().numpy()
        taps = g.numpy()
        a = correlate1d(a, taps, axis=-2, mode="reflect")[..., r : a.shape[-2] - r, :]
        a = correlate1d(a, taps, axis=-1, mode="reflect")[..., :, r : a.shape[-1] - r]
        return torch.from_numpy(np.ascontiguousarray(a))
    c = x.shape[1]
    g = g.to(x.device, x.dtype)
    x = F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """SSIM index map (``N x C x (H-10) x (W-10)``) of two prepared float batches in [0, 1]."""
    h, w = a.shape[-2:]
    if h < window or w < window:
        raise ImageError(f"SSIM needs images of at least {window}x{window} pixels (after cropping), got {h}x{w}")
    g = gaussian_window(window, sigma).to(a.device)
    c1 = SSIM_K1**2
    c2 = SSIM_K2**2
    mu_a = _valid_filter(a, g)
    mu_b = _valid_filter(b, g)
    var_a = _valid_filter(a * a, g) - mu_a * mu_a
    var_b = _valid_filter(b * b, g) - mu_b * mu_b
    cov = _valid_filter(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return num / den


def ssim(
    pred: torch.Tensor,
    ref: torch.Tensor,
    data_range: float = 1.0,
    y_channel: bool = False,
    crop_border: int = 0,
    quantize: bool = True,
) -> torch.Tensor:
    """Structural similarity, one value per image (float64 tensor of shape ``N``).

    Wang et al. Gaussian SSIM (sigma 1.5, 11 x 11, K1 = 0.01, K2 = 0.03), mean over the valid
    region; on RGB the mean over channels (as skimage with ``channel_axis``). By default
    computed on 8-bit-rounded values (``quantize=True``), like SR papers; see the module
    docstring.
    """
    a, b = prepare_pair(pred, ref, data_range, y_channel, crop_border, quantize)
    with torch.no_grad():
        # image by image: the float64 maps of a whole batch of large images would be big
        return torch.stack([ssim_map(a[i : i + 1], b[i : i + 1]).mean() for i in range(a.shape[0])])


# ---------------------------------------------------------------------------------------------
# accumulators


@dataclass
class PerImageValues:
    """The per-image values of one metric (and the images' keys); :meth:`summary` gives mean,
    std, n and CI by the project's one convention (:mod:`copymark.metrics.summary`)."""

    name: str
    values: list[float] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    def per_image(self) -> dict[str, float]:
        """Values by image key (file stem) when keys were given, else by index."""
        keys = self.keys if len(self.keys) == len(self.values) else [str(i) for i in range(len(self.values))]
        return dict(zip(keys, self.values))

    def summary(self, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> Summary:
        return summarize(self.values, n_boot, seed)


class _PerImageMetric:
    """Collects one value per image over batches; ``compute`` summarises them."""

    name = "metric"

    def __init__(
        self, data_range: float = 1.0, y_channel: bool = False, crop_border: int = 0, quantize: bool = True
    ) -> None:
        self.data_range = data_range
        self.y_channel = y_channel
        self.crop_border = crop_border
        self.quantize = quantize
        self.reset()

    def reset(self) -> None:
        self.values: list[float] = []
        self.keys: list[str] = []

    def _fn(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, pred: torch.Tensor, ref: torch.Tensor, keys: list[str] | None = None) -> torch.Tensor:
        """Score one batch; returns its per-image values and keeps them (one float each)."""
        v = self._fn(pred, ref)
        self.values.extend(float(x) for x in v)
        if keys is not None:
            if len(keys) != len(v):
                raise ImageError(f"{self.name}: {len(keys)} keys for a batch of {len(v)} images")
            self.keys.extend(keys)
        return v

    def compute(self) -> PerImageValues:
        return PerImageValues(self.name, list(self.values), list(self.keys))


class PSNR(_PerImageMetric):
    """Streaming :func:`psnr`: per-image values over batches (``compute().summary()``: mean, std, n, CI)."""

    name = "psnr"

    def _fn(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return psnr(pred, ref, self.data_range, self.y_channel, self.crop_border, self.quantize)


class SSIM(_PerImageMetric):
    """Streaming :func:`ssim`: per-image values over batches (``compute().summary()``: mean, std, n, CI)."""

    name = "ssim"

    def _fn(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return ssim(pred, ref, self.data_range, self.y_channel, self.crop_border, self.quantize)
