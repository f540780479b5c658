"""Plots (PNG bytes) and the A/B/C tables as Markdown and plain-language sentences."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from copymark.errors import CopymarkError
from copymark.report.plots import learning_curve_png, metric_bars_png
from copymark.report.tables import reading_sentence, tables_markdown


def png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_learning_curve_png_draws_each_strategy(style_run):
    curve = json.loads((style_run / "learning_curve.json").read_text())
    img = png(learning_curve_png(curve))
    assert img.shape[0] > 300 and img.shape[1] > 500
    # both strategy colours appear (blue and orange lines)
    for colour in ((0x1F, 0x5F, 0xA8), (0xD9, 0x62, 0x2B)):
        assert (np.abs(img.astype(int) - colour).sum(axis=2) < 30).sum() > 50
    one = {**curve, "points": [p for p in curve["points"] if p["strategy"] == "random"]}
    img1 = png(learning_curve_png(one))
    assert (np.abs(img1.astype(int) - (0x1F, 0x5F, 0xA8)).sum(axis=2) < 30).sum() > 50
    assert (np.abs(img1.astype(int) - (0xD9, 0x62, 0x2B)).sum(axis=2) < 30).sum() < 5


@pytest.mark.parametrize("bad", [{}, {"points": []}, {"points": [{"strategy": "random", "queries": "x", "value": 1}]}])
def test_learning_curve_png_rejects_malformed(bad):
    with pytest.raises(CopymarkError):
        learning_curve_png(bad)


def test_metric_bars(style_run):
    m = json.loads((style_run / "metrics.json").read_text())
    s = m["sets"]["test"]
    assert png(metric_bars_png(s, set_name="test")).shape[1] > 400
    assert metric_bars_png(s, metric="fid") is None
    assert metric_bars_png({"tables": {}}) is None


def test_tables_markdown(style_run):
    m = json.loads((style_run / "metrics.json").read_text())
    md = tables_markdown(m)
    lines = md.splitlines()
    assert lines[0].startswith("# Extraction results")
    assert "## test set (n = 6)" in lines
    rows = [line for line in lines if line.startswith("| ") and "---" not in line]
    # header + (A, B, C, 2 baselines) x (psnr_rgb, ssim_rgb)
    assert len(rows) == 1 + 5 * 2
    assert all(r.count("|") - r.count("\\|") == 6 for r in rows)
    b = m["sets"]["test"]["tables"]["B"]["metrics"]["psnr_rgb"]
    assert (
        f"| B: surrogate vs victim | PSNR (RGB) [dB]\u00a0↑ | {b['mean']:.2f} ± {b['std']:.2f} | 6 | [{b['ci95'][0]:.2f}, {b['ci95'][1]:.2f}] |"
        in md
    )
    assert "reproduces the victim" in md
    assert tables_markdown({"task": "sr", "sets": {}}).startswith("# Extraction results (super-resolution)")


def _entry(mean, lo, hi):
    return {"mean": mean, "std": 1.0, "n": 10, "ci95": [lo, hi]}


def test_reading_sentence_verdicts():
    s = {
        "tables": {"B": {"metrics": {"psnr_rgb": _entry(20.0, 19.0, 21.0)}}},
        "baselines": {
            "identity_vs_victim": {"psnr_rgb": _entry(15.0, 14.0, 16.0)},
            "untrained_vs_victim": {"psnr_rgb": _entry(20.5, 19.5, 21.5)},
        },
    }
    text = reading_sentence("test", s)
    assert "better than the identity map (15.00 dB; difference +5.00 dB)" in text
    assert "not distinguishable from an untrained surrogate" in text
    # lower is better: SWD
    s2 = {
        "tables": {"B": {"metrics": {"swd": _entry(0.5, 0.45, 0.55)}}},
        "baselines": {"identity_vs_victim": {"swd": _entry(0.3, 0.25, 0.35)}},
    }
    assert "worse than the identity map" in reading_sentence("benchmark", s2)
    # no CI: says the verdict rests on the means
    s3 = {
        "tables": {"B": {"metrics": {"psnr_y": {"mean": 30.0}}}},
        "baselines": {"bicubic_vs_victim": {"psnr_y": {"mean": 28.0}}},
    }
    t3 = reading_sentence("test", s3)
    assert "better than bicubic upscaling" in t3 and "means alone" in t3
    assert reading_sentence("test", {"tables": {"B": {"metrics": {}}}}) is None


def test_reading_sentence_prefers_the_paired_difference():
    # overlapping CIs, but every image gains: the paired CI excludes 0 and decides
    b = _entry(16.4, 14.3, 19.5)
    ident = {**_entry(12.7, 11.0, 14.5), "paired_gain": _entry(3.7, 2.9, 4.4)}
    unt = {**_entry(16.0, 14.0, 18.0), "paired_gain": _entry(0.4, -0.5, 1.2)}
    worse = {**_entry(17.0, 15.0, 19.0), "paired_gain": _entry(-0.6, -0.9, -0.2)}
    s = {
        "tables": {"B": {"metrics": {"psnr_rgb": b}}},
        "baselines": {"identity_vs_victim": {"psnr_rgb": ident}, "untrained_vs_victim": {"psnr_rgb": unt}},
    }
    text = reading_sentence("test", s)
    assert "better than the identity map" in text
    assert "not distinguishable from an untrained surrogate" in text
    assert "per-image difference (n = 10 images) excluding 0" in text and "non-overlapping" not in text
    s["baselines"]["untrained_vs_victim"]["psnr_rgb"] = worse
    assert "worse than an untrained surrogate" in reading_sentence("test", s)
