"""Codec and steganalyzer runs on the one orchestrator: refused starts leave no folder (the
``--amp fp16`` half-run of issue 10), --init-from starts the nets from another run, a longer
run is a new run whose command the refusal names, and exports go through the net checkpoint path."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from stego_helpers import COVER_SAMPLES, SECRET_SAMPLES, write_tiles

from copymark.cli import main
from copymark.errors import ConfigError, WeightsError

GGL = '{"filters": 4, "prep_layers": 1, "hide_layers": 1, "reveal_layers": 1}'


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    covers = write_tiles(root / "covers", COVER_SAMPLES, limit=16)
    return {"root": root, "covers": covers, "secrets": write_tiles(root / "secrets", SECRET_SAMPLES, limit=16)}


def _codec_args(data, run, *extra):
    return ["stego", "train", "--codec", "gglnet", "--covers", str(data["covers"]), "--secrets", str(data["secrets"]),
            "--run-dir", str(run), "--size", "32", "--iters", "2", "--batch-size", "4", "--holdout", "4",
            "--net-config", GGL, "--no-progress", *extra]  # fmt: skip


def _detect_args(data, run, *extra):
    # covers paired with themselves: enough to exercise the run (the AUC is tested elsewhere)
    return ["stego", "detect-train", "--model", "xunet", "--covers", str(data["covers"]), "--stegos", str(data["covers"]),
            "--run-dir", str(run), "--iters", "2", "--batch-size", "4", "--holdout", "4",
            "--net-config", '{"width": 2}', "--no-progress", *extra]  # fmt: skip


def _first_losses(run):
    return json.loads((run / "losses.jsonl").read_text().splitlines()[0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is valid where CUDA is")
@pytest.mark.parametrize("args", [_codec_args, _detect_args])
def test_fp16_on_cpu_leaves_no_half_made_run(args, data, tmp_path, capsys):
    """Issue 10: `stego train --amp fp16` on CPU exited 2 but left config.json, env.json and log.txt,
    so a rerun said "already holds a run" and --resume failed the same way."""
    run = tmp_path / "run"
    assert main(args(data, run, "--amp", "fp16")) == 2
    assert "fp16 needs CUDA" in capsys.readouterr().err
    assert not run.exists()
    assert main(args(data, run)) == 0  # the rerun without fp16 starts normally


@pytest.mark.parametrize(
    "args,extra,message",
    [
        (_codec_args, ["--batch-size", "64"], "fewer than one batch"),
        (_codec_args, ["--net-config", '{"filterz": 4}'], "filterz"),
        (_codec_args, ["--size", "36"], "multiple of 8"),
        (_codec_args, ["--device", "nonsense"], "unknown device"),
        (_codec_args, ["--init-from", "{root}/nope"], "not found"),
        (_detect_args, ["--batch-size", "64"], "fewer than one batch"),
        (_detect_args, ["--net-config", '{"widht": 2}'], "widht"),
        (_detect_args, ["--stegos", "{root}/nope"], "not found"),
        (_detect_args, ["--init-from", "{root}/nope"], "not found"),
    ],
)
def test_refused_start_leaves_no_folder(args, extra, message, data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(args(data, run, *[a.replace("{root}", str(data["root"])) for a in extra])) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize(
    "extra,message", [(["--size", "36"], "multiple of 8"), (["--codec", "{root}/nope"], "checkpoint not found")]
)
def test_refused_report_leaves_no_folder(extra, message, data, tmp_path, capsys):
    run = tmp_path / "rep"
    args = ["stego", "report", "--codec", "lsb", "--covers", str(data["covers"]), "--secrets", str(data["secrets"]),
            "--run-dir", str(run), "--size", "32", *[a.replace("{root}", str(data["root"])) for a in extra]]  # fmt: skip
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()


def test_refused_resume_leaves_the_run_untouched(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_codec_args(data, run)) == 0
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    assert main(["stego", "train", "--run-dir", str(run), "--resume", "--device", "nonsense"]) == 2
    assert main(["stego", "detect-train", "--run-dir", str(run), "--resume"]) == 2  # a codec run, not a detector run
    assert "a 'stego-train' run, not a 'stego-detect-train' run" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before


@pytest.mark.parametrize("args,export", [(_codec_args, "codec"), (_detect_args, "detector")])
def test_init_from_changes_the_first_loss(args, export, data, tmp_path):
    source = tmp_path / "source"
    assert main(args(data, source, "--lr", "0.05")) == 0
    fresh, started, from_export = tmp_path / "fresh", tmp_path / "started", tmp_path / "from_export"
    assert main(args(data, fresh, "--iters", "1")) == 0
    assert main(args(data, started, "--iters", "1", "--init-from", str(source))) == 0
    assert main(args(data, from_export, "--iters", "1", "--init-from", str(source / export))) == 0
    a, b, c = _first_losses(fresh), _first_losses(started), _first_losses(from_export)
    assert a["loss"] != pytest.approx(b["loss"], rel=1e-6, abs=0)
    assert b == c  # the run's last checkpoint and its exported net hold the same weights
    assert list(json.loads((started / "metrics.json").read_text())["init_from"]["nets"]) == [export]


def test_init_from_another_architecture_is_refused(data, tmp_path, capsys):
    source = tmp_path / "source"
    assert main(_codec_args(data, source)) == 0
    run = tmp_path / "run"
    other = GGL.replace('"filters": 4', '"filters": 3')
    assert main(_codec_args(data, run, "--net-config", other, "--init-from", str(source))) == 2
    assert "filters: 4 there, 3 here" in capsys.readouterr().err and not run.exists()


@pytest.mark.parametrize("args,kind", [(_codec_args, "stego-train"), (_detect_args, "stego-detect-train")])
def test_resume_longer_names_a_command_that_works(args, kind, data, tmp_path):
    from copymark.stego.training import resume_codec, resume_detector

    old = tmp_path / "old"
    assert main(args(data, old, "--seed", "7")) == 0
    resume = resume_codec if kind == "stego-train" else resume_detector
    with pytest.raises(ConfigError) as e:
        resume(old, iters=3)
    argv = shlex.split(e.value.hint.split(": ", 1)[1])
    assert argv[0] == "copymark" and "--init-from" in argv
    assert main([*argv[1:], "--no-progress"]) == 0
    new_cfg = json.loads((tmp_path / "old-3" / "config.json").read_text())
    old_cfg = json.loads((old / "config.json").read_text())
    assert new_cfg["init_from"] == str(old) and new_cfg["loop"]["iters"] == 3
    assert new_cfg["procedure"] == old_cfg["procedure"] and new_cfg["data"] == old_cfg["data"]
    assert {**new_cfg["loop"], "iters": 2} == old_cfg["loop"]


def test_exports_are_net_checkpoints_and_refuse_corruption(data, tmp_path):
    """A codec / detector export is a plain net checkpoint (nets.build.load_net reads it), and its
    loaders refuse NaN weights and unknown config.json keys like every net checkpoint."""
    from safetensors.torch import load_file, save_file

    from copymark.nets.build import load_net
    from copymark.stego.codecs import load_codec
    from copymark.stego.detect import load_steganalyzer

    codec_run, det_run = tmp_path / "c", tmp_path / "d"
    assert main(_codec_args(data, codec_run)) == 0 and main(_detect_args(data, det_run)) == 0
    net, cfg = load_net(codec_run / "codec")
    codec = load_codec(codec_run / "codec", expected_kind="gglnet")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(codec.hide(x, x), net.encode(x, x).clamp(0, 1))
    assert load_net(det_run / "detector", expected_kind="xunet")[1] == load_steganalyzer(det_run / "detector")[1]

    w = codec_run / "codec" / "model.safetensors"
    state = load_file(str(w))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(w))
    with pytest.raises(WeightsError, match=f"tensor '{name}' holds 1 NaN/inf"):
        load_codec(codec_run / "codec")
    meta = json.loads((det_run / "detector" / "config.json").read_text())
    (det_run / "detector" / "config.json").write_text(json.dumps({**meta, "extra_key": 1}))
    with pytest.raises(WeightsError, match="unknown top-level key 'extra_key'"):
        load_steganalyzer(det_run / "detector")
