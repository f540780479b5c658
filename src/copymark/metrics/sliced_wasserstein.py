"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, ICLR, "Progressive
growing of GANs"), as their reference ``metrics/sliced_wasserstein.py``. No pretrained net.

Per image set:

1. Build a Laplacian pyramid of every image (5-tap binomial filter ``[1 4 6 4 1]/16`` in each
   direction with mirror borders, i.e. ``cv2.pyrDown``/``pyrUp``); the levels run from the full
   resolution down while the shorter side is >= 16 pixels (``num_levels`` overrides).
   The finest levels hold band-pass details, the last one the low-pass residual.
2. From each level of each image draw ``nhoods_per_image`` (128) random 7 x 7 neighbourhoods
   of all 3 channels: descriptors of 147 numbers. Only these are kept, so the images stream.
3. Normalise the descriptors of each level per channel to zero mean and unit std. As in the
   reference, each set is normalised with its own statistics (``normalize="per_set"``);
   ``normalize="joint"`` uses the statistics of both sets together instead.
4. Sliced Wasserstein distance between the two descriptor sets: ``dir_repeats`` (4) times draw
   ``dirs_per_repeat`` (128) random unit directions, project, sort the projections of each set
   and average the absolute differences; average over repeats.

The result is reported per level and as the average over levels, multiplied by 1e3 as in the
paper. The two sets must give the same number of descriptors (paired sets do); otherwise the
larger is randomly subsampled. Randomness is seeded (``seed``); the same inputs and seed give
the same numbers. Both sets draw their neighbourhood positions from generators seeded alike,
so paired images of equal size are sampled at the same places (common random numbers): SWD of
a set with itself is exactly 0, and SWD(x, y) = SWD(y, x). The sampling noise is large for
small sets (for 9 images of 64 x 64, two different seeds of the same set give ~50 x 1e-3), so
compare SWDs computed with the same seed and the same number of images.

Memory: descriptors are 147 float32 per neighbourhood; with the defaults 1,000 images keep
1000 x 128 x 147 x 4 B = 75 MB per level and set. ``max_descriptors`` (per level and set)
bounds this by keeping a uniform random sample of the stream (reservoir sampling in a fixed
buffer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from copymark.errors import DataError, ImageError

NHOOD_SIZE = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_RESOLUTION = 16

Normalize = Literal["per_set", "joint"]

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


# ---------------------------------------------------------------------------------------------
# Laplacian pyramid (cv2.pyrDown / pyrUp semantics, mirror borders)


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """5x5 binomial filter (outer product of [1 4 6 4 1]/16) with reflect (mirror) padding."""
    c = x.shape[1]
    k = (_BINOMIAL * gain**0.5).to(x.device, x.dtype)
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur and keep every second pixel (``cv2.pyrDown``)."""
    return _blur(x)[..., ::2, ::2]


def pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Insert zeros, blur with 4x gain (``cv2.pyrUp``), crop to ``size`` (for odd sizes)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x
    return _blur(up, gain=4.0)[..., : size[0], : size[1]]


def default_num_levels(height: int, width: int) -> int:
    """Levels from full resolution down while the shorter side stays >= 16 (the reference's rule)."""
    res, n = min(height, width), 0
    while res >= MIN_RESOLUTION:
        n += 1
        res //= 2
    return n


def laplacian_pyramid(x: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """Laplacian pyramid of a batch ``N x C x H x W``: ``num_levels`` tensors, finest first.

    Level ``i < num_levels - 1`` is ``g_i - pyr_up(g_{i+1})`` with ``g_{i+1} = pyr_down(g_i)``;
    the last level is the Gaussian residual. Summing back up reconstructs ``x`` exactly.
    """
    if num_levels < 1:
        raise ImageError(f"a pyramid needs at least one level, got {num_levels}")
    g = x.float()
    levels = []
    for _ in range(num_levels - 1):
        h, w = g.shape[-2:]
        if min(h, w) < 3:
            raise ImageError(f"image too small for {num_levels} pyramid levels")
        down = pyr_down(g)
        levels.append(g - pyr_up(down, (h, w)))
        g = down
    levels.append(g)
    return levels


def reconstruct_laplacian_pyramid(levels: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`laplacian_pyramid`."""
    x = levels[-1]
    for lap in reversed(levels[:-1]):
        x = pyr_up(x, tuple(lap.shape[-2:])) + lap
    return x


# ---------------------------------------------------------------------------------------------
# descriptors and the sliced Wasserstein distance


def sample_descriptors(
    level: torch.Tensor,
    nhoods_per_image: int = NHOODS_PER_IMAGE,
    nhood_size: int = NHOOD_SIZE,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random ``nhood_size`` x ``nhood_size`` neighbourhoods of a pyramid level.

    ``level``: ``N x C x H x W`` -> ``(N * nhoods_per_image) x C x k x k`` (centres uniform over
    the positions where the whole neighbourhood fits).
    """
    n, c, h, w = level.shape
    r = nhood_size // 2
    if h < nhood_size or w < nhood_size:
        raise ImageError(f"pyramid level {h}x{w} is smaller than the {nhood_size}x{nhood_size} neighbourhood")
    m = n * nhoods_per_image
    img = torch.arange(n).repeat_interleave(nhoods_per_image)
    cy = torch.randint(r, h - r, (m,), generator=generator)
    cx = torch.randint(r, w - r, (m,), generator=generator)
    off = torch.arange(-r, r + 1)
    ys = (cy.view(m, 1, 1) + off.view(1, -1, 1)).expand(m, nhood_size, nhood_size)
    xs = (cx.view(m, 1, 1) + off.view(1, 1, -1)).expand(m, nhood_size, nhood_size)
    lv = level.detach().cpu().float()
    # m x k x k x C  ->  m x C x k x k
    return lv.permute(0, 2, 3, 1)[img.view(m, 1, 1), ys, xs].permute(0, 3, 1, 2).contiguous()


def _channel_stats(desc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std (float64) over neighbourhoods and pixels."""
    stats = [torch.var_mean(desc[:, c].double(), unbiased=False) for c in range(desc.shape[1])]
    var = torch.stack([v for v, _ in stats])
    mean = torch.stack([m for _, m in stats])
    return mean, var.sqrt()


def normalize_descriptors(
    desc: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-channel zero mean / unit std (over neighbourhoods and pixels), flattened to ``M x D``.

    Statistics in float64; the result is float32 (one copy of ``desc``).
    """
    if mean is None or std is None:
        mean, std = _channel_stats(desc)
    out = desc.float().clone()
    for c in range(out.shape[1]):
        s = float(std[c]) if float(std[c]) > 0 else 1.0
        out[:, c].sub_(float(mean[c])).div_(s)
    return out.reshape(out.shape[0], -1)


def sliced_wasserstein(
    a: torch.Tensor,
    b: torch.Tensor,
    dir_repeats: int = DIR_REPEATS,
    dirs_per_repeat: int = DIRS_PER_REPEAT,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced Wasserstein-1 distance between two equally sized point sets ``M x D``."""
    if a.dim() != 2 or a.shape != b.shape:
        raise DataError(
            f"sliced Wasserstein needs two M x D sets of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    results = []
    for _ in range(dir_repeats):
        dirs = torch.randn(dirs_per_repeat, a.shape[1], generator=generator)
        dirs = dirs / dirs.norm(dim=1, keepdim=True)  # unit directions (rows)
        # direction x neighbourhood projections, sorted per direction (numpy's sort is much
        # faster than torch.sort on CPU)
        pa = np.sort((dirs @ a.T).numpy(), axis=1)
        pb = np.sort((dirs @ b.T).numpy(), axis=1)
        results.append(float(np.abs(pa - pb).mean(dtype=np.float64)))
    return sum(results) / len(results)


@dataclass
class SWDResult:
    """SWD x 1e3 per pyramid level (finest first) and their average."""

    levels: list[float]
    avg: float
    resolutions: list[tuple[int, int]]
    n_descriptors: int
    n_images: int


class DescriptorReservoir:
    """Descriptors of one pyramid level of one set: all of them, or a uniform sample of at most
    ``capacity`` (reservoir sampling, Vitter's algorithm R, vectorised per batch).

    With a ``capacity`` the descriptors go into one buffer of that size, allocated once at the
    first batch (``torch.empty``: pages become resident only as they are filled); once it is
    full, later descriptors replace random slots in place. Memory stays at ``capacity``
    descriptors and nothing is re-allocated (re-allocating chunks fragments the heap).
    """

    def __init__(self, capacity: int | None, generator: torch.Generator) -> None:
        if capacity is not None and capacity < 1:
            raise DataError(f"max_descriptors must be >= 1, got {capacity}")
        self.capacity = capacity
        self.generator = generator
        self.n_seen = 0
        self.chunks: list[torch.Tensor] = []
        self.buffer: torch.Tensor | None = None

    def add(self, d: torch.Tensor) -> None:
        if self.capacity is None:
            self.chunks.append(d)
            self.n_seen += d.shape[0]
            return
        if self.buffer is None:
            self.buffer = torch.empty((self.capacity, *d.shape[1:]), dtype=d.dtype)
        if self.n_seen < self.capacity:
            take = min(d.shape[0], self.capacity - self.n_seen)
            self.buffer[self.n_seen : self.n_seen + take] = d[:take]
            self.n_seen += take
            d = d[take:]
            if d.shape[0] == 0:
                return
        assert self.buffer is not None
        m = d.shape[0]
        t = self.n_seen + torch.arange(m, dtype=torch.float64)  # 0-based stream index of each new one
        j = torch.floor(torch.rand(m, generator=self.generator, dtype=torch.float64) * (t + 1)).long()
        self.n_seen += m
        hit = torch.nonzero(j < self.capacity).flatten()
        if hit.numel() == 0:
            return
        # several new descriptors may draw one slot: the last one wins, as in the sequential algorithm
        slots = j[hit].flip(0)
        uniq, first = np.unique(slots.numpy(), return_index=True)
        src = hit.flip(0)[torch.from_numpy(first)]
        self.buffer[torch.from_numpy(uniq)] = d[src]

    def get(self) -> torch.Tensor:
        if self.buffer is not None:
            return self.buffer[: len(self)]
        return torch.cat(self.chunks) if len(self.chunks) != 1 else self.chunks[0]

    def __len__(self) -> int:
        return self.n_seen if self.capacity is None else min(self.n_seen, self.capacity)


class SWD:
    """Streaming SWD between two image sets: ``update(pred, ref)`` per batch, ``compute()`` at the end.

    Batches are ``N x 3 x H x W`` tensors or lists of ``3 x H x W`` tensors (mixed sizes are
    processed image by image). The number of pyramid levels is fixed by the first image seen
    (``num_levels`` overrides); later images must be large enough for it.
    """

    def __init__(
        self,
        num_levels: int | None = None,
        nhood_size: int = NHOOD_SIZE,
        nhoods_per_image: int = NHOODS_PER_IMAGE,
        dir_repeats: int = DIR_REPEATS,
        dirs_per_repeat: int = DIRS_PER_REPEAT,
        normalize: Normalize = "per_set",
        max_descriptors: int | None = None,
        seed: int = 0,
    ) -> None:
        if normalize not in ("per_set", "joint"):
            raise DataError(f"SWD normalize must be 'per_set' or 'joint', got {normalize!r}")
        self.num_levels = num_levels
        self.nhood_size, self.nhoods_per_image = nhood_size, nhoods_per_image
        self.dir_repeats, self.dirs_per_repeat = dir_repeats, dirs_per_repeat
        self.normalize = normalize
        self.max_descriptors = max_descriptors
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        # one generator per set, seeded alike: paired same-size images get the same neighbourhood
        # positions and directions (common random numbers), so SWD(x, x) is exactly 0
        self.generators = {w: torch.Generator().manual_seed(self.seed) for w in ("pred", "ref")}
        self.store: dict[str, list[DescriptorReservoir]] = {"pred": [], "ref": []}
        self.counts = {"pred": 0, "ref": 0}
        self.resolutions: list[tuple[int, int]] = []

    def _levels_for(self, h: int, w: int) -> int:
        if self.num_levels is None:
            self.num_levels = default_num_levels(h, w)
            if self.num_levels < 1:
                raise ImageError(f"SWD needs images of at least {MIN_RESOLUTION}x{MIN_RESOLUTION} pixels, got {h}x{w}")
        needed = self.nhood_size * 2 ** (self.num_levels - 1)
        if min(h, w) < needed:
            raise ImageError(
                f"SWD: a {h}x{w} image is too small for {self.num_levels} pyramid levels (needs >= {needed} px)",
                hint="compare images of similar sizes, or set num_levels",
            )
        return self.num_levels

    def _add(self, which: str, images: torch.Tensor | list[torch.Tensor]) -> None:
        if isinstance(images, torch.Tensor):
            if images.dim() == 3:
                images = images.unsqueeze(0)
            batches = [images] if images.dim() == 4 else []
            if not batches:
                raise ImageError(f"SWD: expected N x 3 x H x W images, got {tuple(images.shape)}")
        else:
            batches = [im.unsqueeze(0) for im in images]
        for batch in batches:
            if batch.shape[1] != 3:
                raise ImageError(f"SWD: expected RGB images, got {batch.shape[1]} channels")
            h, w = batch.shape[-2:]
            levels = laplacian_pyramid(batch, self._levels_for(h, w))
            if not self.resolutions:
                self.resolutions = [tuple(lv.shape[-2:]) for lv in levels]  # type: ignore[misc]
            store = self.store[which]
            if not store:
                store.extend(DescriptorReservoir(self.max_descriptors, self.generators[which]) for _ in levels)
            for i, lv in enumerate(levels):
                store[i].add(sample_descriptors(lv, self.nhoods_per_image, self.nhood_size, self.generators[which]))
            self.counts[which] += batch.shape[0]

    def update(
        self, pred: torch.Tensor | list[torch.Tensor] | None, ref: torch.Tensor | list[torch.Tensor] | None
    ) -> None:
        if pred is not None and len(pred):
            self._add("pred", pred)
        if ref is not None and len(ref):
            self._add("ref", ref)

    def compute(self) -> SWDResult:
        if min(self.counts.values()) < 1:
            raise DataError(f"SWD needs images in both sets, got {self.counts['pred']} and {self.counts['ref']}")
        gen = torch.Generator().manual_seed(self.seed + 1)
        dists = []
        n_desc = 0
        for i in range(len(self.store["ref"])):
            a, b = self.store["pred"][i].get(), self.store["ref"][i].get()
            m = min(a.shape[0], b.shape[0])
            if a.shape[0] > m:
                a = a[torch.randperm(a.shape[0], generator=gen)[:m]]
            if b.shape[0] > m:
                b = b[torch.randperm(b.shape[0], generator=gen)[:m]]
            if self.normalize == "per_set":
                na, nb = normalize_descriptors(a), normalize_descriptors(b)
            else:
                mean, std = _channel_stats(torch.cat([a, b]))
                na, nb = normalize_descriptors(a, mean, std), normalize_descriptors(b, mean, std)
            dists.append(1e3 * sliced_wasserstein(na, nb, self.dir_repeats, self.dirs_per_repeat, gen))
            n_desc = m
        return SWDResult(dists, sum(dists) / len(dists), list(self.resolutions), n_desc, min(self.counts.values()))


def swd(
    x: torch.Tensor | list[torch.Tensor],
    y: torch.Tensor | list[torch.Tensor],
    num_levels: int | None = None,
    nhoods_per_image: int = NHOODS_PER_IMAGE,
    dir_repeats: int = DIR_REPEATS,
    dirs_per_repeat: int = DIRS_PER_REPEAT,
    normalize: Normalize = "per_set",
    seed: int = 0,
) -> SWDResult:
    """SWD x 1e3 (per level and average) between two image sets given at once."""
    acc = SWD(num_levels, NHOOD_SIZE, nhoods_per_image, dir_repeats, dirs_per_repeat, normalize, None, seed)
    acc.update(x, y)
    return acc.compute()
