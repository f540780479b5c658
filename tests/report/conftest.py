"""Fixtures for the report tests: real extraction run folders built from real photographs.

Photos are scikit-image's bundled samples, resized small. For the style run the victim is a
real OpenCV stylization (``cv2.stylization``), the surrogate a Gaussian blur of the victim's
answers, the ground truth the originals. For the super-resolution run the ground truth is the
photo, the input its x4 area-downscale, the victim bicubic upscaling and the surrogate
bilinear upscaling. metrics.json follows notes/EXTRACTION_RUN_FORMAT.md with PSNR/SSIM from
``skimage.metrics`` and a percentile bootstrap CI computed here, so the report under test
shows numbers it did not compute itself.

The ownership report's runs (``owner``: real protect and verify runs) are built by
ownership_world.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel")


def photos(size: int) -> dict[str, np.ndarray]:
    """Centre-square crops of the bundled photos, area-resized to ``size`` (uint8 H x W x 3)."""
    out = {}
    for name in PHOTOS:
        img = getattr(skimage.data, name)()[..., :3]
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        out[name] = cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=cv2.INTER_AREA)
    return out


def save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def summary(values: list[float], seed: int = 0) -> dict:
    """mean, std (ddof 1), n and a 95% percentile-bootstrap CI of the mean."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(2000, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)),
        "n": len(v),
        "ci95": [float(lo), float(hi)],
        "values": [float(x) for x in v],
    }


def y_channel(a: np.ndarray, crop: int) -> np.ndarray:
    y = rgb2ycbcr(a)[..., 0]
    return y[crop:-crop, crop:-crop] if crop else y


def pair_metrics(xs: list[np.ndarray], ys: list[np.ndarray], sr_crop: int | None) -> dict:
    """Per-image PSNR/SSIM (RGB, and Y with a border crop for SR), summarised."""
    psnr_rgb = [peak_signal_noise_ratio(y, x, data_range=255) for x, y in zip(xs, ys)]
    ssim_rgb = [structural_similarity(y, x, channel_axis=2, data_range=255) for x, y in zip(xs, ys)]
    m = {"psnr_rgb": summary(psnr_rgb), "ssim_rgb": summary(ssim_rgb)}
    if sr_crop is not None:
        psnr_y = [
            peak_signal_noise_ratio(y_channel(y, sr_crop), y_channel(x, sr_crop), data_range=255)
            for x, y in zip(xs, ys)
        ]
        ssim_y = [
            structural_similarity(y_channel(y, sr_crop), y_channel(x, sr_crop), data_range=255) for x, y in zip(xs, ys)
        ]
        m["psnr_y"] = summary(psnr_y)
        m["ssim_y"] = summary(ssim_y)
    return m


def write_run(run: Path, task: str, cols: dict[str, dict[str, np.ndarray]], scale: int, budget: int = 400) -> dict:
    """Write outputs/test/<column>/<stem>.png and metrics.json; return the metrics."""
    for col, imgs in cols.items():
        for stem, arr in imgs.items():
            save(arr, run / "outputs" / "test" / col / f"{stem}.png")
    stems = sorted(cols["victim"])
    v = [cols["victim"][s] for s in stems]
    su = [cols["surrogate"][s] for s in stems]
    g = [cols["gt"][s] for s in stems]
    crop = scale if task == "sr" else None
    inputs = [cols["input"][s] for s in stems]
    if task == "sr":
        inputs = [cv2.resize(a, v[0].shape[1::-1], interpolation=cv2.INTER_NEAREST) for a in inputs]
    flat = [np.full_like(a, 128) for a in v]  # an untrained net's typical answer: mid grey
    metrics = {
        "task": task,
        "scale": scale,
        "victim": {
            "url": "http://127.0.0.1:8123",
            "name": f"classical:{'stylize?sigma_s=20&sigma_r=0.3' if task == 'style' else 'bicubic?scale=4'}",
            "info": {"task": task},
        },
        "surrogate": {"path": str(run / "surrogate"), "kind": "unet", "base_channels": 32},
        "queries": {"spent": budget, "budget": budget, "store": str(run / "store")},
        "sets": {
            "test": {
                "n": len(stems),
                "tables": {
                    "A": {"title": "victim vs ground truth", "metrics": pair_metrics(v, g, crop)},
                    "B": {"title": "surrogate vs victim", "metrics": pair_metrics(su, v, crop)},
                    "C": {"title": "surrogate vs ground truth", "metrics": pair_metrics(su, g, crop)},
                },
                "baselines": {
                    "identity_vs_victim": pair_metrics(inputs, v, crop),
                    "untrained_vs_victim": pair_metrics(flat, v, crop),
                },
            }
        },
    }
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (run / "config.json").write_text(json.dumps({"task": task}))
    (run / "env.json").write_text(
        json.dumps({"copymark": "0.1.0", "time": "2026-11-23T12:00:00+0000", "git_commit": "0123456789abcdef"})
    )
    return metrics


def learning_curve(inputs: list[np.ndarray], answers: list[np.ndarray], budget: int, seed: int = 0) -> dict:
    """A real (tiny) learning curve: an affine colour map fitted by least squares to q query
    pixels, scored by PSNR against the victim; 'random' picks pixels uniformly, 'diverse' picks
    the q pixels farthest apart in colour (greedy farthest-point)."""
    x = np.concatenate([a.reshape(-1, 3) for a in inputs]).astype(np.float64)
    y = np.concatenate([a.reshape(-1, 3) for a in answers]).astype(np.float64)
    rng = np.random.default_rng(seed)
    pool = rng.choice(len(x), size=min(len(x), 4000), replace=False)
    points = []
    for q in (budget // 8, budget // 4, budget // 2, budget):
        for strategy in ("random", "diverse"):
            if strategy == "random":
                idx = rng.choice(pool, size=q, replace=False)
            else:
                chosen = [int(pool[0])]
                dist = np.linalg.norm(x[pool] - x[chosen[0]], axis=1)
                for _ in range(q - 1):
                    k = int(pool[int(np.argmax(dist))])
                    chosen.append(k)
                    dist = np.minimum(dist, np.linalg.norm(x[pool] - x[k], axis=1))
                idx = np.array(chosen)
            a = np.c_[x[idx], np.ones(len(idx))]
            coef, *_ = np.linalg.lstsq(a, y[idx], rcond=None)
            pred = np.clip(np.c_[x, np.ones(len(x))] @ coef, 0, 255).round()
            per = [
                peak_signal_noise_ratio(t, p.reshape(t.shape).astype(np.uint8), data_range=255)
                for t, p in zip(answers, np.split(pred, len(answers)))
            ]
            s = summary(per)
            points.append({"strategy": strategy, "queries": q, "value": s["mean"], "ci95": s["ci95"]})
    return {"metric": "psnr_rgb", "budget": budget, "points": points}


def build_style_run(run: Path, with_curve: bool = True) -> dict:
    gt = photos(64)
    victim = {k: cv2.stylization(v, sigma_s=20, sigma_r=0.3) for k, v in gt.items()}
    surrogate = {k: cv2.GaussianBlur(v, (5, 5), 1.0) for k, v in victim.items()}
    m = write_run(run, "style", {"input": gt, "victim": victim, "surrogate": surrogate, "gt": gt}, scale=1)
    if with_curve:
        stems = sorted(gt)
        curve = learning_curve([gt[s] for s in stems], [victim[s] for s in stems], budget=64)
        (run / "learning_curve.json").write_text(json.dumps(curve))
    return m


def build_sr_run(run: Path) -> dict:
    gt = photos(96)
    lr = {k: cv2.resize(v, (24, 24), interpolation=cv2.INTER_AREA) for k, v in gt.items()}
    victim = {k: cv2.resize(v, (96, 96), interpolation=cv2.INTER_CUBIC) for k, v in lr.items()}
    surrogate = {k: cv2.resize(v, (96, 96), interpolation=cv2.INTER_LINEAR) for k, v in lr.items()}
    return write_run(run, "sr", {"input": lr, "victim": victim, "surrogate": surrogate, "gt": gt}, scale=4)


@pytest.fixture(scope="module")
def style_run_template(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("style_run") / "run"
    build_style_run(run)
    return run


@pytest.fixture(scope="module")
def sr_run_template(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("sr_run") / "run"
    build_sr_run(run)
    return run


@pytest.fixture
def style_run(style_run_template, tmp_path) -> Path:
    """A fresh copy of the style run folder (tests may modify it)."""
    dst = tmp_path / "style_run"
    shutil.copytree(style_run_template, dst)
    return dst


@pytest.fixture
def sr_run(sr_run_template, tmp_path) -> Path:
    dst = tmp_path / "sr_run"
    shutil.copytree(sr_run_template, dst)
    return dst


@pytest.fixture(scope="session")
def owner(tmp_path_factory) -> dict[str, Path]:
    """Real protect runs (two-phase, e2e-extraction, acsac19) and verify runs (tests/report/ownership_world.py).

    Tests copy a run before changing it (``copy_run``)."""
    from ownership_world import build

    return build(tmp_path_factory.mktemp("ownership"))
