"""Quality report: PSNR/SSIM checked against scikit-image, visibility image layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from stego_helpers import COVER_SAMPLES, SECRET_SAMPLES, tiles

from copymark.images import load_image, to_uint8
from copymark.stego.codecs import LSBCodec, LSBCodecConfig
from copymark.stego.quality import VISIBILITY_COLUMNS, quality_report, run_codec, visibility_image


@pytest.fixture(scope="module")
def pairs():
    c = torch.stack(tiles(COVER_SAMPLES, 48, 96)[:6])
    s = torch.stack(tiles(SECRET_SAMPLES, 48, 96)[:6])
    return c, s


def _sk(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    x = to_uint8(a).permute(1, 2, 0).numpy()
    y = to_uint8(b).permute(1, 2, 0).numpy()
    p = peak_signal_noise_ratio(y, x, data_range=255)
    s = structural_similarity(
        y, x, data_range=255, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    return p, s


@pytest.mark.parametrize("bits", [2, 4])
def test_metrics_match_scikit_image(pairs, tmp_path, bits):
    covers, secrets = pairs
    codec = LSBCodec(LSBCodecConfig(bits=bits))
    rep = quality_report(codec, covers, secrets, out_dir=tmp_path, n_visibility=3)
    stegos, revealed = run_codec(codec, covers, secrets)
    for i in range(len(covers)):
        p, s = _sk(stegos[i], covers[i])
        assert rep["stego_psnr"]["values"][i] == pytest.approx(p, abs=1e-4)
        assert rep["stego_ssim"]["values"][i] == pytest.approx(s, abs=1e-4)
        p, s = _sk(revealed[i], secrets[i])
        assert rep["secret_psnr"]["values"][i] == pytest.approx(p, abs=1e-4)
        assert rep["secret_ssim"]["values"][i] == pytest.approx(s, abs=1e-4)
    v = rep["stego_psnr"]["values"]
    assert rep["stego_psnr"]["mean"] == pytest.approx(np.mean(v)) and rep["stego_psnr"]["std"] == pytest.approx(
        np.std(v, ddof=1)
    )
    assert rep["n_images"] == 6 and rep["visibility"]["rows"] == 3
    json.dumps(rep)  # JSON-ready


def test_more_bits_trade_invisibility_for_secret_quality(pairs):
    covers, secrets = pairs
    r2 = quality_report(LSBCodec(LSBCodecConfig(bits=2)), covers, secrets)
    r5 = quality_report(LSBCodec(LSBCodecConfig(bits=5)), covers, secrets)
    assert r2["stego_psnr"]["mean"] > r5["stego_psnr"]["mean"]
    assert r2["secret_psnr"]["mean"] < r5["secret_psnr"]["mean"]


def test_visibility_image_layout(pairs, tmp_path):
    covers, secrets = pairs
    codec = LSBCodec()
    rep = quality_report(codec, covers, secrets, out_dir=tmp_path, n_visibility=4)
    assert rep["visibility"]["columns"] == list(VISIBILITY_COLUMNS)
    img = load_image(tmp_path / "visibility.png")
    n, _, h, w = covers.shape
    assert img.shape == (3, 4 * h, 5 * w)
    stegos, revealed = run_codec(codec, covers[:4], secrets[:4])
    expected = visibility_image(covers[:4], stegos, secrets[:4], revealed)
    assert torch.equal(to_uint8(img), to_uint8(expected))
    # row 1, column 3 is |stego - cover| x 5
    diff = img[:, h : 2 * h, 2 * w : 3 * w]
    assert torch.allclose(diff, ((stegos[1] - covers[1]).abs() * 5).clamp(0, 1), atol=1 / 255 + 1e-6)
    assert torch.allclose(img[:, :h, 3 * w : 4 * w], to_uint8(secrets[0]).float() / 255, atol=1e-6)
