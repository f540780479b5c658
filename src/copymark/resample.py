"""Bicubic upscaling by an integer factor, MATLAB ``imresize`` style, as a few tensor ops.

The one bicubic upscale of copymark: :func:`copymark.images.upscale_bicubic` (the SR baseline,
the ``classical:bicubic_x4`` victim) and the SRResNet's ``image_skip`` both call it, so the
"bicubic" a table row names is the same computation as the one inside the net. It imports
nothing of copymark (nets may use it) and is TorchScript-friendly.

For an integer factor ``s`` MATLAB's bicubic weights are periodic: output pixel ``k*s + r``
(0-based, phase ``r``) sits at input coordinate ``k + o_r`` with ``o_r = (r + 1)/s + 0.5 - 0.5/s
- 1`` (``imresize``'s ``u = x/scale + 0.5 (1 - 1/scale)``, 1-based), and takes Keys' cubic
(``a = -0.5``) of its distances to the input pixels ``k - 2 .. k + 2``. Borders mirror the image
symmetrically (the edge pixel repeated), as MATLAB does. Each axis is then a 5-tap window per
phase, height first, then width (MATLAB resizes the smaller-scale dimension first; equal here).
The result is not clamped (bicubic overshoots at edges); callers clamp where they need [0, 1].
"""

from __future__ import annotations

import torch


def _cubic(x: float, a: float = -0.5) -> float:
    """Keys' cubic convolution kernel (a = -0.5 as MATLAB and Pillow)."""
    ax = abs(x)
    if ax <= 1:
        return (a + 2) * ax**3 - (a + 3) * ax**2 + 1
    if ax < 2:
        return a * ax**3 - 5 * a * ax**2 + 8 * a * ax - 4 * a
    return 0.0


def phase_weights(factor: int) -> torch.Tensor:
    """``factor x 5`` float32 weights: row ``r`` weighs input pixels ``k-2 .. k+2`` for output ``k*factor + r``."""
    if factor < 1:
        raise ValueError(f"upscaling factor must be >= 1, got {factor}")
    rows = []
    for r in range(factor):
        o = (r + 1) / factor + 0.5 - 0.5 / factor - 1.0
        w = [_cubic(o - d) for d in (-2, -1, 0, 1, 2)]
        s = sum(w)
        rows.append([v / s for v in w])
    return torch.tensor(rows, dtype=torch.float64).float()


def _symmetric_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices ``-pad .. n + pad - 1`` mirrored into ``[0, n)`` symmetrically (edge repeated)."""
    i = torch.arange(-pad, n + pad, device=device)
    period = 2 * n
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - 1 - i, i)


def _upscale_last(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    n = x.shape[-1]
    s = weights.shape[0]
    windows = x.index_select(-1, _symmetric_index(n, 2, x.device)).unfold(-1, 5, 1)  # ... x n x 5
    out = torch.matmul(windows, weights.t().to(x.dtype))  # ... x n x s
    shape = list(x.shape[:-1])
    shape.append(n * s)
    return out.reshape(shape)


def upscale_with(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Upscale ``... x H x W`` by ``weights.shape[0]`` with precomputed :func:`phase_weights`."""
    y = _upscale_last(x.transpose(-1, -2), weights).transpose(-1, -2)  # height first
    return _upscale_last(y, weights)


def upscale_bicubic(x: torch.Tensor, factor: int) -> torch.Tensor:
    """MATLAB-style bicubic upscaling of ``... x H x W`` (float) by an integer ``factor``; not clamped."""
    return upscale_with(x, phase_weights(factor).to(x.device))
