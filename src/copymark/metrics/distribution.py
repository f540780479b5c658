"""Distribution distances over deep features: FID and KID.

Both compare two sets of images through a *feature net*: any callable that maps a batch
``N x 3 x H x W`` (float RGB in [0, 1], the copymark convention) to features ``N x D``. The
standard one is :func:`copymark.metrics.inception.inception_v3_features` (2048-d pool features
of the FID Inception-v3); tests inject tiny ones.

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to the two feature
sets: ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``. It streams: a
:class:`FeatureMoments` keeps only the count, mean and the sum of centred outer products
(float64, merged batch by batch with Chan et al.'s pairwise update, which is the running sum /
sum-of-outer-products method without its cancellation error), never the images or the
features. The covariance is the unbiased one (``np.cov``), as pytorch-fid. The matrix square
root is ``scipy.linalg.sqrtm``; as in pytorch-fid, a singular product gets ``eps * I`` added to
both covariances, and a complex result with a negligible imaginary diagonal is replaced by its
real part (a large imaginary part is an error).

KID (Binkowski et al. 2018) is the unbiased estimate of the squared MMD with the polynomial
kernel ``k(x, y) = (x . y / d + 1)^3``, averaged over ``n_subsets`` random subsets of
``subset_size`` features from each set (mean and population std over subsets, as torchmetrics
reports them). KID needs the features themselves (``N x D``, small); the images still stream.

FID is biased for small sets: report KID (with its std) and the number of images beside it.

Precision: features are kept in float64 exactly as the feature net gave them (never rounded to
float32), and all moments and kernels are computed in float64. The feature net itself runs in
float32 (Inception-v3), whose conv kernels give last-bit differences between batch sizes and
CPUs; compare FID/KID of one set computed with different batch sizes with a tolerance of that
order (about 1e-6 relative), or use a float64 feature net to test the streaming arithmetic.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from copymark.errors import DataError, ImageError

FeatureNet = Callable[[torch.Tensor], torch.Tensor]


def _as_features(f: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    a = f.detach().cpu().double().numpy() if isinstance(f, torch.Tensor) else np.asarray(f, dtype=np.float64)
    if a.ndim != 2:
        raise ImageError(f"{what}: expected features of shape N x D, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ImageError(f"{what}: features contain NaN or inf")
    return a


# ---------------------------------------------------------------------------------------------
# FID


class FeatureMoments:
    """Streaming mean and covariance of feature vectors (float64; memory O(D^2), not O(N))."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None  # sum of outer products of deviations from the mean

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        x = _as_features(features, "FeatureMoments.update")
        nb = x.shape[0]
        if nb == 0:
            return
        mean_b = x.mean(axis=0)
        xc = x - mean_b
        m2_b = xc.T @ xc
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mean_b, m2_b
            return
        assert self.mean is not None and self.m2 is not None
        if x.shape[1] != self.mean.shape[0]:
            raise ImageError(f"feature size changed from {self.mean.shape[0]} to {x.shape[1]}")
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (self.n * nb / n)
        self.n = n

    def covariance(self) -> np.ndarray:
        """Unbiased covariance (divides by n - 1, as ``np.cov``)."""
        if self.n < 2 or self.m2 is None:
            raise DataError(f"a covariance needs at least 2 feature vectors, got {self.n}")
        return self.m2 / (self.n - 1)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID formula)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ImageError(f"FID: feature sizes differ ({mu1.shape} vs {mu2.shape})")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # a singular product (fewer images than feature dimensions) makes scipy warn; the
        # result is still usable, and a non-finite one is handled below as pytorch-fid does
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.all(np.isfinite(covmean)):
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = float(np.max(np.abs(covmean.imag)))
            raise DataError(
                f"FID: the matrix square root has a large imaginary part ({m:.3g})",
                hint="too few images for the feature size? use more images (FID needs N well above D)",
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(f1: torch.Tensor | np.ndarray, f2: torch.Tensor | np.ndarray) -> float:
    """FID between two feature sets (``N1 x D`` and ``N2 x D``)."""
    m1, m2 = FeatureMoments(), FeatureMoments()
    m1.update(f1)
    m2.update(f2)
    return frechet_distance(m1.mean, m1.covariance(), m2.mean, m2.covariance())  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# KID


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """``(x . y / d + coef0) ^ degree`` for all pairs of rows (the KID kernel)."""
    d = x.shape[1]
    return (x @ y.T / d + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 with the polynomial kernel between two equally sized feature sets."""
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise DataError(f"MMD needs two sets of the same size >= 2, got {x.shape[0]} and {y.shape[0]}")
    kxx = polynomial_kernel(x, x, degree, coef0)
    kyy = polynomial_kernel(y, y, degree, coef0)
    kxy = polynomial_kernel(x, y, degree, coef0)
    sxx = kxx.sum() - np.trace(kxx)
    syy = kyy.sum() - np.trace(kyy)
    return float((sxx + syy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


@dataclass
class KIDResult:
    mean: float
    std: float
    subset_size: int
    n_subsets: int
    values: list[float]


def kid_from_features(
    f1: torch.Tensor | np.ndarray,
    f2: torch.Tensor | np.ndarray,
    subset_size: int = 1000,
    n_subsets: int = 100,
    seed: int = 0,
) -> KIDResult:
    """KID: mean and population std of unbiased polynomial MMD^2 over random subsets.

    Each subset draws ``subset_size`` rows without replacement from each set
    (``subset_size`` is capped at the smaller set size).
    """
    a = _as_features(f1, "KID features (1)")
    b = _as_features(f2, "KID features (2)")
    if a.shape[1] != b.shape[1]:
        raise ImageError(f"KID: feature sizes differ ({a.shape[1]} vs {b.shape[1]})")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise DataError(f"KID needs at least 2 images in each set, got {a.shape[0]} and {b.shape[0]}")
    if n_subsets < 1:
        raise DataError(f"KID: n_subsets must be >= 1, got {n_subsets}")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_subsets):
        ia = rng.choice(a.shape[0], m, replace=False)
        ib = rng.choice(b.shape[0], m, replace=False)
        vals.append(mmd2_unbiased(a[ia], b[ib]))
    v = np.asarray(vals)
    return KIDResult(float(v.mean()), float(v.std()), m, n_subsets, [float(x) for x in v])


# ---------------------------------------------------------------------------------------------
# accumulator: run the feature net once per batch, feed FID moments and KID features


@dataclass
class FeatureSummary:
    fid: float | None
    kid: KIDResult | None
    n_pred: int
    n_ref: int
    feature_dim: int


class FeatureDistances:
    """Streams two image sets through ``feature_net`` and scores FID and/or KID at the end.

    ``update(pred, ref)`` takes batches of the two sets (they need not be paired or equally
    many); images may be ``N x 3 x H x W`` tensors or lists of ``3 x H x W`` tensors of mixed
    sizes (same-sized images are batched together). Only the moments (FID) and the ``N x D``
    features (KID) are kept.
    """

    def __init__(
        self,
        feature_net: FeatureNet,
        fid: bool = True,
        kid: bool = True,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.feature_net = feature_net
        self.want_fid, self.want_kid = fid, kid
        self.kid_subset_size, self.kid_subsets, self.seed = kid_subset_size, kid_subsets, seed
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        self.moments = {"pred": FeatureMoments(), "ref": FeatureMoments()}
        self.features: dict[str, list[np.ndarray]] = {"pred": [], "ref": []}
        self.counts = {"pred": 0, "ref": 0}
        self.dim = 0

    @torch.no_grad()
    def features_of(self, images: torch.Tensor | list[torch.Tensor]) -> np.ndarray:
        """Feature net over a batch (or a list of mixed-size images) -> ``N x D`` float64."""
        groups = _group_by_size(images)
        out: list[tuple[list[int], np.ndarray]] = []
        for idx, batch in groups:
            f = self.feature_net(batch.to(self.device, torch.float32))
            if not isinstance(f, torch.Tensor) or f.dim() != 2 or f.shape[0] != batch.shape[0]:
                shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise ImageError(f"feature net must return N x D features, got {shape} for {batch.shape[0]} images")
            out.append((idx, f.detach().double().cpu().numpy()))
        n = sum(len(i) for i, _ in out)
        d = out[0][1].shape[1]
        feats = np.empty((n, d), dtype=np.float64)
        for idx, f in out:
            feats[idx] = f
        return feats

    def _add(self, which: str, images: torch.Tensor | list[torch.Tensor]) -> None:
        if len(images) == 0:
            return
        f = self.features_of(images)
        if self.dim and f.shape[1] != self.dim:
            raise ImageError(f"feature size changed from {self.dim} to {f.shape[1]}")
        self.dim = f.shape[1]
        self.counts[which] += f.shape[0]
        if self.want_fid:
            self.moments[which].update(f)
        if self.want_kid:
            self.features[which].append(
                f
            )  # float64, as the net gave it: never rounded (KID converts to float64 anyway)

    def update(
        self, pred: torch.Tensor | list[torch.Tensor] | None, ref: torch.Tensor | list[torch.Tensor] | None
    ) -> None:
        if pred is not None:
            self._add("pred", pred)
        if ref is not None:
            self._add("ref", ref)

    def compute(self) -> FeatureSummary:
        np_, nr = self.counts["pred"], self.counts["ref"]
        if min(np_, nr) < 2:
            raise DataError(f"FID/KID need at least 2 images per set, got {np_} predictions and {nr} references")
        fid = None
        if self.want_fid:
            mp, mr = self.moments["pred"], self.moments["ref"]
            fid = frechet_distance(mp.mean, mp.covariance(), mr.mean, mr.covariance())  # type: ignore[arg-type]
        kid = None
        if self.want_kid:
            kid = kid_from_features(
                np.concatenate(self.features["pred"]),
                np.concatenate(self.features["ref"]),
                self.kid_subset_size,
                self.kid_subsets,
                self.seed,
            )
        return FeatureSummary(fid, kid, np_, nr, self.dim)


def _group_by_size(images: torch.Tensor | list[torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
    """Split a batch or a list of ``3 x H x W`` images into same-size stacks (with positions)."""
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4:
            raise ImageError(f"expected images N x 3 x H x W, got {tuple(images.shape)}")
        return [(list(range(images.shape[0])), images)]
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        if im.dim() != 3:
            raise ImageError(f"expected 3 x H x W images in the list, got {tuple(im.shape)}")
        by_size.setdefault(tuple(im.shape), []).append(i)
    return [(idx, torch.stack([images[i] for i in idx])) for idx in by_size.values()]
