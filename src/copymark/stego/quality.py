"""Quality report of a steganography codec, as in the security study (Fig. 7, Fig. 8a).

For paired cover and secret batches the report gives

* ``stego_psnr`` / ``stego_ssim``: cover vs stego (invisibility of the embedding),
* ``secret_psnr`` / ``secret_ssim``: secret vs revealed secret (the "watermark PSNR" of the
  study, which needs > 26 dB for a usable watermark),

each as mean, std, n, n_inf and the bootstrap 95% CI of the mean (the one convention of
:mod:`copymark.metrics.summary`) and the per-image values, plus *visibility images*: one row per example
``cover | stego | |stego - cover| x 5 | secret | revealed`` (the study's "difference x 5").

By default the stego image is rounded to 8 bits before revealing (``quantize_stego``): a
trigger image is stored and sent as an 8-bit PNG, so that is what the owner reveals from.
PSNR/SSIM come from :mod:`copymark.metrics.fidelity` on RGB (no crop), on 8-bit values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from copymark.images import quantize, save_image
from copymark.metrics.fidelity import psnr, ssim
from copymark.metrics.summary import json_float, summarize
from copymark.stego.codecs import LSBCodec, NeuralCodec, check_pair

VISIBILITY_GAIN = 5.0
VISIBILITY_COLUMNS = ("cover", "stego", "|stego-cover|x5", "secret", "revealed")


def _summary(values: torch.Tensor) -> dict[str, Any]:
    """The summary of per-image values (mean, std, n, n_inf, 95% CI) and the values themselves
    (PSNR of identical images is inf, written "inf")."""
    v = values.double().cpu()
    return {**summarize(v).to_dict(), "values": [json_float(float(x)) for x in v]}


def run_codec(
    codec: LSBCodec | NeuralCodec,
    covers: torch.Tensor,
    secrets: torch.Tensor,
    batch_size: int = 32,
    quantize_stego: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide each secret in its cover and reveal it again, in batches -> ``(stegos, revealed)``."""
    check_pair(covers, secrets)
    stegos, revealed = [], []
    for i in range(0, len(covers), batch_size):
        s = codec.hide(covers[i : i + batch_size], secrets[i : i + batch_size])
        if quantize_stego:
            s = quantize(s)
        stegos.append(s)
        revealed.append(codec.reveal(s))
    return torch.cat(stegos), torch.cat(revealed)


def quality_metrics(
    covers: torch.Tensor, stegos: torch.Tensor, secrets: torch.Tensor, revealed: torch.Tensor
) -> dict[str, Any]:
    """PSNR/SSIM of cover vs stego and secret vs revealed (RGB, 8-bit values)."""
    return {
        "stego_psnr": _summary(psnr(stegos, covers)),
        "stego_ssim": _summary(ssim(stegos, covers)),
        "secret_psnr": _summary(psnr(revealed, secrets)),
        "secret_ssim": _summary(ssim(revealed, secrets)),
    }


def visibility_image(
    covers: torch.Tensor,
    stegos: torch.Tensor,
    secrets: torch.Tensor,
    revealed: torch.Tensor,
    gain: float = VISIBILITY_GAIN,
) -> torch.Tensor:
    """``3 x (N*H) x (5*W)`` image: per row cover | stego | |stego-cover| x gain | secret | revealed."""
    diff = ((stegos - covers).abs() * gain).clamp(0, 1)
    rows = torch.cat([covers, stegos, diff, secrets, revealed], dim=3)  # N x 3 x H x 5W
    return torch.cat(list(rows), dim=1).clamp(0, 1)


def quality_report(
    codec: LSBCodec | NeuralCodec,
    covers: torch.Tensor,
    secrets: torch.Tensor,
    out_dir: str | Path | None = None,
    n_visibility: int = 8,
    batch_size: int = 32,
    quantize_stego: bool = True,
) -> dict[str, Any]:
    """Metrics of ``codec`` on paired ``covers``/``secrets``; with ``out_dir``, also write the visibility image.

    Returns a JSON-ready dict; ``visibility`` names the PNG written (``visibility.png``) and its
    column order.
    """
    stegos, revealed = run_codec(codec, covers, secrets, batch_size=batch_size, quantize_stego=quantize_stego)
    report: dict[str, Any] = {
        "codec": codec.kind,
        "n_images": int(len(covers)),
        "size": [int(covers.shape[-2]), int(covers.shape[-1])],
        "quantize_stego": quantize_stego,
        **quality_metrics(covers, stegos, secrets, revealed),
    }
    if out_dir is not None and n_visibility > 0:
        k = min(n_visibility, len(covers))
        path = save_image(
            visibility_image(covers[:k].cpu(), stegos[:k].cpu(), secrets[:k].cpu(), revealed[:k].cpu()),
            Path(out_dir) / "visibility.png",
        )
        report["visibility"] = {"file": path.name, "columns": list(VISIBILITY_COLUMNS), "rows": k}
    return report
