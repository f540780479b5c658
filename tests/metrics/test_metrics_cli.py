"""`copymark metrics` end to end: the Set5 done-when check, folder streaming, every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tests.conftest import require_shared

from copymark import images
from copymark.cli import main
from copymark.errors import DataError, ImageError
from copymark.metrics import compare_folders, pair_folders
from copymark.metrics.folders import iter_pair_batches
from copymark.metrics.inception import WEIGHTS_ENV, WEIGHTS_FILE_NAME

SK_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def _y_matlab(path: Path) -> np.ndarray:
    """MATLAB rgb2ycbcr Y (uint8 levels) of an 8-bit RGB file, computed here independently."""
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    return np.floor(16.0 + 65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2] + 0.5)[4:-4, 4:-4]


def test_set5_bicubic_done_when(tmp_path, capsys):
    set5 = require_shared("sr", "Set5")
    pred = tmp_path / "bicubic_x4"
    for lr in sorted((set5 / "LR_x4").glob("*.png")):
        images.save_image(images.upscale_bicubic(images.load_image(lr), 4), pred / lr.name)
    out = tmp_path / "out.json"
    rc = main(
        ["metrics", "--pred", str(pred), "--ref", str(set5 / "HR"), "--y-channel", "--crop", "4", "--json", str(out)]
    )
    printed = capsys.readouterr().out
    assert rc == 0
    assert "PSNR" in printed and "SSIM" in printed
    res = json.loads(out.read_text())
    assert res["n_pairs"] == 5 and res["protocol"]["crop_border"] == 4 and res["protocol"]["y_channel"]
    ps, ss = [], []
    for f in sorted(pred.glob("*.png")):
        a, b = _y_matlab(f), _y_matlab(set5 / "HR" / f.name)
        ps.append(peak_signal_noise_ratio(b, a, data_range=255))
        ss.append(structural_similarity(b, a, data_range=255, **SK_SSIM))
        assert res["metrics"]["psnr"]["per_image"][f.stem] == pytest.approx(ps[-1], abs=1e-4)
        assert res["metrics"]["ssim"]["per_image"][f.stem] == pytest.approx(ss[-1], abs=1e-4)
    assert res["metrics"]["psnr"]["mean"] == pytest.approx(np.mean(ps), abs=1e-4)
    assert res["metrics"]["ssim"]["mean"] == pytest.approx(np.mean(ss), abs=1e-4)
    assert res["metrics"]["psnr"]["std"] == pytest.approx(np.std(ps, ddof=1), abs=1e-4)
    assert res["metrics"]["psnr"]["n"] == 5
    # the published bicubic x4 Set5 figure (SelfExSR README, quoted in sr/MANIFEST.md)
    assert abs(res["metrics"]["psnr"]["mean"] - 28.42) < 0.05
    assert f"{res['metrics']['psnr']['mean']:.4f}" in printed


def _write_pairs(root: Path, n: int, size=(40, 48), seed: int = 0, ref_suffix=".png") -> tuple[Path, Path]:
    g = torch.Generator().manual_seed(seed)
    pred, ref = root / "pred", root / "ref"
    pred.mkdir(parents=True, exist_ok=True)
    ref.mkdir(parents=True, exist_ok=True)
    base = torch.rand(3, 8, 8, generator=g)
    for i in range(n):
        h, w = size if i % 2 == 0 else (size[0] + 8, size[1])  # mixed sizes across pairs
        r = images.resize_bicubic(base.roll(i, dims=2), size=(h, w)).clamp(0, 1)
        p = (r + 0.05 * torch.randn(r.shape, generator=g)).clamp(0, 1)
        images.save_image(p, pred / f"im{i:03d}.png")
        if ref_suffix == ".png":
            images.save_image(r, ref / f"im{i:03d}.png")
        else:
            images.to_pil(r).save(ref / f"im{i:03d}{ref_suffix}")
    return pred, ref


class TinyFeatures(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        # float64, so that its features do not depend on the batch size: float32 conv kernels give
        # last-bit differences between batch sizes and CPUs, which KID's cubic kernel amplifies
        self.conv = torch.nn.Conv2d(3, 2, 3).double()  # 4-d features: 7 images give a full-rank covariance

    @torch.no_grad()
    def forward(self, x):
        h = torch.relu(self.conv(x.double()))
        return torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)


def test_compare_folders_streams_batches_and_agrees_with_one_batch(tmp_path):
    pred, ref = _write_pairs(tmp_path, 7, ref_suffix=".bmp")
    pairs = pair_folders(pred, ref)
    assert [p.stem for p in pairs] == [f"im{i:03d}" for i in range(7)]
    sizes = [len(stems) for stems, _, _ in iter_pair_batches(pairs, 3)]
    assert sizes == [3, 3, 1]  # never more than batch_size pairs loaded at once
    kw = dict(y_channel=True, crop_border=2, fid=True, kid=True, swd=True, feature_net=TinyFeatures(), kid_subsets=5)
    small = compare_folders(pred, ref, batch_size=2, **kw)
    big = compare_folders(pred, ref, batch_size=7, **kw)
    assert small.n_pairs == 7 and small.psnr.n == 7
    assert small.psnr.values == pytest.approx(big.psnr.values, abs=1e-12)
    assert small.ssim.values == pytest.approx(big.ssim.values, abs=1e-12)
    # the features are float64 and batch-independent (see TinyFeatures), so only the streaming
    # arithmetic differs: float64 rounding over a few thousand operations, far below 1e-9
    assert small.fid == pytest.approx(big.fid, rel=1e-9)
    assert small.kid.mean == pytest.approx(big.kid.mean, rel=1e-9)
    assert small.swd.avg > 0 and len(small.swd.levels) == 2
    d = small.to_dict()
    json.dumps(d, allow_nan=False)
    assert set(d["metrics"]) == {"psnr", "ssim", "fid", "kid", "swd"}
    # per-image values equal the pure function on the loaded pair
    from copymark.metrics import psnr

    p0, r0 = images.load_image(pred / "im003.png"), images.load_image(ref / "im003.bmp")
    assert d["metrics"]["psnr"]["per_image"]["im003"] == pytest.approx(
        float(psnr(p0, r0, y_channel=True, crop_border=2)[0])
    )


def test_identical_folders_give_inf_psnr_in_json(tmp_path, capsys):
    pred, _ = _write_pairs(tmp_path, 2)
    out = tmp_path / "o.json"
    assert main(["metrics", "--pred", str(pred), "--ref", str(pred), "--swd", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["metrics"]["psnr"]["mean"] == "inf" and res["metrics"]["ssim"]["mean"] == pytest.approx(1.0)
    assert res["metrics"]["swd"]["avg_x1e3"] == 0.0
    assert "inf" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# bad input: one-line error, exit status 2, no traceback


def _fails(capsys, argv: list[str], *needles: str) -> str:
    rc = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2, (rc, captured.out, err)
    assert "Traceback" not in err and "Traceback" not in captured.out
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error:")
    assert all(ln.startswith(("error:", "hint:")) for ln in lines), err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_missing_directory(tmp_path, capsys):
    pred, _ = _write_pairs(tmp_path, 1)
    _fails(
        capsys, ["metrics", "--pred", str(pred), "--ref", str(tmp_path / "nope")], "reference folder not found", "nope"
    )


def test_empty_folder(tmp_path, capsys):
    pred, _ = _write_pairs(tmp_path, 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    _fails(capsys, ["metrics", "--pred", str(pred), "--ref", str(tmp_path / "empty")], "holds no images")


def test_corrupt_image(tmp_path, capsys):
    pred, ref = _write_pairs(tmp_path, 2)
    data = (ref / "im001.png").read_bytes()
    (ref / "im001.png").write_bytes(data[: len(data) // 2])
    _fails(capsys, ["metrics", "--pred", str(pred), "--ref", str(ref)], "im001.png")


def test_unmatched_pairs(tmp_path, capsys):
    pred, ref = _write_pairs(tmp_path, 3)
    (ref / "im002.png").rename(ref / "other.png")
    err = _fails(capsys, ["metrics", "--pred", str(pred), "--ref", str(ref)], "unmatched", "im002", "other")
    with pytest.raises(DataError, match="im002"):
        pair_folders(pred, ref)
    assert "paired by file name" in err


def test_missing_weight_file(tmp_path, capsys, monkeypatch):
    pred, ref = _write_pairs(tmp_path, 2)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    _fails(
        capsys,
        ["metrics", "--pred", str(pred), "--ref", str(ref), "--fid"],
        WEIGHTS_FILE_NAME,
        WEIGHTS_ENV,
        "--inception-weights",
    )
    _fails(
        capsys,
        [
            "metrics",
            "--pred",
            str(pred),
            "--ref",
            str(ref),
            "--kid",
            "--inception-weights",
            str(tmp_path / "missing.pth"),
        ],
        "not found",
        "missing.pth",
        WEIGHTS_FILE_NAME,
    )
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "env.pth"))
    _fails(capsys, ["metrics", "--pred", str(pred), "--ref", str(ref), "--fid"], "env.pth", WEIGHTS_ENV)


def test_pair_of_different_sizes(tmp_path, capsys):
    pred, ref = _write_pairs(tmp_path, 2)
    r = images.load_image(ref / "im001.png")
    images.save_image(r[:, :-4, :], ref / "im001.png")
    _fails(capsys, ["metrics", "--pred", str(pred), "--ref", str(ref)], "im001", "differs in size")
    with pytest.raises(ImageError):
        compare_folders(pred, ref)
