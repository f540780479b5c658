"""Attacks a suspect applies to the images it is sent (robustness attacks on ownership verification).

The security study (../shared/papers/003, section 7, Tables 4 and 5) has the infringer distort
every image sent to its copy of the protected classifier, in the hope that the hidden
watermark fails while the main task survives. :func:`gaussian_noise` is its Gaussian-noise
attack: additive noise of mean 30 and standard deviation 15 on 8-bit pixels. These are plain
functions on the in-memory image convention (float32 ``N x 3 x H x W`` RGB in [0, 1]) so that
the benchmark, verification experiments and the attack studies share one definition.
"""

from __future__ import annotations

import math

import torch

from copymark.errors import ConfigError, ImageError
from copymark.images import quantize

STUDY_NOISE_MEAN = 30.0
"""The study's Gaussian-noise mean, in 8-bit levels."""
STUDY_NOISE_STD = 15.0
"""The study's Gaussian-noise standard deviation, in 8-bit levels."""


def gaussian_noise(
    images: torch.Tensor,
    mean: float = STUDY_NOISE_MEAN,
    std: float = STUDY_NOISE_STD,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``images`` with i.i.d. Gaussian noise added to every pixel and channel, as the study applies it.

    ``mean`` and ``std`` are in 8-bit levels (0..255): the noise ``N(mean, std^2)`` is drawn per
    value, added to ``255 * images``, the sum clipped to [0, 255] and rounded to the nearest
    8-bit level, since the attacked image is sent (and stored) as an 8-bit image. A positive
    mean brightens the image; the clipping at 255 makes the noise actually added in bright
    regions smaller than ``mean``. Returns a new float32 tensor of the same shape in [0, 1];
    ``images`` is not changed. ``generator`` makes the noise reproducible.
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ImageError(
            "gaussian_noise expects a float image tensor in [0, 1]",
            hint="convert 8-bit images with copymark.images.from_uint8 first",
        )
    if not (math.isfinite(mean) and math.isfinite(std) and std >= 0):
        raise ConfigError(
            f"Gaussian noise needs a finite mean and a standard deviation >= 0, got mean {mean}, std {std}",
            hint=f"the study's attack: mean {STUDY_NOISE_MEAN:g}, std {STUDY_NOISE_STD:g} (8-bit levels)",
        )
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float32, device=images.device)
    noisy = images.detach().float() + (noise * std + mean) / 255.0
    return quantize(noisy.clamp(0, 1))


__all__ = ["STUDY_NOISE_MEAN", "STUDY_NOISE_STD", "gaussian_noise"]
