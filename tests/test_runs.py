"""copymark.runs: run folders with config/env/metrics/log, refusal to overwrite, resume."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from copymark import runs
from copymark.errors import CopymarkError
from copymark.runs import create_run, new_run_dir, open_run


def test_create_run_writes_config_env_metrics_log(tmp_path):
    cfg = {"kind": "pix2pix", "lr": 2e-4, "data": {"a": "x", "b": "y"}}
    run = create_run(tmp_path / "r", cfg, device="cpu", seed=123)
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == cfg
    assert run.config == cfg
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    for key in (
        "python",
        "torch",
        "cuda",
        "cuda_available",
        "device",
        "seed",
        "git_commit",
        "copymark",
        "argv",
        "time",
    ):
        assert key in env, key
    assert env["seed"] == 123 and env["device"] == "cpu" and env["torch"] == torch.__version__
    assert env["cuda_available"] == torch.cuda.is_available()
    # from a git checkout the commit is recorded; from an installed wheel it is None
    in_git = (
        subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(runs.__file__).parent, capture_output=True).returncode
        == 0
    )
    if in_git:
        assert re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])
    else:
        assert env["git_commit"] is None
    assert run.metrics() == {}
    run.update_metrics({"psnr": 28.5})
    merged = run.update_metrics({"ssim": 0.8})
    assert merged == {"psnr": 28.5, "ssim": 0.8}
    assert json.loads((tmp_path / "r" / "metrics.json").read_text()) == merged
    run.log("step %d loss %.3f", 5, 0.25)
    for h in run.logger.handlers:
        h.flush()
    log = (tmp_path / "r" / "log.txt").read_text()
    assert "created run" in log and "step 5 loss 0.250" in log


def test_create_run_refuses_existing_run(tmp_path):
    create_run(tmp_path / "r", {"kind": "x"}, seed=0).update_metrics({"keep": 1})
    with pytest.raises(CopymarkError, match="already holds a run"):
        create_run(tmp_path / "r", {"kind": "other"}, seed=1)
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == {"kind": "x"}  # untouched
    assert json.loads((tmp_path / "r" / "metrics.json").read_text()) == {"keep": 1}


def test_create_run_reuses_empty_folder(tmp_path):
    (tmp_path / "r").mkdir()
    create_run(tmp_path / "r", {"kind": "x"})
    assert (tmp_path / "r" / "env.json").is_file()


def test_open_run_resumes_and_keeps_metrics(tmp_path):
    run = create_run(tmp_path / "r", {"kind": "x", "steps": 10}, device="cpu", seed=7)
    run.update_metrics({"step": 5, "loss": 0.5})
    resumed = open_run(tmp_path / "r")
    assert resumed.config == {"kind": "x", "steps": 10}
    assert resumed.metrics() == {"step": 5, "loss": 0.5}
    resumed.update_metrics({"step": 10})
    assert resumed.metrics() == {"step": 10, "loss": 0.5}
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    assert env["seed"] == 7 and len(env["resumes"]) == 1 and "torch" in env["resumes"][0]
    open_run(tmp_path / "r")
    assert len(json.loads((tmp_path / "r" / "env.json").read_text())["resumes"]) == 2
    for h in resumed.logger.handlers:
        h.flush()
    log = (tmp_path / "r" / "log.txt").read_text()
    assert "created run" in log and "resumed run" in log  # appended, not overwritten


def test_open_run_on_non_run_folder(tmp_path):
    with pytest.raises(CopymarkError, match="not a run folder"):
        open_run(tmp_path)


def test_new_run_dir_unique(tmp_path):
    a = new_run_dir(tmp_path, "train")
    assert a.parent == tmp_path and re.fullmatch(r"train-\d{8}-\d{6}", a.name)
    a.mkdir()
    b = new_run_dir(tmp_path, "train")
    assert b != a and not b.exists()


def test_create_or_reuse_run_reopens_the_same_config_and_refuses_another(tmp_path):
    from copymark.errors import CopymarkError
    from copymark.runs import create_or_reuse_run

    cfg = {"victim": "a", "sets": {"test": "t", "n": 3}, "seed": 0}
    run = create_or_reuse_run(tmp_path / "r", cfg)
    run.update_metrics({"x": 1})
    again = create_or_reuse_run(tmp_path / "r", dict(cfg))
    assert again.metrics() == {"x": 1}  # reopened, nothing lost
    with pytest.raises(CopymarkError, match=r"differs in: sets\.n, victim"):
        create_or_reuse_run(tmp_path / "r", {**cfg, "victim": "b", "sets": {"test": "t", "n": 4}})
    assert again.metrics() == {"x": 1}


def test_environment_never_records_an_api_key(tmp_path, monkeypatch):
    from copymark.runs import redact_argv

    argv = ["copymark", "evaluate", "--api-key", "sk-secret-1", "--eval-api-key=sk-secret-2", "--test", "t/"]
    assert redact_argv(argv) == ["copymark", "evaluate", "--api-key", "***", "--eval-api-key=***", "--test", "t/"]
    monkeypatch.setattr("sys.argv", argv)
    create_run(tmp_path / "r", {"x": 1})
    env = (tmp_path / "r" / "env.json").read_text()
    assert "sk-secret" not in env and "***" in env
