"""``copymark study analyze --from-summary``: the extraction study's published figures, checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.weightstats import ttost_ind

from copymark.cli import main
from copymark.errors import ConfigError, DataError
from copymark.study.summary import analyze_summary, load_summary

DATA = Path(__file__).parent / "data"
PAPER_JSON = DATA / "extraction_study_summary.json"
PAPER_CSV = DATA / "extraction_study_summary.csv"


def with_moments(mean: float, sd: float, n: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).normal(size=n)
    return mean + sd * (z - z.mean()) / z.std(ddof=1)


def by_name(an):
    return {c.name: c for c in an.settings}


def figure(check, name, reading=""):
    return next(f for f in check.figures if f.figure == name and f.reading == reading)


def test_the_papers_figures_and_the_n_that_makes_them_consistent():
    an = analyze_summary(load_summary(PAPER_JSON))
    monet, selfie = by_name(an)["Monet-to-Photo"], by_name(an)["Selfie-to-Anime"]
    # at the stated n = 125 x 10 = 1250 per model: scipy's Welch from the same summaries
    for c in (monet, selfie):
        ref = stats.ttest_ind_from_stats(
            c.victim.mean, c.victim.sd, c.victim.n, c.surrogate.mean, c.surrogate.sd, c.surrogate.n, equal_var=False
        )
        assert c.welch.p == pytest.approx(ref.pvalue, rel=1e-10)
        assert c.tost.equivalent  # the paper's conclusion at d = +/-0.3 holds for both
    assert monet.welch.p == pytest.approx(1.60e-5, rel=0.01)  # published 1.8e-8: 3 decades apart
    assert not monet.welch_p_range[0] <= 1.8e-8 <= monet.welch_p_range[1]  # not even within the rounding
    assert selfie.welch_p_range[0] <= 0.63 <= selfie.welch_p_range[1]  # Selfie's p = 0.63 is consistent
    # the n that reproduces Monet's p; scipy at that n gives the published p back
    f = figure(monet, "welch_p")
    assert 2100 < f.n < 2160 and f.n_range[0] < f.n < f.n_range[1]
    n = round(f.n)
    p_at = stats.ttest_ind_from_stats(3.20, 1.59, n, 2.91, 1.76, n, equal_var=False).pvalue
    assert p_at == pytest.approx(1.8e-8, rel=0.02)
    # the published tightest bounds (0.38, 0.11) read as raw score points fit the same n; as Cohen's d they do not
    for c, bound in ((monet, 0.38), (selfie, 0.11)):
        g = figure(c, "tightest_bound", "raw")
        x = with_moments(c.victim.mean, c.victim.sd, round(g.n), 1)
        y = with_moments(c.surrogate.mean, c.surrogate.sd, round(g.n), 2)
        p_sm, _, _ = ttost_ind(x, y, -bound, bound, usevar="unequal")
        assert p_sm == pytest.approx(0.05, abs=2e-4)  # statsmodels: at that n the bound is just reached
        assert c.consistent_n["raw"] is not None and c.consistent_n["d"] is None
    lo, hi = an.consistent_n["raw"]
    assert 1950 < lo < hi < 2320 and not lo <= 1250 <= hi
    assert an.consistent_n["d"] is None
    # the tightest bounds at the stated n
    assert (round(monet.tost.tightest_bound, 3), round(selfie.tost.tightest_bound, 3)) == (0.4, 0.138)


def test_csv_and_json_give_the_same_checks():
    a, b = analyze_summary(load_summary(PAPER_JSON)), analyze_summary(load_summary(PAPER_CSV))
    assert [c.name for c in a.settings] == [c.name for c in b.settings]
    for x, y in zip(a.settings, b.settings):
        assert (x.welch.p, x.tost.tightest_bound) == (y.welch.p, y.tost.tightest_bound)
        assert [(f.figure, f.reading, f.n, f.n_range) for f in x.figures] == [
            (f.figure, f.reading, f.n, f.n_range) for f in y.figures
        ]
    assert a.consistent_n == b.consistent_n


def test_cli_from_summary_writes_a_run_folder(tmp_path, capsys):
    src = tmp_path / "paper.json"
    shutil.copy(PAPER_JSON, src)
    out = tmp_path / "check"
    assert main(["study", "analyze", "--from-summary", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Monet-to-Photo: Welch t(2472.7) = 4.323, p = 1.6e-05" in text
    assert "published welch_p = 1.8e-08: reproduced at n = 2129 per model" in text
    assert "tightest bound at alpha 0.05: raw +/-0.400 = d +/-0.239" in text
    assert "All settings, bounds as raw score points: n per model in 1978 - 2296" in text
    for name in ("summary_check.md", "summary_check.html", "summary_check.json", "config.json", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["Selfie-to-Anime"]["tightest_bound"] == pytest.approx(0.1376, abs=1e-4)
    assert metrics["consistent_n"]["d"] is None
    assert "| Welch p | 1.8e-08 | 1.6e-05" in (out / "summary_check.md").read_text()
    assert "<td>2129</td>" in (out / "summary_check.html").read_text()
    assert json.loads((out / "config.json").read_text())["kind"] == "study-analyze-summary"
    # the default folder: beside the file
    assert main(["study", "analyze", "--from-summary", str(src)]) == 0
    assert len(list((tmp_path / "paper-analysis").glob("analyze-*/summary_check.md"))) == 1


def test_bad_summary_files_are_clear_errors_and_make_no_folder(tmp_path, capsys):
    good = json.loads(PAPER_JSON.read_text())
    cases = {
        "typo.json": ({**good, "setings": []}, "unknown key 'setings'"),
        "sd.json": ({"settings": [{**good["settings"][0], "victim": {"mean": 3, "sd": 0, "n": 10}}]}, "sd"),
        "n.json": ({"settings": [{**good["settings"][0], "victim": {"mean": 3, "sd": 1, "n": 1}}]}, "n"),
        "p.json": ({"settings": [{**good["settings"][0], "reported": {"welch_p": 1.5}}]}, "welch_p"),
    }
    for name, (data, needle) in cases.items():
        p = tmp_path / name
        p.write_text(json.dumps(data))
        with pytest.raises(ConfigError, match=needle):
            load_summary(p)
        assert main(["study", "analyze", "--from-summary", str(p), "--out", str(tmp_path / f"out-{name}")]) == 2
        assert not (tmp_path / f"out-{name}").exists()
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("setting,victim_mean,victim_sd\nx,3,1\n")
    with pytest.raises(ConfigError, match="missing column"):
        load_summary(bad_csv)
    bad_csv.write_text(PAPER_CSV.read_text().replace("1.59", "one"))
    with pytest.raises(ConfigError, match="'one' is not a number"):
        load_summary(bad_csv)
    with pytest.raises(DataError, match="not found"):
        load_summary(tmp_path / "missing.json")
    capsys.readouterr()
    assert main(["study", "analyze"]) == 2  # neither a source nor --from-summary
    assert main(["study", "analyze", str(tmp_path), "--from-summary", str(PAPER_JSON)]) == 2
    assert main(["study", "analyze", "--from-summary", str(PAPER_JSON), "--drop-inattentive"]) == 2
    assert "either" in capsys.readouterr().err
