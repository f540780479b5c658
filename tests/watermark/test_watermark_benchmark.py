"""``benchmarks/protection.py`` (imported from the file, so the test and the benchmark are one code
path): its pure parts in the default tier (presets, the secret pool's order, the goal checks at
their boundaries), and a tiny end-to-end run on the shared CIFAR-10 in the slow tier (every
method recorded, a rerun reuses every phase, no path of this machine in the record)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from tests.conftest import require_shared

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "protection.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("protection_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_presets_and_explicit_options(bench):
    study = bench.parse_args(["--work-dir", "w"])
    assert (study.preset, study.host, study.n_triggers, study.start_from, study.device) == (
        "study", "resnet18", 500, "scratch", "cuda"
    )  # fmt: skip
    assert study.null_iters == study.host_iters and study.null_models >= bench.GOALS["null_models_min"]
    cpu = bench.parse_args(["--preset", "cpu", "--iters", "7", "--host-iters", "11"])
    assert (cpu.host, cpu.iters, cpu.host_iters, cpu.threads) == ("small_cnn", 7, 11, 1)  # given options win
    assert cpu.null_iters == bench.PRESETS["cpu"]["null_iters"]


def test_round_robin_takes_one_per_class_in_turn(bench):
    a, b = [Path("a0"), Path("a1"), Path("a2")], [Path("b0")]
    assert bench.round_robin([a, b], 3) == [Path("a0"), Path("b0"), Path("a1")]
    with pytest.raises(SystemExit, match="only 4 images"):
        bench.round_robin([a, b], 5)


def _entry(acc=0.99, drop=1.0, psnr=35.0, queries=20, bound=9e-7, nulls=10, claims=0) -> dict:
    v = {"verdict": "owned", "false_claim_probability": bound, "queries": queries}
    return {
        "trigger_accuracy": acc,
        "main_task_test_accuracy": {"drop_points": drop},
        "trigger_psnr": {"mean": psnr},
        "verify_clean": v,
        "verify_noised": dict(v),
        "false_claims": {"null_models": nulls, "clean": claims, "noised": 0},
    }


def test_goals_at_their_boundaries(bench):
    assert all(bench.goals_met(_entry()).values())
    miss = {
        "trigger_accuracy_ge_99pct": _entry(acc=0.989),
        "main_task_drop_le_1_point": _entry(drop=1.01),
        "trigger_psnr_ge_35db": _entry(psnr=34.99),
        "owned_lt_1e-6_within_20_queries": _entry(queries=21),
        "zero_false_claims_ge_10_null_models": _entry(nulls=9),
    }
    for goal, entry in miss.items():
        met = bench.goals_met(entry)
        assert not met[goal], goal
        assert all(v for k, v in met.items() if k != goal and not k.startswith("owned")), (goal, met)
    assert not bench.goals_met(_entry(claims=1))["zero_false_claims_ge_10_null_models"]
    assert not bench.goals_met(_entry(bound=1e-6))["owned_lt_1e-6_within_20_queries"]  # strictly below 1e-6
    e = _entry()
    e["verify_noised"]["verdict"] = "undecided"
    met = bench.goals_met(e)
    assert met["owned_lt_1e-6_within_20_queries"] and not met["owned_lt_1e-6_within_20_queries_under_noise"]


@pytest.mark.slow
def test_tiny_run_records_every_method_and_reuses_its_phases(bench, tmp_path, capsys):
    data = require_shared("cifar10").parent
    require_shared("tiny_imagenet")
    work, out = tmp_path / "work", tmp_path / "out.json"
    args = ["--data", str(data), "--preset", "cpu", "--host-iters", "40", "--null-models", "2", "--null-iters",
            "20", "--codec-iters", "20", "--codec-finetune-iters", "5", "--iters", "20", "--n-triggers", "20",
            "--n-train", "30", "--codec-covers", "40", "--work-dir", str(work), "--out", str(out)]  # fmt: skip
    n = torch.get_num_threads()
    try:
        assert bench.main(args) == 0
        first = json.loads(out.read_text())
        assert bench.main(args) == 0
    finally:
        torch.set_num_threads(n)
    again = json.loads(out.read_text())
    assert set(first["methods"]) == set(bench.METHOD_NAMES)
    assert set(again["seconds"]["reused_phases"]) == set(first["seconds"]["phases"])  # nothing retrained
    for name, m in again["methods"].items():
        assert m["triggers"] == 20 and m["trigger_correct"] == round(20 * m["trigger_accuracy"])
        assert m["trigger_accuracy"] == first["methods"][name]["trigger_accuracy"]
        assert m["false_claims"]["null_models"] == 2 and set(m["goals_met"]) == set(bench.goals_met(m))
        assert (m["secret_psnr"] is None) == (name == "acsac19")
        assert m["verify_clean"]["queries"] <= 20 and 0 <= m["verify_noised"]["trigger_accuracy_all"] <= 1
    text = json.dumps({k: v for k, v in again.items() if k != "command"})
    assert str(tmp_path) not in text and str(data) not in text  # names relative to the data root only
