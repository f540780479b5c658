"""Tables A/B/C through a real victim server; the numbers checked against skimage on the saved files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from evalhelpers import KEY, Blur, Upscale, scripted, serve
from evalhelpers import photos as _photos
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from copymark import images as I
from copymark.cli import main
from copymark.errors import ConfigError, DataError
from copymark.extraction.evaluate import EvaluateConfig, make_set, run_evaluation
from copymark.serving.models import load_model


def _server(tmp: Path, spec: str):
    return serve(tmp / "server", spec)


def _skimage_psnr_ssim(a: Path, b: Path, y: bool = False, crop: int = 0) -> tuple[float, float]:
    x = I.to_uint8(I.load_image(a)).permute(1, 2, 0).numpy().astype(np.float64)
    r = I.to_uint8(I.load_image(b)).permute(1, 2, 0).numpy().astype(np.float64)
    if y:
        x = np.round(16 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255)
        r = np.round(16 + (65.481 * r[..., 0] + 128.553 * r[..., 1] + 24.966 * r[..., 2]) / 255)
        if crop:
            x, r = x[crop:-crop, crop:-crop], r[crop:-crop, crop:-crop]
        s = structural_similarity(x, r, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    else:
        s = structural_similarity(
            x, r, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=2
        )
    return peak_signal_noise_ratio(r, x, data_range=255), s


def test_style_tables_match_skimage_and_baselines(tmp_path):
    test = _photos(tmp_path / "test")
    style = _photos(tmp_path / "style", n=2, side=64)  # unpaired "target style" set for A/C
    sur = tmp_path / "blur.pt"
    scripted(Blur(), sur)
    with _server(tmp_path, "classical:stylize?sigma_s=20&sigma_r=0.3") as srv:
        cfg = EvaluateConfig(
            victim_url=srv.url,
            api_key=KEY,
            surrogate=sur,
            test=test,
            gt=style,
            run_dir=tmp_path / "run",
            n_boot=200,
            progress=False,
        )
        m = run_evaluation(cfg)
        # a rerun reuses the stored victim answers (no new paid query) and gives the same numbers
        m2 = run_evaluation(cfg)
    t = m["sets"]["test"]
    assert t["n"] == 3 and not t["paired_gt"]
    assert set(t["tables"]) == {"A", "B", "C"}
    # unpaired style GT: A and C hold only distribution metrics, with both set sizes
    a_swd = t["tables"]["A"]["metrics"]["swd"]
    assert set(t["tables"]["A"]["metrics"]) == {"swd"} and a_swd["value"] > 0 and (a_swd["n"], a_swd["n_ref"]) == (3, 2)
    # ... read against the input set vs the style set, and flagged: 2 style images are too few
    assert t["baselines"]["identity_vs_gt"]["swd"]["value"] > 0
    assert "tables A, C: set-level metrics compare 3 with 2 images" in " ".join(t["notes"])
    # the style examples are kept for the report (unpaired: not a column of the grid)
    assert sorted(p.name for p in (tmp_path / "run" / "outputs" / "test" / "style").iterdir()) == sorted(
        p.name for p in I.list_images(style)
    )
    assert not (tmp_path / "run" / "outputs" / "test" / "gt").exists()
    assert m["protocol"]["fid_kid"].startswith("not computed")
    out = tmp_path / "run" / "outputs" / "test"
    stems = sorted(p.stem for p in I.list_images(test))
    per = [_skimage_psnr_ssim(out / "surrogate" / f"{s}.png", out / "victim" / f"{s}.png") for s in stems]
    b = t["tables"]["B"]["metrics"]
    assert b["psnr_rgb"]["mean"] == pytest.approx(np.mean([p for p, _ in per]), abs=1e-4)
    assert b["ssim_rgb"]["mean"] == pytest.approx(np.mean([s for _, s in per]), abs=1e-4)
    lo, hi = b["psnr_rgb"]["ci95"]
    assert lo <= b["psnr_rgb"]["mean"] <= hi
    # the identity baseline is the input vs the victim's answer
    ident = [_skimage_psnr_ssim(out / "input" / f"{s}.png", out / "victim" / f"{s}.png")[0] for s in stems]
    assert t["baselines"]["identity_vs_victim"]["psnr_rgb"]["mean"] == pytest.approx(np.mean(ident), abs=1e-4)
    # the paired gain is B minus the baseline image by image (same images, same victim answers)
    gain = t["baselines"]["identity_vs_victim"]["psnr_rgb"]["paired_gain"]
    diffs = [p - q for (p, _), q in zip(per, ident)]
    assert gain["n"] == 3 and gain["mean"] == pytest.approx(np.mean(diffs), abs=1e-4)
    assert gain["std"] == pytest.approx(np.std(diffs, ddof=1), abs=1e-4)
    assert gain["ci95"][0] <= gain["mean"] <= gain["ci95"][1]
    # victim answers through the API equal the victim in process (8-bit round trip is lossless)
    v = load_model("classical:stylize?sigma_s=20&sigma_r=0.3")
    x = I.load_image(out / "input" / "astronaut.png")
    assert torch.equal(I.to_uint8(v(x.unsqueeze(0))[0]), I.to_uint8(I.load_image(out / "victim" / "astronaut.png")))
    assert m2["sets"]["test"]["tables"]["B"] == t["tables"]["B"]
    md = (tmp_path / "run" / "tables.md").read_text()
    assert "surrogate vs victim" in md and f"{b['psnr_rgb']['mean']:.2f}" in md


def test_sr_tables_y_channel_with_crop(tmp_path):
    hr = _photos(tmp_path / "HR", n=2, side=64)
    lr = tmp_path / "LR_x4"
    lr.mkdir()
    for p in I.list_images(hr):
        I.save_image(I.downscale_bicubic(I.load_image(p), 4), lr / p.name)
    sur = tmp_path / "up.pt"
    scripted(Upscale(), sur)
    with _server(tmp_path, "classical:bicubic_x4") as srv:
        m = run_evaluation(
            EvaluateConfig(
                victim_url=srv.url,
                api_key=KEY,
                surrogate=sur,
                test=tmp_path,
                run_dir=tmp_path / "run",
                n_boot=200,
                progress=False,
            )
        )
    t = m["sets"]["test"]
    assert m["task"] == "sr" and m["scale"] == 4 and t["paired_gt"]
    out = tmp_path / "run" / "outputs" / "test"
    for table, (pred, ref) in {"A": ("victim", "gt"), "B": ("surrogate", "victim"), "C": ("surrogate", "gt")}.items():
        vals = [
            _skimage_psnr_ssim(out / pred / f"{s}.png", out / ref / f"{s}.png", y=True, crop=4)
            for s in ("astronaut", "coffee")
        ]
        got = t["tables"][table]["metrics"]
        assert got["psnr_y"]["mean"] == pytest.approx(np.mean([p for p, _ in vals]), abs=1e-4), table
        assert got["ssim_y"]["mean"] == pytest.approx(np.mean([s for _, s in vals]), abs=1e-4), table
    # bicubic (the victim) beats nearest-neighbour (the surrogate) against the ground truth
    assert t["tables"]["A"]["metrics"]["psnr_y"]["mean"] > t["tables"]["C"]["metrics"]["psnr_y"]["mean"]
    # the SR baseline is bicubic upscaling (copymark.images.upscale_bicubic); here the victim *is*
    # that bicubic, so every answer is identical: PSNR inf, counted in n and n_inf, no std or CI
    base = t["baselines"]["bicubic_vs_victim"]["psnr_y"]
    assert base == {"mean": "inf", "std": None, "n": 2, "n_inf": 2, "ci95": None, "paired_gain": base["paired_gain"]}
    assert base["paired_gain"]["mean"] == "-inf"  # the surrogate is worse than a perfect baseline
    assert "identity_vs_victim" not in t["baselines"]
    # bicubic vs ground truth, the row to read A and C against: here it equals A image by image
    gt_base = t["baselines"]["bicubic_vs_gt"]["psnr_y"]
    assert gt_base["mean"] == pytest.approx(t["tables"]["A"]["metrics"]["psnr_y"]["mean"], abs=1e-12)
    assert gt_base["paired_gain_A"]["mean"] == 0.0 and gt_base["paired_gain_A"]["ci95"] == [0.0, 0.0]
    assert gt_base["paired_gain_C"]["mean"] < 0  # nearest neighbour is worse than bicubic
    assert m["headline"]["test"]["baseline"] == "bicubic_vs_victim"
    md = (tmp_path / "run" / "tables.md").read_text()
    assert "∞" in md and "2 of 2 values infinite" in md and "bicubic upscaling vs ground truth" in md


def test_make_set_errors(tmp_path):
    from copymark.errors import DataError

    with pytest.raises(DataError, match="not found"):
        make_set("test", tmp_path / "nope", None, "style", 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        make_set("test", tmp_path / "empty", None, "style", 1)
    lr = _photos(tmp_path / "lr", n=2, side=16)
    gt = _photos(tmp_path / "gt", n=1, side=64)
    with pytest.raises(DataError, match="no ground truth with the same stem"):
        make_set("test", lr, gt, "sr", 4)


def test_evaluate_cli_bad_inputs(tmp_path, capsys):
    # unreachable server: a clear error, exit 2, no traceback
    (tmp_path / "t").mkdir()
    code = main(
        [
            "evaluate",
            "--victim-url",
            "http://127.0.0.1:9",
            "--api-key",
            KEY,
            "--surrogate",
            str(tmp_path / "missing"),
            "--test",
            str(tmp_path / "t"),
            "--run-dir",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err


class TinyFeatures(torch.nn.Module):
    """A tiny float64 feature net (FID/KID's feature net is injectable; Inception is not needed here)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 2, 3).double()

    @torch.no_grad()
    def forward(self, x):
        h = torch.relu(self.conv(x.double()))
        return torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)


@pytest.mark.parametrize("n_style", [1, 3])
def test_fid_and_kid_come_together_or_say_why(tmp_path, n_style):
    """With a feature net, FID and KID are both reported (KID also when FID is not), or each says
    why not; never one silently in place of the other."""
    from copymark.extraction.evaluate import Inputs, Scorer, VictimAccess, fetch_answers
    from copymark.metrics.distribution import FeatureDistances, kid_from_features
    from copymark.translate import load_translation_model

    test = _photos(tmp_path / "test", n=3, side=48)
    style = _photos(tmp_path / "style", n=n_style, side=48)
    s = make_set("test", test, style, "style", 1)
    inputs = Inputs.of([s])
    victim = load_model("classical:stylize?sigma_s=20&sigma_r=0.3")
    with _server(tmp_path, "classical:stylize?sigma_s=20&sigma_r=0.3") as srv:
        fetch_answers(VictimAccess(srv.url, KEY), victim.id, inputs, tmp_path / "answers", progress=False)
    sur = load_translation_model(scripted(Blur(), tmp_path / "blur.pt"))
    scorer = Scorer(
        "style", 1, victim.id, tmp_path / "answers", sur, feature_net=TinyFeatures(), n_boot=200, progress=False
    )
    res = scorer.score(s, inputs, tmp_path / "out")
    a = res["tables"]["A"]["metrics"]
    if n_style == 1:  # one reference image: neither can be computed, and both say so
        assert a["fid"]["value"] is None and "at least 2" in a["fid"]["why"]
        assert a["kid"]["mean"] is None and a["kid"]["why"]
        return
    # both present, equal to the metric computed here from the same features
    fd = FeatureDistances(TinyFeatures(), fid=True, kid=True, seed=0)
    answers = [I.load_image(tmp_path / "out" / "test" / "victim" / f"{st}.png") for st in sorted(s.inputs)]
    refs = [I.load_image(p) for _, p in sorted(s.gt.items())]
    fd.update(answers, refs)
    want = fd.compute()
    # 3 images give singular covariances: scipy's sqrtm is then accurate to about sqrt(eps) = 1.5e-8
    # relative, and the streamed and the batched moments differ in the last float64 bits before it
    assert a["fid"]["value"] == pytest.approx(want.fid, rel=1e-6) and (a["fid"]["n"], a["fid"]["n_ref"]) == (3, 3)
    k = kid_from_features(fd.features_of(answers), fd.features_of(refs), 1000, 100, 0)
    assert a["kid"]["mean"] == pytest.approx(k.mean, rel=1e-9)


def test_ground_truth_pairing_is_said_not_guessed_from_names(tmp_path):
    """Style examples that happen to share file stems with the test photos are a target-style set
    unless paired ground truth is asked for; paired needs every stem; SR is always paired."""
    test = _photos(tmp_path / "test", n=3)
    same_names = _photos(tmp_path / "style", n=3)  # the same stems (chelsea.png, ...) as the test photos
    assert not make_set("test", test, same_names, "style", 1).paired
    s = make_set("test", test, same_names, "style", 1, "paired")
    assert s.paired and set(s.gt) == set(s.inputs)
    assert make_set("test", test, same_names, "sr", 4).paired
    few = _photos(tmp_path / "few", n=2)
    with pytest.raises(DataError, match="no ground truth with the same stem"):
        make_set("test", test, few, "style", 1, "paired")
    with pytest.raises(ConfigError, match="super-resolution ground truth is the HR image"):
        make_set("test", test, same_names, "sr", 4, "set")
