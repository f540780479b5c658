"""Score a folder of predictions against a folder of references, streaming in batches.

:func:`pair_folders` matches files by stem (``img_001.png`` <-> ``img_001.jpg``);
:func:`compare_folders` loads ``batch_size`` pairs at a time, feeds every requested metric's
accumulator and drops the images, so 1,000 pairs of 256 x 256 never sit in memory at once
(what is kept: one float per image for PSNR/SSIM, the feature moments and ``N x D`` features
for FID/KID, sampled patch descriptors for SWD). PSNR and SSIM are summarised with the one
convention of :mod:`copymark.metrics.summary` (mean, std, n, n_inf, bootstrap 95% CI).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from copymark.errors import DataError, ImageError
from copymark.images import list_images, load_image
from copymark.metrics.distribution import FeatureDistances, FeatureNet, KIDResult
from copymark.metrics.fidelity import PSNR, SSIM, PerImageValues
from copymark.metrics.sliced_wasserstein import SWD, SWDResult
from copymark.metrics.summary import CONVENTION, DEFAULT_N_BOOT, Summary, json_float


@dataclass(frozen=True)
class ImagePair:
    stem: str
    pred: Path
    ref: Path


def _images_by_stem(folder: Path, role: str) -> dict[str, Path]:
    if not folder.exists():
        raise DataError(f"{role} folder not found: {folder}", hint="check the path")
    if not folder.is_dir():
        raise DataError(f"{role} path is not a folder: {folder}", hint="pass a folder of images")
    files = list_images(folder)
    if not files:
        raise DataError(
            f"{role} folder {folder} holds no images",
            hint="expected .png/.jpg/.jpeg/.webp/.bmp/.tif/.tiff files directly in it",
        )
    by_stem: dict[str, Path] = {}
    for f in files:
        if f.stem in by_stem:
            raise DataError(
                f"{role} folder {folder} has two images with the stem {f.stem!r}: {by_stem[f.stem].name} and {f.name}",
                hint="images are paired by file name without extension; keep one of them",
            )
        by_stem[f.stem] = f
    return by_stem


def pair_folders(pred_dir: str | Path, ref_dir: str | Path) -> list[ImagePair]:
    """Pairs of (prediction, reference) files matched by stem, sorted by stem.

    Raises :class:`~copymark.errors.DataError` for a missing or empty folder, and when the
    stems differ (naming the first stems missing on each side).
    """
    pred = _images_by_stem(Path(pred_dir), "prediction")
    ref = _images_by_stem(Path(ref_dir), "reference")
    only_pred = sorted(set(pred) - set(ref))
    only_ref = sorted(set(ref) - set(pred))
    if only_pred or only_ref:
        parts = []
        if only_ref:
            parts.append(f"{len(only_ref)} reference image(s) have no prediction: {_first(only_ref)}")
        if only_pred:
            parts.append(f"{len(only_pred)} prediction(s) have no reference: {_first(only_pred)}")
        raise DataError(
            f"unmatched image pairs between {pred_dir} and {ref_dir}: " + "; ".join(parts),
            hint="predictions and references are paired by file name without extension",
        )
    return [ImagePair(s, pred[s], ref[s]) for s in sorted(pred)]


def _first(names: list[str], k: int = 5) -> str:
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


def iter_pair_batches(
    pairs: list[ImagePair], batch_size: int
) -> Iterator[tuple[list[str], list[torch.Tensor], list[torch.Tensor]]]:
    """Load ``batch_size`` pairs at a time -> (stems, preds, refs); each pair must match in size."""
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        stems, preds, refs = [], [], []
        for p in chunk:
            a, b = load_image(p.pred), load_image(p.ref)
            if a.shape != b.shape:
                raise ImageError(
                    f"pair {p.stem!r} differs in size: {p.pred} is {a.shape[2]}x{a.shape[1]}, "
                    f"{p.ref} is {b.shape[2]}x{b.shape[1]} (width x height)",
                    hint="predictions must have the reference's size (crop or resize them first)",
                )
            stems.append(p.stem)
            preds.append(a)
            refs.append(b)
        yield stems, preds, refs


def _same_size_groups(stems: list[str], preds: list[torch.Tensor], refs: list[torch.Tensor]):
    """Consecutive runs of same-sized pairs, stacked (keeps the pairs in file order)."""
    start = 0
    for i in range(1, len(preds) + 1):
        if i == len(preds) or preds[i].shape != preds[start].shape:
            yield stems[start:i], torch.stack(preds[start:i]), torch.stack(refs[start:i])
            start = i


@dataclass
class FolderMetrics:
    """What :func:`compare_folders` measured; :meth:`to_dict` is the JSON form."""

    pred_dir: str
    ref_dir: str
    n_pairs: int
    protocol: dict[str, Any]
    psnr: PerImageValues | None = None
    ssim: PerImageValues | None = None
    fid: float | None = None
    kid: KIDResult | None = None
    swd: SWDResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0

    def summary(self, s: PerImageValues) -> Summary:
        """The per-image values of ``s`` summarised by the one convention (mean, std, n, n_inf, CI)."""
        return s.summary(self.n_boot, self.seed)

    def rows(self) -> list[tuple[str, float | None, float | None, int]]:
        """(metric, mean, std, n) rows for a table (std None for n = 1 or infinite values)."""
        out: list[tuple[str, float | None, float | None, int]] = []
        for label, s in (("PSNR (dB)", self.psnr), ("SSIM", self.ssim)):
            if s is not None:
                v = self.summary(s)
                out.append((label, v.mean, v.std, v.n))
        if self.fid is not None:
            out.append(("FID", self.fid, None, self.n_pairs))
        if self.kid is not None:
            out.append((f"KID (subsets of {self.kid.subset_size})", self.kid.mean, self.kid.std, self.n_pairs))
        if self.swd is not None:
            out.append(("SWD x1e3 (avg)", self.swd.avg, None, self.swd.n_images))
            for i, (v, (h, w)) in enumerate(zip(self.swd.levels, self.swd.resolutions)):
                out.append((f"  SWD x1e3 level {i} ({h}x{w})", v, None, self.swd.n_images))
        return out

    def to_dict(self) -> dict[str, Any]:
        m: dict[str, Any] = {}
        for s in (self.psnr, self.ssim):
            if s is not None:
                m[s.name] = {**self.summary(s).to_dict(), "per_image": {k: _j(v) for k, v in s.per_image().items()}}
        if self.fid is not None:
            m["fid"] = {"value": _j(self.fid), "n_pred": self.n_pairs, "n_ref": self.n_pairs}
        if self.kid is not None:
            m["kid"] = {
                "mean": _j(self.kid.mean),
                "std": _j(self.kid.std),
                "n": self.n_pairs,
                "subset_size": self.kid.subset_size,
                "n_subsets": self.kid.n_subsets,
            }
        if self.swd is not None:
            m["swd"] = {
                "avg_x1e3": _j(self.swd.avg),
                "levels_x1e3": [_j(v) for v in self.swd.levels],
                "level_sizes_hw": [list(r) for r in self.swd.resolutions],
                "n": self.swd.n_images,
                "descriptors_per_level": self.swd.n_descriptors,
            }
        return {
            "pred_dir": self.pred_dir,
            "ref_dir": self.ref_dir,
            "n_pairs": self.n_pairs,
            "protocol": self.protocol,
            "metrics": m,
            **self.extra,
        }


def _j(x: float | None) -> float | str | None:
    """JSON-safe float: NaN -> null, +-inf -> "inf"/"-inf" (identical images have PSNR inf)."""
    return json_float(x)


def compare_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    *,
    y_channel: bool = False,
    crop_border: int = 0,
    quantize: bool = True,
    psnr: bool = True,
    ssim: bool = True,
    fid: bool = False,
    kid: bool = False,
    swd: bool = False,
    feature_net: FeatureNet | None = None,
    batch_size: int = 16,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    swd_max_descriptors: int | None = 2**16,
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_batch: Callable[[int], None] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
) -> FolderMetrics:
    """Score predictions against references paired by file stem, ``batch_size`` pairs at a time.

    PSNR/SSIM follow the SR protocol arguments (``y_channel``, ``crop_border``, ``quantize``;
    see :mod:`copymark.metrics.fidelity`). FID/KID run ``feature_net`` (required for them;
    usually :func:`~copymark.metrics.inception.inception_v3_features`) on whole images, SWD
    on whole images too (the border crop and Y channel apply to PSNR/SSIM only). ``on_batch``
    is called with the number of pairs done after each batch (for progress bars).
    ``swd_max_descriptors`` bounds SWD's memory: per pyramid level and set it keeps a uniform
    random sample of at most that many 7x7 descriptors (65,536 = all of 512 images; about
    38 MB per level and set); ``None`` keeps all, like the reference code. ``n_boot`` and
    ``seed`` set the bootstrap of the PSNR/SSIM 95% CIs.
    """
    if (fid or kid) and feature_net is None:
        raise DataError("FID/KID need a feature net (e.g. inception_v3_features(weights_path))")
    if not (psnr or ssim or fid or kid or swd):
        raise DataError("no metric selected")
    pairs = pair_folders(pred_dir, ref_dir)
    acc_psnr = PSNR(1.0, y_channel, crop_border, quantize) if psnr else None
    acc_ssim = SSIM(1.0, y_channel, crop_border, quantize) if ssim else None
    acc_feat = (
        FeatureDistances(feature_net, fid, kid, kid_subset_size, kid_subsets, seed, device)  # type: ignore[arg-type]
        if (fid or kid)
        else None
    )
    acc_swd = SWD(max_descriptors=swd_max_descriptors, seed=seed) if swd else None
    done = 0
    for stems, preds, refs in iter_pair_batches(pairs, batch_size):
        for g_stems, p, r in _same_size_groups(stems, preds, refs):
            if acc_psnr is not None:
                acc_psnr.update(p.to(device), r.to(device), g_stems)
            if acc_ssim is not None:
                acc_ssim.update(p.to(device), r.to(device), g_stems)
        if acc_feat is not None:
            acc_feat.update(preds, refs)
        if acc_swd is not None:
            acc_swd.update(preds, refs)
        done += len(stems)
        if on_batch is not None:
            on_batch(done)
    protocol = {
        "y_channel": y_channel,
        "crop_border": crop_border,
        "quantize_8bit": quantize,
        "data_range": 1.0,
        "ycbcr": "ITU-R BT.601, MATLAB rgb2ycbcr" if y_channel else None,
        "ssim": "Gaussian window sigma 1.5, 11x11, K1=0.01, K2=0.03, valid region; RGB: mean over channels",
        "summary": CONVENTION,
        "pairing": "by file stem",
    }
    if swd:
        protocol["swd"] = (
            "Karras et al. 2018: Laplacian pyramid down to 16 px, 128 random 7x7 neighbourhoods per image and level, "
            "per-set channel normalisation, 4 x 128 random directions, x1e3; "
            f"at most {swd_max_descriptors} descriptors per level and set"
        )
    out = FolderMetrics(str(pred_dir), str(ref_dir), len(pairs), protocol, n_boot=n_boot, seed=seed)
    if acc_psnr is not None:
        out.psnr = acc_psnr.compute()
    if acc_ssim is not None:
        out.ssim = acc_ssim.compute()
    if acc_feat is not None:
        feats = acc_feat.compute()
        out.fid, out.kid = feats.fid, feats.kid
        out.protocol["feature_dim"] = feats.feature_dim
    if acc_swd is not None:
        out.swd = acc_swd.compute()
    return out
