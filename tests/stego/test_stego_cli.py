"""``copymark stego ...`` through copymark.cli.main: train, report, hide, reveal, detect-train, detect, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from stego_helpers import COVER_SAMPLES, SECRET_SAMPLES, write_tiles

from copymark.cli import main
from copymark.images import load_image, to_uint8

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    return {
        "root": root,
        "covers": write_tiles(root / "covers", COVER_SAMPLES, limit=24),
        "secrets": write_tiles(root / "secrets", SECRET_SAMPLES, limit=24),
    }


def _last_json(text: str) -> dict:
    """The last top-level JSON object a command printed (they print with indent=2)."""
    lines = text.splitlines()
    start = max(i for i, ln in enumerate(lines) if ln == "{")
    return json.loads("\n".join(lines[start:]))


def test_train_and_resume_via_cli(data, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["stego", "train", "--codec", "gglnet", "--covers", str(data["covers"]), "--secrets", str(data["secrets"]),
            "--seed", "204", "--run-dir", str(run), "--size", "32", "--iters", "4", "--batch-size", "4", "--holdout", "4",
            "--net-config", '{"filters": 4, "prep_layers": 1, "hide_layers": 1, "reveal_layers": 1}', "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = _last_json(capsys.readouterr().out)
    assert out["iterations"] == 4 and "secret_psnr" in out["quality"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["procedure"]["lr"] == 1e-4 and cfg["procedure"]["beta"] == 0.75 and cfg["loop"]["seed"] == 204
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["quality"]["visibility"]["file"] == "visibility.png" and (run / "visibility.png").is_file()
    # a finished run resumes to the same end without training more
    assert main(["stego", "train", "--run-dir", str(run), "--resume", "--no-progress"]) == 0
    # starting again into the same folder is refused with a hint
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_train_presets_via_cli(data, tmp_path, capsys):
    """--preset recommended records the residual En2D, cosine schedule and batch 2; explicit options
    override it; the fine-tune stage starts from the first run; wrong presets are refused."""
    common = ["stego", "train", "--codec", "en2d", "--covers", str(data["covers"]), "--secrets", str(data["secrets"]),
              "--size", "32", "--iters", "3", "--holdout", "4", "--no-progress"]  # fmt: skip
    first = tmp_path / "rec"
    assert main([*common, "--preset", "recommended", "--net-config", '{"width": 4}', "--run-dir", str(first)]) == 0
    cfg = json.loads((first / "config.json").read_text())
    proc = cfg["procedure"]
    assert (
        proc["schedule"] == "cosine" and proc["lr"] == 1e-3 and proc["beta"] == 1.0 and cfg["loop"]["batch_size"] == 2
    )
    assert (
        proc["codec"]["width"] == 4 and proc["codec"]["decoder_width"] == 16 and proc["codec"]["residual_scale"] == 1.0
    )
    second = tmp_path / "fine"
    args = [*common, "--preset", "recommended-finetune", "--net-config", '{"width": 4}', "--init-from", str(first),
            "--lr", "2e-4", "--batch-size", "4", "--run-dir", str(second)]  # fmt: skip
    assert main(args) == 0
    cfg = json.loads((second / "config.json").read_text())
    assert cfg["procedure"]["beta"] == 0.25 and cfg["procedure"]["lr"] == 2e-4 and cfg["loop"]["batch_size"] == 4
    capsys.readouterr()
    for extra, message in (
        (["--preset", "recomended"], "not a codec training preset"),
        (["--schedule", "linear"], "not a schedule"),
        (["--codec", "gglnet", "--preset", "recommended"], "En2D setting"),
    ):
        bad = tmp_path / f"bad-{extra[1]}"
        assert main([*common, *extra, "--run-dir", str(bad)]) == 2
        assert message in capsys.readouterr().err and not bad.exists()


def test_report_hide_reveal_lsb(data, tmp_path, capsys):
    run = tmp_path / "rep"
    assert main(["stego", "report", "--codec", "lsb", "--covers", str(data["covers"]), "--secrets", str(data["secrets"]),
                 "--run-dir", str(run), "--size", "32", "--limit", "6", "--bits", "3"]) == 0  # fmt: skip
    rep = _last_json(capsys.readouterr().out)
    assert rep["codec"] == "lsb" and rep["n_images"] == 6 and "values" not in rep["stego_psnr"]
    # 3 low bits changed: stego error < 8 levels -> PSNR > 20 log10(255/7) = 31.2 dB
    assert rep["stego_psnr"]["mean"] > 31.2
    assert (run / "visibility.png").is_file() and json.loads((run / "metrics.json").read_text())["quality"][
        "n_images"
    ] == 6
    st, rv = tmp_path / "st", tmp_path / "rv"
    assert main(["stego", "hide", "--codec", "lsb", "--covers", str(data["covers"]), "--secrets", str(data["secrets"]),
                 "--out", str(st), "--size", "32", "--limit", "5"]) == 0  # fmt: skip
    assert main(["stego", "reveal", "--codec", "lsb", "--input", str(st), "--out", str(rv)]) == 0
    files = sorted(p.name for p in rv.iterdir())
    assert files == sorted(p.name for p in st.iterdir()) and len(files) == 5
    secret0 = load_image(sorted(data["secrets"].iterdir())[0])
    revealed0 = load_image(rv / files[0])
    assert torch.equal(to_uint8(revealed0) >> 4, to_uint8(secret0) >> 4)


def test_detect_train_and_detect(data, tmp_path, capsys):
    st = tmp_path / "st"
    assert main(["stego", "hide", "--codec", "lsb", "--covers", str(data["covers"]), "--secrets", str(data["secrets"]),
                 "--out", str(st), "--size", "32"]) == 0  # fmt: skip
    run = tmp_path / "det"
    assert main(["stego", "detect-train", "--covers", str(data["covers"]), "--stegos", str(st), "--model", "srnet",
                 "--run-dir", str(run), "--iters", "3", "--batch-size", "4", "--holdout", "8", "--no-progress",
                 "--net-config", '{"c1": 4, "c2": 4, "c9": 4, "c10": 4, "c11": 4, "c12": 4}']) == 0  # fmt: skip
    out = _last_json(capsys.readouterr().out)
    assert out["heldout"]["pairs"] == 8 and 0.0 <= out["heldout"]["roc_auc"] <= 1.0
    scores = tmp_path / "scores.csv"
    assert main(["stego", "detect", "--model", str(run / "detector"), "--covers", str(data["covers"]), "--stegos", str(st),
                 "--input", str(st), "--threshold", "0.3", "--out", str(scores)]) == 0  # fmt: skip
    summary = _last_json(capsys.readouterr().out)
    assert summary["model"] == "srnet" and summary["images"] == 72 and summary["threshold"] == 0.3
    assert {"roc_auc", "detection_rate", "false_alarm_rate", "input_flagged_rate"} <= set(summary)
    rows = list(csv.DictReader(scores.open()))
    assert len(rows) == 72 and {r["set"] for r in rows} == {"input", "covers", "stegos"}
    assert all(r["flagged"] == str(float(r["score"]) >= 0.3) for r in rows)
    js = tmp_path / "scores.json"
    assert main(["stego", "detect", "--model", str(run / "detector"), "--input", str(st), "--out", str(js)]) == 0
    assert len(json.loads(js.read_text())["scores"]) == 24


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["stego", "train", "--codec", "lsb", "--covers", "C", "--secrets", "S", "--run-dir", "R"],
            "not a trainable codec",
        ),
        (["stego", "train", "--covers", "C", "--secrets", "S", "--run-dir", "R"], "missing --codec"),
        (
            [
                "stego",
                "train",
                "--codec",
                "en2d",
                "--covers",
                "{covers}",
                "--secrets",
                "{secrets}",
                "--run-dir",
                "R",
                "--size",
                "36",
            ],
            "multiple of 8",
        ),
        (
            [
                "stego",
                "train",
                "--codec",
                "en2d",
                "--covers",
                "{covers}",
                "--secrets",
                "{covers}",
                "--run-dir",
                "R",
                "--size",
                "32",
            ],
            "same folder",
        ),
        (
            [
                "stego",
                "train",
                "--codec",
                "en2d",
                "--covers",
                "{covers}",
                "--secrets",
                "{secrets}",
                "--run-dir",
                "R",
                "--size",
                "32",
                "--net-config",
                '{"widht": 3}',
            ],
            "widht",
        ),
        (["stego", "train", "--run-dir", "{root}/nothing", "--resume"], "not a run folder"),
        (
            [
                "stego",
                "report",
                "--codec",
                "{root}/nope",
                "--covers",
                "{covers}",
                "--secrets",
                "{secrets}",
                "--run-dir",
                "R",
            ],
            "checkpoint not found",
        ),
        (
            [
                "stego",
                "report",
                "--codec",
                "lsb",
                "--covers",
                "{root}/missing",
                "--secrets",
                "{secrets}",
                "--run-dir",
                "R",
            ],
            "not found",
        ),
        (
            [
                "stego",
                "detect-train",
                "--covers",
                "{covers}",
                "--stegos",
                "{secrets}",
                "--model",
                "bignet",
                "--run-dir",
                "R",
            ],
            "not a steganalyzer",
        ),
        (["stego", "detect", "--model", "{root}/nope"], "nothing to score"),
    ],
)
def test_bad_input_exits_2_with_message(data, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    subs = {"{covers}": str(data["covers"]), "{secrets}": str(data["secrets"]), "{root}": str(data["root"])}
    for k, v in subs.items():
        args = [a.replace(k, v) for a in args]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_codec_checkpoint_of_other_kind_via_cli(data, tmp_path, capsys):
    """A steganalyzer checkpoint passed as --codec is refused clearly."""
    from copymark.nets.steganalysis import XuNetConfig, build_steganalyzer
    from copymark.stego.detect import save_steganalyzer

    cfg = XuNetConfig(width=2)
    save_steganalyzer(tmp_path / "x", build_steganalyzer(cfg), cfg)
    assert main(["stego", "report", "--codec", str(tmp_path / "x"), "--covers", str(data["covers"]), "--secrets", str(data["secrets"]),
                 "--run-dir", str(tmp_path / "r"), "--size", "32"]) == 2  # fmt: skip
    assert "not a steganography codec" in capsys.readouterr().err


def test_blow_up_stops_and_keeps_last_good_checkpoint(data, tmp_path, capsys):
    run = tmp_path / "div"
    args = ["stego", "train", "--run-dir", str(run), "--no-progress", "--codec", "en2d", "--covers", str(data["covers"]),
            "--secrets", str(data["secrets"]), "--size", "32", "--iters", "6", "--batch-size", "4", "--holdout", "4",
            "--lr", "1e5", "--save-every", "1", "--net-config", '{"width": 4}']  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "diverged at iteration" in err and "last good checkpoint" in err
    metrics = json.loads((run / "metrics.json").read_text())
    bad_it = metrics["diverged"]["iteration"]
    latest = (run / "checkpoints" / "LATEST").read_text().strip()
    assert latest == f"iter-{bad_it - 1:08d}"  # nothing saved after the bad step
    assert not (run / "codec").exists()  # no codec exported from a diverged run


@pytest.mark.parametrize(
    "model,arch",
    [("xunet", '{"width": 2}'), ("yenet", '{"channels": 4, "deep_channels": 4, "final_channels": 4}')],
)
def test_detect_train_every_steganalyzer(data, tmp_path, capsys, model, arch):
    """XuNet and YeNet train from the CLI too (SRNet: test_detect_train_and_detect)."""
    run = tmp_path / model
    # covers paired with themselves is enough to exercise the pipeline (AUC is tested elsewhere)
    assert main(["stego", "detect-train", "--covers", str(data["covers"]), "--stegos", str(data["covers"]), "--model", model,
                 "--run-dir", str(run), "--iters", "2", "--batch-size", "4", "--holdout", "4", "--no-progress",
                 "--net-config", arch]) == 0  # fmt: skip
    out = _last_json(capsys.readouterr().out)
    assert out["iterations"] == 2 and (run / "detector" / "model.safetensors").is_file()
    assert json.loads((run / "detector" / "config.json").read_text())["config"]["kind"] == model


@pytest.mark.gpu
def test_train_on_gpu_with_amp(data, tmp_path, capsys):
    """GPU by configuration: --device cuda --amp bf16 trains, exports and reports."""
    run = tmp_path / "gpu"
    assert main(["stego", "train", "--codec", "en2d", "--covers", str(data["covers"]), "--secrets", str(data["secrets"]),
                 "--run-dir", str(run), "--size", "32", "--iters", "20", "--batch-size", "4", "--holdout", "4",
                 "--device", "cuda", "--amp", "bf16", "--no-progress"]) == 0  # fmt: skip
    out = _last_json(capsys.readouterr().out)
    assert out["quality"]["secret_psnr"]["n"] == 4
    from copymark.stego.codecs import load_codec

    codec = load_codec(run / "codec", expected_kind="en2d", map_location="cuda")
    c = torch.rand(2, 3, 32, 32, device="cuda")
    assert codec.reveal(codec.hide(c, c)).device.type == "cuda"
