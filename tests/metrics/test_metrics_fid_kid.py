"""FID (closed form for Gaussians, direct numpy) and KID (direct O(n^2) loops), streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from copymark.errors import DataError
from copymark.metrics import (
    FeatureDistances,
    FeatureMoments,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    mmd2_unbiased,
)


def gaussian_fid_closed_form(mu1, s1, mu2, s2):
    """FID of N(mu1, diag(s1)) and N(mu2, diag(s2)): ||mu1-mu2||^2 + sum(s1 + s2 - 2 sqrt(s1 s2))."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2)))


def fid_direct(f1, f2):
    """FID straight from the definition, with the trace of the square root taken through
    symmetric eigendecompositions: Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2)."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r1 @ s2 @ r1
    tr = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr)


def test_frechet_distance_exact_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.2, 3, 6), rng.uniform(0.2, 3, 6)
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(gaussian_fid_closed_form(mu1, s1, mu2, s2), rel=1e-9, abs=1e-9)
    # identical distributions -> 0
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0.0, abs=1e-9)


def test_streamed_fid_of_gaussian_samples_approaches_closed_form():
    rng = np.random.default_rng(1)
    d = 4
    mu1, mu2 = np.zeros(d), np.array([0.5, -0.3, 0.2, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5, 1.5]), np.array([0.7, 2.5, 0.5, 3.0])
    m1, m2 = FeatureMoments(), FeatureMoments()
    for _ in range(20):  # 200k samples per set, 10k at a time
        m1.update(rng.normal(mu1, np.sqrt(s1), size=(10_000, d)))
        m2.update(torch.from_numpy(rng.normal(mu2, np.sqrt(s2), size=(10_000, d))))
    got = frechet_distance(m1.mean, m1.covariance(), m2.mean, m2.covariance())
    expected = gaussian_fid_closed_form(mu1, s1, mu2, s2)
    assert got == pytest.approx(expected, rel=0.03), (got, expected)


def test_moments_stream_equal_numpy_and_fid_matches_direct():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(301, 10)) @ rng.normal(size=(10, 10)) + 3.0  # correlated, offset mean
    b = rng.gamma(2.0, size=(257, 10))
    m = FeatureMoments()
    for chunk in np.array_split(a, [1, 5, 64, 200]):  # uneven batches, one of size 1
        m.update(chunk)
    assert m.n == 301
    np.testing.assert_allclose(m.mean, a.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.covariance(), np.cov(a, rowvar=False), rtol=1e-10, atol=1e-10)
    assert fid_from_features(a, b) == pytest.approx(fid_direct(a, b), rel=1e-6)


def test_fid_needs_two_samples():
    with pytest.raises(DataError, match="at least 2"):
        fid_from_features(np.ones((1, 3)), np.ones((5, 3)))


def mmd2_loops(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b/d + 1)^3, by explicit loops."""
    m, d = x.shape
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3  # noqa: E731
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return sxx / (m * (m - 1)) + syy / (m * (m - 1)) - 2 * sxy / (m * m)


def test_kid_matches_direct_loops():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 5))
    y = rng.normal(0.4, 1.2, size=(35, 5))
    assert mmd2_unbiased(x[:30], y[:30]) == pytest.approx(mmd2_loops(x[:30], y[:30]), rel=1e-10)
    # subsets: redo the same draws and average the loop results
    res = kid_from_features(x, y, subset_size=12, n_subsets=5, seed=7)
    r = np.random.default_rng(7)
    vals = []
    for _ in range(5):
        ia = r.choice(40, 12, replace=False)
        ib = r.choice(35, 12, replace=False)
        vals.append(mmd2_loops(x[ia], y[ib]))
    assert res.subset_size == 12 and res.n_subsets == 5
    assert res.mean == pytest.approx(np.mean(vals), rel=1e-9)
    assert res.std == pytest.approx(np.std(vals), rel=1e-9)


def test_kid_subset_capped_and_sensitive():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 8))
    same = kid_from_features(x[:100], x[100:], subset_size=1000, n_subsets=10)
    assert same.subset_size == 100
    shifted = kid_from_features(x[:100], x[100:] + 0.5, subset_size=1000, n_subsets=10)
    assert abs(same.mean) < 0.02 < shifted.mean


class TinyFeatures(torch.nn.Module):
    """A small fixed feature net: channel means and stds of a 3x3 conv (16-d), any input size."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3).double()  # float64: features independent of the batch size

    @torch.no_grad()
    def forward(self, x):
        h = torch.relu(self.conv(x.double()))
        return torch.cat([h.mean((2, 3)), h.std((2, 3))], 1)


def test_feature_distances_stream_mixed_sizes():
    net = TinyFeatures()
    g = torch.Generator().manual_seed(0)
    pred = [torch.rand(3, 24 + 4 * (i % 3), 32, generator=g) for i in range(9)]
    ref = [(p * 0.6 + 0.2) for p in pred]
    acc = FeatureDistances(net, fid=True, kid=True, kid_subset_size=5, kid_subsets=4, seed=1)
    acc.update(pred[:4], ref[:4])
    acc.update(pred[4:], ref[4:])
    out = acc.compute()
    fp = torch.cat([net(p[None]) for p in pred]).double().numpy()
    fr = torch.cat([net(r[None]) for r in ref]).double().numpy()
    assert out.n_pred == out.n_ref == 9 and out.feature_dim == 16
    # float64 features (batch-independent): only the streaming arithmetic differs, in float64.
    # 9 images in 16 dimensions make the covariances singular, and the square root of a singular
    # matrix is accurate only to about sqrt(eps64) = 1.5e-8 relative: hence 1e-6 for FID
    assert out.fid == pytest.approx(fid_from_features(fp, fr), rel=1e-6)
    assert out.kid.mean == pytest.approx(kid_from_features(fp, fr, 5, 4, seed=1).mean, rel=1e-9)
