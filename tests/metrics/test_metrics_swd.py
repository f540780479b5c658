"""SWD on Laplacian-pyramid patches: pyramid vs OpenCV, 1-D case vs scipy, behaviour on photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance
from skimage import data as skdata
from skimage.filters import gaussian

from copymark.errors import ImageError
from copymark.metrics import SWD, laplacian_pyramid, swd
from copymark.metrics.sliced_wasserstein import (
    default_num_levels,
    pyr_down,
    pyr_up,
    reconstruct_laplacian_pyramid,
    sample_descriptors,
    sliced_wasserstein,
)


def photos(size: int = 64) -> torch.Tensor:
    """Crops of scikit-image's sample photographs, N x 3 x size x size in [0, 1]."""
    out = []
    for fn in (skdata.astronaut, skdata.coffee, skdata.chelsea):
        a = fn()
        for top, left in ((0, 0), (100, 120), (200, 60)):
            out.append(torch.from_numpy(a[top : top + size, left : left + size]).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def test_pyramid_matches_opencv_and_reconstructs():
    x = photos(32)[:2]
    d = pyr_down(x)
    for i in range(2):
        img = x[i].permute(1, 2, 0).numpy()
        ref = cv2.pyrDown(img)
        np.testing.assert_allclose(d[i].permute(1, 2, 0).numpy(), ref, atol=1e-5)
        up_ref = cv2.pyrUp(ref)
        np.testing.assert_allclose(pyr_up(d[i : i + 1], (32, 32))[0].permute(1, 2, 0).numpy(), up_ref, atol=1e-5)
    levels = laplacian_pyramid(x, 3)
    assert [tuple(lv.shape[-2:]) for lv in levels] == [(32, 32), (16, 16), (8, 8)]
    torch.testing.assert_close(reconstruct_laplacian_pyramid(levels), x, atol=1e-5, rtol=0)
    odd = torch.rand(1, 3, 37, 29)
    torch.testing.assert_close(reconstruct_laplacian_pyramid(laplacian_pyramid(odd, 3)), odd, atol=1e-5, rtol=0)
    assert default_num_levels(256, 256) == 5 and default_num_levels(64, 80) == 3 and default_num_levels(15, 99) == 0


def test_sliced_wasserstein_in_one_dimension_is_w1():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 1, generator=g)
    b = 1.5 * torch.randn(500, 1, generator=g) + 0.3
    got = sliced_wasserstein(a, b, dir_repeats=2, dirs_per_repeat=3, generator=g)
    assert got == pytest.approx(wasserstein_distance(a[:, 0].numpy(), b[:, 0].numpy()), rel=1e-5)


def test_descriptors_are_neighbourhoods():
    lv = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).view(2, 3, 10, 12)
    d = sample_descriptors(lv, nhoods_per_image=5, nhood_size=7, generator=torch.Generator().manual_seed(1))
    assert d.shape == (10, 3, 7, 7)
    for k in range(10):
        img = k // 5
        flat = d[k, 0, 0, 0].item() - img * 360  # top-left value encodes its position
        y, x = divmod(int(flat), 12)
        torch.testing.assert_close(d[k], lv[img, :, y : y + 7, x : x + 7])


def test_swd_zero_for_identical_symmetric_and_grows_with_noise_and_blur():
    x = photos(64)
    same = swd(x, x)
    assert len(same.levels) == 3 and same.avg == 0.0
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    by_noise = [swd(x, (x + s * noise).clamp(0, 1)).avg for s in (0.01, 0.03, 0.1)]
    assert 0 < by_noise[0] < by_noise[1] < by_noise[2]

    def blur(s):
        return (
            torch.from_numpy(gaussian(x.permute(0, 2, 3, 1).numpy(), sigma=s, channel_axis=3))
            .permute(0, 3, 1, 2)
            .float()
        )

    by_blur = [swd(x, blur(s)).avg for s in (0.6, 1.2, 2.4)]
    assert 0 < by_blur[0] < by_blur[1] < by_blur[2]
    y = (x + 0.05 * noise).clamp(0, 1)
    assert swd(x, y).avg == pytest.approx(swd(y, x).avg, rel=1e-6)
    # another seed samples other patches: with only 9 x 128 descriptors that noise floor is
    # sizeable, but still well below a clear difference
    a = SWD(seed=0)
    a.update(x, None)
    b = SWD(seed=5)
    b.update(None, x)
    a.store["ref"], a.counts["ref"] = b.store["ref"], b.counts["ref"]
    assert 0 < a.compute().avg < 0.5 * by_noise[2]


def test_streamed_batches_close_to_one_shot_and_descriptor_cap():
    x = photos(64)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    whole = swd(x, y).avg
    acc = SWD()
    for i in range(0, 9, 2):
        acc.update(x[i : i + 2], y[i : i + 2])
    streamed = acc.compute()
    assert streamed.n_images == 9 and streamed.n_descriptors == 9 * 128
    assert streamed.avg == pytest.approx(whole, rel=0.15)
    capped = SWD(max_descriptors=300)
    for i in range(9):
        capped.update(x[i], list(y[i : i + 1]))
    c = capped.compute()
    assert c.n_descriptors == 300
    assert c.avg == pytest.approx(whole, rel=0.3)


def test_swd_errors_and_joint_normalisation():
    x = photos(64)[:2]
    with pytest.raises(ImageError, match="at least 16x16"):
        swd(x[:, :, :12, :12], x[:, :, :12, :12])
    acc = SWD()
    acc.update(x, x)
    with pytest.raises(ImageError, match="too small"):
        acc.update(x[:, :, :20, :20], x[:, :, :20, :20])
    # joint normalisation sees a global brightness change that per-set normalisation removes
    brighter = x * 0.5 + 0.25
    assert swd(x, brighter, normalize="joint").avg > 5 * swd(x, brighter, normalize="per_set").avg


def test_descriptor_reservoir_is_a_uniform_sample():
    from copymark.metrics.sliced_wasserstein import DescriptorReservoir

    n, k, trials = 50, 10, 1000
    counts = np.zeros(n)
    g = torch.Generator().manual_seed(0)
    items = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    for _ in range(trials):
        r = DescriptorReservoir(k, g)
        for start in range(0, n, 7):  # batches of 7, the cap falls inside one
            r.add(items[start : start + 7])
        got = r.get().flatten().long().numpy()
        assert len(r) == k and len(set(got.tolist())) == k  # k distinct items
        counts[got] += 1
    freq = counts / trials
    assert np.all(np.abs(freq - k / n) < 0.06), freq
    everything = DescriptorReservoir(None, g)
    everything.add(items[:20])
    everything.add(items[20:])
    assert torch.equal(everything.get(), items)
