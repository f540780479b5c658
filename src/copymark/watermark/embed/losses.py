"""Differentiable pieces of the embedding losses: SSIM as a loss, 8-bit rounding with gradients.

:func:`ssim_loss_term` is the SSIM of :mod:`copymark.metrics.fidelity` (Wang et al. 2004:
11 x 11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, population covariances, mean over
the valid region and the channels) computed with float32 depthwise convolutions so that it
has gradients and runs on any device; the metric itself is float64 (scipy on CPU) and never
differentiable. The tests check the two agree to float32 accuracy on unrounded images.

:func:`straight_through_8bit` rounds images to 8-bit levels in the forward pass and passes the
gradient through unchanged (the straight-through estimator): triggers are stored and sent as
8-bit PNGs, so the host and the extractor train on exactly the values they will later see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from copymark.metrics.fidelity import SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW, gaussian_window


def ssim_loss_term(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two ``N x C x H x W`` batches in [0, 1] (a scalar with gradients; float32)."""
    a, b = a.float(), b.float()
    c = a.shape[1]
    k = SSIM_WINDOW
    g = gaussian_window(k, SSIM_SIGMA).to(a.device, torch.float32)
    gy = g.view(1, 1, k, 1).expand(c, 1, k, 1)
    gx = g.view(1, 1, 1, k).expand(c, 1, 1, k)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, gy, groups=c), gx, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return (num / den).mean()


def straight_through_8bit(x: torch.Tensor) -> torch.Tensor:
    """``x`` clamped to [0, 1] and rounded to 8-bit levels; gradient of the identity."""
    q = torch.round(x.detach().clamp(0, 1) * 255.0) / 255.0
    return x + (q - x).detach()
