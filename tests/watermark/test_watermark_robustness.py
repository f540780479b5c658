"""The study's Gaussian-noise attack: the added noise has the stated mean and spread on 8-bit
levels, is clipped to the 8-bit range and rounded to 8-bit levels, is reproducible, and bad
input is refused. Tolerances are derived from the sample size (standard errors), not tuned."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from copymark.errors import ConfigError, ImageError
from copymark.watermark.attacks.robustness import STUDY_NOISE_MEAN, STUDY_NOISE_STD, gaussian_noise

SHAPE = (4, 3, 64, 64)
N = math.prod(SHAPE)
SE_MULTIPLE = 6  # a fixed seed, but a tolerance that any seed passes with overwhelming probability


def _flat(level: int) -> torch.Tensor:
    return torch.full(SHAPE, level / 255.0)


def test_added_noise_has_the_study_mean_and_std_in_8_bit_levels():
    assert (STUDY_NOISE_MEAN, STUDY_NOISE_STD) == (30.0, 15.0)  # the study's section 7
    x = _flat(100)  # far from both ends: no clipping (100 + 30 +- 8.3 std stays in [0, 255])
    out = gaussian_noise(x, generator=torch.Generator().manual_seed(0))
    added = (out.double() * 255 - 100).flatten()
    # rounding to 8-bit levels adds an error of variance 1/12 to the Gaussian's
    sd = math.sqrt(STUDY_NOISE_STD**2 + 1 / 12)
    assert abs(float(added.mean()) - STUDY_NOISE_MEAN) <= SE_MULTIPLE * sd / math.sqrt(N)
    assert abs(float(added.std()) - sd) <= SE_MULTIPLE * sd / math.sqrt(2 * (N - 1))
    # i.i.d. per value: the channels of one pixel are not the same draw
    assert not torch.equal(out[:, 0], out[:, 1])


def test_output_is_clipped_and_on_8_bit_levels():
    bright = gaussian_noise(_flat(250), generator=torch.Generator().manual_seed(1))
    assert bright.dtype == torch.float32 and bright.shape == SHAPE
    assert float(bright.max()) == 1.0 and float(bright.min()) >= 0.0
    levels = bright.double() * 255
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    # 250 + noise reaches the top level 255 when the noise is >= 4.5 (then rounded up): P = P(Z >= -1.7)
    p = float(stats.norm.sf(4.5, loc=STUDY_NOISE_MEAN, scale=STUDY_NOISE_STD))
    frac = float((levels.round() == 255).double().mean())
    assert abs(frac - p) <= SE_MULTIPLE * math.sqrt(p * (1 - p) / N)
    # clipping makes the noise actually added in bright regions far smaller than the mean of 30
    assert float(levels.mean()) - 250 < 5.0
    dark = gaussian_noise(torch.zeros(SHAPE), mean=-30.0, generator=torch.Generator().manual_seed(2))
    assert float(dark.min()) == 0.0 and float(dark.max()) <= 1.0


def test_reproducible_input_unchanged_and_no_noise_is_identity():
    x = torch.rand(SHAPE, generator=torch.Generator().manual_seed(3))
    before = x.clone()
    a = gaussian_noise(x, generator=torch.Generator().manual_seed(4))
    b = gaussian_noise(x, generator=torch.Generator().manual_seed(4))
    c = gaussian_noise(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(x, before) and torch.equal(a, b) and not torch.equal(a, c)
    q = torch.round(x * 255) / 255  # an 8-bit image
    assert torch.equal(gaussian_noise(q, mean=0.0, std=0.0), q.float())


def test_bad_input_is_refused():
    with pytest.raises(ConfigError, match="standard deviation >= 0"):
        gaussian_noise(torch.zeros(1, 3, 8, 8), std=-1.0)
    with pytest.raises(ConfigError, match="finite"):
        gaussian_noise(torch.zeros(1, 3, 8, 8), mean=float("nan"))
    with pytest.raises(ImageError, match="float image"):
        gaussian_noise(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
