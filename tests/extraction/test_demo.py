"""``copymark demo``: the whole attack on built-in photos (tiny settings here; full size in the slow tier)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from copymark import images as I
from copymark.cli import main
from copymark.extraction.demo import DemoConfig, run_demo

TINY = {"budget": 24, "iters": 3, "batch_size": 2, "ngf": 8, "n_boot": 200, "progress": False}


def _metrics(report: Path) -> dict:
    """The evaluation's metrics.json of a demo run (the report sits in the demo's run folder)."""
    return json.loads((report.parent / "evaluation" / "metrics.json").read_text())


def test_tiny_demo_end_to_end_and_reproducible(tmp_path):
    r1 = run_demo(DemoConfig(**TINY, runs_root=tmp_path / "a"), echo=lambda *_: None)
    r2 = run_demo(DemoConfig(**TINY, runs_root=tmp_path / "b"), echo=lambda *_: None)
    run = r1.parent
    m1, m2 = _metrics(r1), _metrics(r2)
    t = m1["sets"]["test"]
    assert set(t["tables"]) == {"A", "B", "C"}
    # provenance from the extraction's store: every query of the budget, the strategy, the pairs
    ext = m1["provenance"]["extraction"]
    assert ext["queries_spent"] == TINY["budget"] == ext["budget"] and ext["strategy"] == "diverse"
    assert m1["provenance"]["training"]["pairs"] == TINY["budget"]
    assert m1["provenance"]["evaluation"]["paid"] == t["n"] == 3
    # the two style examples are too few for a set-level metric, and the report says so
    assert any("need tens" in n for n in t["notes"])
    assert len(list((run / "evaluation" / "outputs" / "test" / "style").glob("*.png"))) == 2
    # same seed, same numbers
    assert m1["sets"]["test"]["tables"]["B"]["metrics"] == m2["sets"]["test"]["tables"]["B"]["metrics"]
    # attacker, test and the owner's style photos are disjoint
    names = {k: {p.stem for p in I.list_images(run / "photos" / k)} for k in ("attacker", "test", "owner_photos")}
    assert names["test"] and names["attacker"] and names["owner_photos"]
    assert not (names["test"] & names["attacker"]) and not (names["test"] & names["owner_photos"])
    assert not (names["attacker"] & names["owner_photos"])
    # the attacker only ever reached the victim over HTTP: every paid answer is in the server's log
    log = [json.loads(line) for line in (run / "server" / "requests.jsonl").read_text().splitlines()]
    assert sum(1 for e in log if e.get("status") == 200) == TINY["budget"] + 3  # 3 test answers, once
    # report written, self-contained, with the provenance and the style examples
    html = r1.read_text()
    assert "surrogate vs victim" in html and "http://" not in html
    assert f"{TINY['budget']} of {TINY['budget']} (100% of the budget), strategy diverse" in html
    assert "Target-style examples" in html and "need tens" in html
    assert json.loads((run / "metrics.json").read_text())["headline"] == m1["headline"]


def test_demo_cli_rejects_unknown_task(tmp_path, capsys):
    code = main(["demo", "--task", "anime", "--runs", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown demo task" in err and "Traceback" not in err


def _latest_run(root: Path, task: str) -> dict:
    runs = sorted(root.glob(f"demo-{task}-*"))
    assert len(runs) == 1, runs
    return {
        **json.loads((runs[0] / "evaluation" / "metrics.json").read_text()),
        **json.loads((runs[0] / "metrics.json").read_text()),
    }


@pytest.mark.slow
def test_full_demo_copies_the_victim(tmp_path, capsys):
    """`make demo` as the README runs it: table B clearly beats both trivial baselines."""
    assert main(["demo", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "report: " in out and "surrogate vs" in out
    m = _latest_run(tmp_path, "style")
    h = m["headline"]["test"]
    assert h["baseline"] == "identity_vs_victim"
    assert h["surrogate_vs_victim"] >= h["baseline_vs_victim"] + 2.0, h
    assert h["surrogate_vs_victim"] >= h["untrained_vs_victim"] + 2.0, h
    gain = m["sets"]["test"]["baselines"]["identity_vs_victim"]["psnr_rgb"]["paired_gain"]
    assert gain["ci95"][0] > 0, gain  # every resample of the test photos gains over the identity
    print(json.dumps({"headline": h, "timings_s": m["timings_s"]}))


@pytest.mark.slow
def test_full_sr_demo(tmp_path, capsys):
    """`copymark demo --task sr`: B clearly beats bicubic; C (vs ground truth) close to A."""
    assert main(["demo", "--task", "sr", "--runs", str(tmp_path)]) == 0
    m = _latest_run(tmp_path, "sr")
    assert m["task"] == "sr" and m["scale"] == 4
    h = m["headline"]["test"]
    assert h["metric"] == "psnr_y" and h["baseline"] == "bicubic_vs_victim"
    assert h["surrogate_vs_victim"] >= h["baseline_vs_victim"] + 2.0, h
    assert h["surrogate_vs_victim"] >= h["untrained_vs_victim"] + 2.0, h
    t = m["sets"]["test"]["tables"]
    assert abs(t["C"]["metrics"]["psnr_y"]["mean"] - t["A"]["metrics"]["psnr_y"]["mean"]) < 0.5, t
    print(json.dumps({"headline": h, "timings_s": m["timings_s"]}))
