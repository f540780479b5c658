"""PSNR / SSIM against scikit-image, on Set5 (SR protocol) and on scikit-image's sample photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.filters import gaussian
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tests.conftest import require_shared

from copymark import images
from copymark.errors import ImageError
from copymark.metrics import PSNR, SSIM, psnr, ssim

SK_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def matlab_y(rgb_hwc_uint8: np.ndarray, rounded: bool = True) -> np.ndarray:
    """Y of MATLAB's rgb2ycbcr on a uint8 H x W x 3 image (0-255 scale), written out here."""
    x = rgb_hwc_uint8.astype(np.float64) / 255.0
    y = 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]
    return np.floor(y + 0.5) if rounded else y


def to_hwc_uint8(t: torch.Tensor) -> np.ndarray:
    return images.to_uint8(t).permute(1, 2, 0).numpy()


def crop(a: np.ndarray, n: int) -> np.ndarray:
    return a[n : a.shape[0] - n, n : a.shape[1] - n] if n else a


def sk_scores(pred_u8: np.ndarray, ref_u8: np.ndarray, y: bool, n: int) -> tuple[float, float]:
    if y:
        a, b = crop(matlab_y(pred_u8), n), crop(matlab_y(ref_u8), n)
        return (
            peak_signal_noise_ratio(b, a, data_range=255),
            structural_similarity(b, a, data_range=255, **SK_SSIM),
        )
    a, b = crop(pred_u8, n).astype(np.float64), crop(ref_u8, n).astype(np.float64)
    return (
        peak_signal_noise_ratio(b, a, data_range=255),
        structural_similarity(b, a, data_range=255, channel_axis=2, **SK_SSIM),
    )


@pytest.fixture(scope="module")
def set5_bicubic():
    root = require_shared("sr", "Set5")
    out = []
    for f in sorted((root / "HR").glob("*.png")):
        hr = images.load_image(f)
        lr = images.load_image(root / "LR_x4" / f.name)
        out.append((f.stem, images.quantize(images.upscale_bicubic(lr, 4)), hr))
    return out


@pytest.mark.parametrize("y,n", [(True, 4), (False, 4)])
def test_set5_bicubic_matches_skimage(set5_bicubic, y, n):
    for stem, sr, hr in set5_bicubic:
        p_ref, s_ref = sk_scores(to_hwc_uint8(sr), to_hwc_uint8(hr), y, n)
        p = float(psnr(sr, hr, y_channel=y, crop_border=n)[0])
        s = float(ssim(sr, hr, y_channel=y, crop_border=n)[0])
        assert abs(p - p_ref) < 1e-4, (stem, p, p_ref)
        assert abs(s - s_ref) < 1e-4, (stem, s, s_ref)


def test_set5_bicubic_y_psnr_is_the_published_figure(set5_bicubic):
    # SelfExSR README (quoted in ../shared/data/sr/MANIFEST.md): bicubic x4 Set5 = 28.42 dB / 0.8101
    ps = [float(psnr(sr, hr, y_channel=True, crop_border=4)[0]) for _, sr, hr in set5_bicubic]
    ss = [float(ssim(sr, hr, y_channel=True, crop_border=4)[0]) for _, sr, hr in set5_bicubic]
    # BasicSR-style Y (not rounded to integer levels) lands 0.01 dB higher, still within 0.05
    ps_float_y = [float(psnr(sr, hr, y_channel=True, crop_border=4, quantize=False)[0]) for _, sr, hr in set5_bicubic]
    assert abs(np.mean(ps_float_y) - 28.42) < 0.05
    assert abs(np.mean(ps) - 28.42) < 0.05
    assert abs(np.mean(ss) - 0.8101) < 0.002


def _sample_photos() -> list[torch.Tensor]:
    out = []
    for fn in (skdata.astronaut, skdata.coffee, skdata.chelsea):
        a = fn()[:160, :200]  # keep the test fast
        out.append(torch.from_numpy(a).permute(2, 0, 1).float() / 255.0)
    return out


def _degrade(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    blurred = gaussian(x.permute(1, 2, 0).numpy(), sigma=1.2, channel_axis=2)
    y = torch.from_numpy(blurred).permute(2, 0, 1).float()
    return (y + 0.03 * torch.randn(y.shape, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("y,n", [(False, 0), (True, 0), (True, 3), (False, 5)])
def test_sample_photos_8bit_match_skimage(y, n):
    for i, ref in enumerate(_sample_photos()):
        pred = _degrade(ref, i)
        p_ref, s_ref = sk_scores(to_hwc_uint8(pred), to_hwc_uint8(ref), y, n)
        assert abs(float(psnr(pred, ref, y_channel=y, crop_border=n)[0]) - p_ref) < 1e-4
        assert abs(float(ssim(pred, ref, y_channel=y, crop_border=n)[0]) - s_ref) < 1e-4


def test_raw_float_option_matches_skimage_on_floats():
    for i, ref in enumerate(_sample_photos()):
        pred = _degrade(ref, 10 + i)
        a = pred.permute(1, 2, 0).double().numpy()
        b = ref.permute(1, 2, 0).double().numpy()
        assert abs(float(psnr(pred, ref, quantize=False)[0]) - peak_signal_noise_ratio(b, a, data_range=1.0)) < 1e-4
        s_ref = structural_similarity(b, a, data_range=1.0, channel_axis=2, **SK_SSIM)
        assert abs(float(ssim(pred, ref, quantize=False)[0]) - s_ref) < 1e-4
        # Y without rounding
        ya = (16 + 65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255
        yb = (16 + 65.481 * b[..., 0] + 128.553 * b[..., 1] + 24.966 * b[..., 2]) / 255
        assert (
            abs(
                float(psnr(pred, ref, y_channel=True, quantize=False)[0])
                - peak_signal_noise_ratio(yb, ya, data_range=1.0)
            )
            < 1e-4
        )
        assert (
            abs(
                float(ssim(pred, ref, y_channel=True, quantize=False)[0])
                - structural_similarity(yb, ya, data_range=1.0, **SK_SSIM)
            )
            < 1e-4
        )


def test_y_channel_agrees_with_images_rgb_to_y():
    ref = _sample_photos()[0]
    pred = _degrade(ref, 3)
    ya, yb = images.rgb_to_y(pred), images.rgb_to_y(ref)
    # images.rgb_to_y is float32; on raw floats the two paths agree to float32 precision
    expected = 10 * np.log10(1.0 / float(((ya.double() - yb.double()) ** 2).mean()))
    assert abs(float(psnr(pred, ref, y_channel=True, quantize=False)[0]) - expected) < 1e-3


def test_data_range_255_gives_the_same_numbers():
    ref = _sample_photos()[1]
    pred = _degrade(ref, 4)
    for fn in (psnr, ssim):
        a = float(fn(pred, ref, y_channel=True, crop_border=2)[0])
        b = float(fn(pred * 255, ref * 255, data_range=255.0, y_channel=True, crop_border=2)[0])
        assert abs(a - b) < 1e-9


def test_batches_give_per_image_values_and_accumulators_stream():
    refs = [r[:, :96, :96] for r in _sample_photos()]
    preds = [_degrade(r, 20 + i) for i, r in enumerate(refs)]
    P, R = torch.stack(preds), torch.stack(refs)
    batch_p = psnr(P, R, y_channel=True, crop_border=4)
    batch_s = ssim(P, R, y_channel=True, crop_border=4)
    assert batch_p.shape == (3,) and batch_s.shape == (3,)
    for i in range(3):
        assert float(batch_p[i]) == pytest.approx(
            float(psnr(preds[i], refs[i], y_channel=True, crop_border=4)[0]), abs=1e-12
        )
        assert float(batch_s[i]) == pytest.approx(
            float(ssim(preds[i], refs[i], y_channel=True, crop_border=4)[0]), abs=1e-12
        )
    acc_p, acc_s = PSNR(y_channel=True, crop_border=4), SSIM(y_channel=True, crop_border=4)
    acc_p.update(P[:2], R[:2], ["a", "b"])
    acc_p.update(P[2:], R[2:], ["c"])
    acc_s.update(P[:1], R[:1])
    acc_s.update(P[1:], R[1:])
    sp, ss = acc_p.compute(), acc_s.compute()
    assert sp.n == 3 and ss.n == 3
    assert sp.values == pytest.approx(batch_p.tolist(), abs=1e-12)  # streamed = one batch, image by image
    assert ss.values == pytest.approx(batch_s.tolist(), abs=1e-12)
    assert sp.summary().mean == pytest.approx(float(batch_p.mean()), abs=1e-12)
    assert sp.summary().std == pytest.approx(float(np.std(batch_p.numpy(), ddof=1)), abs=1e-12)
    assert list(sp.per_image()) == ["a", "b", "c"]


def test_identical_images_and_bad_shapes():
    x = _sample_photos()[2][:, :40, :40]
    assert float(psnr(x, x)[0]) == float("inf")
    assert float(ssim(x, x)[0]) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ImageError, match="differ in shape"):
        psnr(x, x[:, :30])
    with pytest.raises(ImageError, match="at least 11x11"):
        ssim(x[:, :12, :12], x[:, :12, :12], crop_border=1)
    with pytest.raises(ImageError, match="crop_border"):
        psnr(x, x, crop_border=20)
