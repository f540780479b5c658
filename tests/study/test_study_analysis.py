"""Analysis of ratings: simulation planning checks, agreement with the stats functions, CLI, bad CSVs."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import stats

from copymark.cli import main
from copymark.errors import DataError
from copymark.stats import pooled_sd, tost_ind_n
from copymark.study.analysis import analyze_ratings, load_ratings
from copymark.study.simulate import simulate_ratings
from copymark.study.store import CSV_FIELDS, read_csv


@pytest.mark.parametrize("seed", [0, 1])
def test_simulation_equivalent_at_d0_not_at_d08(seed):
    """125 participants x 10 ratings per model, as in the extraction paper."""
    null = analyze_ratings(simulate_ratings(125, 0.0, per_participant=20, seed=seed))
    assert null.groups["victim"].n == 1250 and null.groups["surrogate"].n == 1250
    assert null.groups["victim"].participants == 125
    assert null.tost.equivalent and null.tost.p < 0.05
    assert null.verdict.startswith("Verdict: equivalent")
    big = analyze_ratings(simulate_ratings(125, 0.8, per_participant=20, seed=seed))
    assert not big.tost.equivalent and big.tost.p > 0.5
    assert big.verdict.startswith("Verdict: not equivalent")
    assert big.welch.p < 1e-20
    assert 0.6 < big.tost.cohens_d < 1.0  # latent d = 0.8, attenuated a little by the 1-5 scale


def test_analysis_uses_the_verified_statistics():
    rows = simulate_ratings(40, 0.2, per_participant=10, seed=4, attention_checks=2)
    an = analyze_ratings(rows, bound_d=0.4, alpha=0.05)
    v = np.array([r["score"] for r in rows if r["model"] == "victim"], float)
    s = np.array([r["score"] for r in rows if r["model"] == "surrogate"], float)
    ref = stats.ttest_ind(v, s, equal_var=False)
    assert an.welch.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert an.tost.high == pytest.approx(0.4 * pooled_sd(v.std(ddof=1), v.size, s.std(ddof=1), s.size), rel=1e-12)
    assert an.tost.p == max(an.tost.p_low, an.tost.p_high)
    assert an.groups["victim"].mean == pytest.approx(v.mean())
    assert sum(an.groups["victim"].counts) == v.size
    # attention checks are excluded from the comparison and reported
    assert an.attention["checks"] == 80
    assert an.exclusions["ratings_analysed"] == 400
    assert an.power.ratings_per_model_needed == int(np.ceil(tost_ind_n(0.4)))
    assert an.power.participants_needed == int(np.ceil(an.power.ratings_per_model_needed / 5))
    per = {(r["input_id"], r["model"]): r for r in an.per_image}
    some = next(iter(per))
    vals = [r["score"] for r in rows if r["input_id"] == some[0] and r["model"] == some[1]]
    assert per[some]["n"] == len(vals) and per[some]["mean"] == pytest.approx(np.mean(vals))


def test_drop_inattentive_participants():
    rows = simulate_ratings(60, 0.0, per_participant=10, seed=2, attention_checks=2, attentive=0.7)
    an = analyze_ratings(rows)
    failed = {r["participant"] for r in rows if r["model"] == "attention" and r["score"] != r["expected_score"]}
    assert an.attention["participants_failed"] == len(failed) > 0
    dropped = analyze_ratings(rows, drop_inattentive=True)
    assert dropped.groups["victim"].participants == 60 - len(failed)


def test_cli_simulate_then_analyze(tmp_path, capsys):
    csv = tmp_path / "sim.csv"
    assert main(["study", "simulate", "--participants", "125", "--effect", "0", "--out", str(csv), "--seed", "1"]) == 0
    assert csv.read_text().splitlines()[0] == ",".join(CSV_FIELDS)
    out_dir = tmp_path / "report"
    capsys.readouterr()
    assert main(["study", "analyze", str(csv), "--out", str(out_dir)]) == 0
    text = capsys.readouterr().out
    assert "Verdict: equivalent" in text and "p_low=" in text and "p_high=" in text and "90% CI" in text
    assert "tightest bound established at alpha 0.05: raw +/-" in text
    for name in (
        "analysis.md",
        "analysis.html",
        "analysis.json",
        "per_image.csv",
        "scores.png",
        "score_histograms.png",
        "per_image.png",
        "config.json",
        "env.json",
        "metrics.json",
        "log.txt",
    ):
        assert (out_dir / name).is_file() and (out_dir / name).stat().st_size > 100, name
    import json

    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["tost"]["equivalent"] is True and metrics["victim"]["n"] == 1250
    assert json.loads((out_dir / "config.json").read_text())["bound_d"] == 0.3
    # the same --out again is refused (a run is never overwritten)
    assert main(["study", "analyze", str(csv), "--out", str(out_dir)]) == 2
    md = (out_dir / "analysis.md").read_text()
    assert "**equivalent**" in md and "participants" in md and "| input000 |" in md
    assert (out_dir / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out_dir / "analysis.html").read_text()
    assert "<strong>equivalent</strong>" in html and 'src="scores.png"' in html

    csv8 = tmp_path / "sim8.csv"
    assert main(["study", "simulate", "--participants", "40", "--effect", "0.8", "--out", str(csv8)]) == 0
    capsys.readouterr()
    assert main(["study", "analyze", str(csv8)]) == 0
    assert "Verdict: not equivalent" in capsys.readouterr().out
    assert len(list((tmp_path / "sim8-analysis").glob("analyze-*/analysis.md"))) == 1


def test_cli_export_and_analyze_a_study(study_dir, tmp_path, capsys):
    import re

    from copymark.study.app import create_app

    with TestClient(create_app(study_dir, "pw")) as c:
        for k in range(4):  # four participants, each in a fresh session
            c.cookies.clear()
            c.post("/consent", data={"agree": "yes", "pid": f"P-{k}"})
            for step in range(7):
                html = c.get("/rate").text
                f = dict(re.findall(r'name="(position|item_id|nonce)" value="([^"]+)"', html))
                m = re.search(r"please choose <strong>(\d)", html)
                c.post("/rate", data={**f, "score": m.group(1) if m else str(1 + (step + k) % 5)})
    out = tmp_path / "ratings.csv"
    assert main(["study", "export", str(study_dir), "--out", str(out)]) == 0
    rows = read_csv(out)
    assert len(rows) == 28 and {r["model"] for r in rows} == {"victim", "surrogate", "attention"}
    key = lambda r: (
        str(r["participant"]),
        r["position"],
        r["item_id"],
        r["model"],
        r["score"],
        str(r["expected_score"]),
    )
    assert [key(r) for r in rows] == [key(r) for r in load_ratings(study_dir)]
    capsys.readouterr()
    assert main(["study", "analyze", str(study_dir)]) == 0
    assert "Verdict:" in capsys.readouterr().out
    assert len(list((study_dir / "analysis").glob("analyze-*/analysis.html"))) == 1


def test_cli_create(image_folders, tmp_path, capsys):
    out = tmp_path / "new_study"
    assert (
        main(
            [
                "study",
                "create",
                "--victim-dir",
                str(image_folders["victim"]),
                "--surrogate-dir",
                str(image_folders["surrogate"]),
                "--style-examples",
                str(image_folders["examples"]),
                "--out",
                str(out),
                "--per-participant",
                "10",
                "--seed",
                "2",
                "--attention-checks",
                "1",
            ]
        )
        == 0
    )
    assert (out / "study.json").is_file()
    assert (
        main(
            [
                "study",
                "create",
                "--victim-dir",
                str(image_folders["victim"]),
                "--surrogate-dir",
                str(image_folders["surrogate"]),
                "--style-examples",
                str(image_folders["examples"]),
                "--out",
                str(tmp_path / "x"),
                "--per-participant",
                "7",
            ]
        )
        == 2
    )
    assert "even" in capsys.readouterr().err


def test_bad_csv_is_a_clear_error(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text(",".join(CSV_FIELDS) + "\n1,0,a,in1,victim,6,,,1\n")
    with pytest.raises(DataError, match=r"r.csv:2: score 6 is outside 1-5"):
        read_csv(p)
    p.write_text("participant,score\n1,3\n")
    with pytest.raises(DataError, match="missing column"):
        read_csv(p)
    p.write_text(",".join(CSV_FIELDS) + "\n1,0,a,in1,victim,4,,,1\n")
    with pytest.raises(DataError, match="at least 2"):
        analyze_ratings(read_csv(p))
    assert main(["study", "analyze", str(tmp_path / "missing.csv")]) == 2


def test_cli_power(capsys):
    assert main(["study", "power", "--bound-d", "0.3", "--per-participant", "20"]) == 0
    out = capsys.readouterr().out
    # 191 ratings per model (exact t-based TOST size, cf. TOSTER's normal approximation 190.3) -> 20 participants
    assert "191 ratings per model = 20 participants" in out
    assert "176 ratings per model" in out  # statsmodels TTestIndPower: 175.4 -> 176


def test_report_json_is_strict_for_tiny_samples(tmp_path):
    import json

    from copymark.study.analysis import write_report

    an = analyze_ratings(simulate_ratings(3, 0.0, per_participant=4, n_inputs=40, seed=0))
    paths = write_report(an, tmp_path / "rep")

    def no_nan(tok):
        raise AssertionError(f"non-standard JSON constant {tok}")

    d = json.loads(paths["json"].read_text(), parse_constant=no_nan)
    assert any(r["sd"] is None for r in d["per_image"])  # single ratings have no SD
    assert d["tost"]["equivalent"] is False and "not equivalent" in d["verdict"]
    assert "inconclusive" in " ".join(d["notes"])


def test_participant_level_check_is_a_paired_tost():
    from copymark.stats import tost_one_sample

    rows = simulate_ratings(50, 0.0, per_participant=10, seed=8)
    an = analyze_ratings(rows)
    by = {}
    for r in rows:
        by.setdefault(r["participant"], {"victim": [], "surrogate": []})[r["model"]].append(r["score"])
    diffs = [np.mean(g["victim"]) - np.mean(g["surrogate"]) for g in by.values()]
    ref = tost_one_sample(diffs, an.tost.low, an.tost.high)
    assert an.participant_level["participants"] == 50
    assert an.participant_level["p"] == pytest.approx(ref.p) and an.participant_level["equivalent"] == ref.equivalent


def test_tightest_bound_from_raw_ratings():
    """The smallest symmetric bound the ratings establish at alpha, checked with statsmodels' ttost_ind."""
    from statsmodels.stats.weightstats import ttost_ind

    rows = simulate_ratings(125, 0.1, per_participant=20, seed=3)
    an = analyze_ratings(rows)
    v = np.array([r["score"] for r in rows if r["model"] == "victim"], float)
    s = np.array([r["score"] for r in rows if r["model"] == "surrogate"], float)
    b = an.tost.tightest_bound
    p, _, _ = ttost_ind(v, s, -b, b, usevar="unequal")
    assert p == pytest.approx(0.05, rel=1e-8)
    assert an.tost.tightest_bound_d == pytest.approx(b / pooled_sd(v.std(ddof=1), v.size, s.std(ddof=1), s.size))
    assert an.tost.equivalent == (an.tost.tightest_bound_d < 0.3)
    from copymark.study.analysis import render_markdown

    assert f"raw [{-b:+.3f}, {b:+.3f}]" in render_markdown(an, {})
