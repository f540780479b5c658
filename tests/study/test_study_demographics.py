"""Optional demographic questions (the study's Figure 5): asked only when configured, never
required, fixed choices only; their distribution and the per-model score histograms (Figures 6-7)
in the analysis."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest
from fastapi.testclient import TestClient

from copymark.cli import main
from copymark.errors import ConfigError
from copymark.study.analysis import (
    analyze_ratings,
    demographics_figure,
    load_demographics,
    load_ratings,
    score_histogram_figure,
)
from copymark.study.app import create_app
from copymark.study.demographics import QUESTIONS, SKIPPED, parse_question_list
from copymark.study.design import create_study, load_study
from copymark.study.simulate import simulate_ratings
from copymark.study.store import StudyStore, read_demographics_csv

PW = "pw"


@pytest.fixture
def demo_study(tmp_path, image_folders):
    out = tmp_path / "demo_study"
    create_study(
        image_folders["victim"],
        image_folders["surrogate"],
        image_folders["examples"],
        out,
        per_participant=4,
        seed=1,
        demographics=["gender", "age", "education"],
    )
    return out


class _Inputs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.inputs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "input":
            self.inputs.append(dict(attrs))


def take_part(c: TestClient, pid: str, answers: dict | None, finish: bool = True) -> None:
    c.cookies.clear()
    r = c.post("/consent", data={"agree": "yes", "pid": pid}, follow_redirects=True)
    assert r.url.path == "/about-you"
    if answers is not None:
        assert c.post("/about-you", data=answers, follow_redirects=True).url.path == "/instructions"
    for step in range(4 if finish else 1):
        html = c.get("/rate").text
        f = dict(re.findall(r'name="(position|item_id|nonce)" value="([^"]+)"', html))
        c.post("/rate", data={**f, "score": str(1 + step)})


def test_questions_are_optional_fixed_choice_and_stored_once(demo_study):
    with TestClient(create_app(demo_study, PW), follow_redirects=True) as c:
        consent = c.get("/?pid=P-1").text
        assert "optional questions about you" in consent
        r = c.post("/consent", data={"agree": "yes", "pid": "P-1"})
        assert r.url.path == "/about-you"
        p = _Inputs()
        p.feed(r.text)
        assert "textarea" not in p.tags and "select" not in p.tags
        assert all(i["type"] == "radio" and "required" not in i for i in p.inputs)  # no free text, nothing required
        offered = {(i["name"], i["value"]) for i in p.inputs}
        assert offered == {(q, v) for q, spec in QUESTIONS.items() for v in spec.values}
        assert r.text.count("> Prefer not to say</label>") == 3
        # an answer outside the fixed choices (e.g. free text) is refused, not stored, not echoed
        r = c.post("/about-you", data={"gender": "my name is Alice", "age": "25-34"})
        assert r.status_code == 422 and "Alice" not in r.text
        store = StudyStore(demo_study, load_study(demo_study))
        assert store.demographic_rows() == []
        # one answered, one "prefer not to say", one left blank; an unknown field is ignored
        r = c.post("/about-you", data={"age": "25-34", "education": "na", "hobby": "chess"})
        assert r.url.path == "/instructions"
        rows = store.demographic_rows()
        assert rows == [
            {"participant": 1, "question": "age", "answer": "25-34"},
            {"participant": 1, "question": "education", "answer": "na"},
            {"participant": 1, "question": "gender", "answer": ""},
        ]
        assert c.post("/about-you", data={"age": "65+"}).url.path == "/instructions"  # a resubmission changes nothing
        assert store.demographic_rows() == rows
        assert c.get("/about-you").url.path == "/instructions"  # answered: not asked again
        assert c.get("/").url.path == "/instructions"  # resuming goes on to the rating
        # the admin can download them (with the password only)
        assert c.get("/admin/demographics.csv").status_code == 401
        r = c.get("/admin/demographics.csv", auth=("admin", PW))
        assert r.status_code == 200 and r.text.splitlines() == [
            "participant,question,answer",
            "1,age,25-34",
            "1,education,na",
            "1,gender,",
        ]


def test_no_questions_by_default(study_dir):
    assert load_study(study_dir).demographics == []
    with TestClient(create_app(study_dir, PW), follow_redirects=True) as c:
        assert "optional questions" not in c.get("/?pid=P-2").text
        assert c.post("/consent", data={"agree": "yes", "pid": "P-2"}).url.path == "/instructions"
        assert c.get("/about-you").url.path == "/instructions"
        assert c.post("/about-you", data={"age": "25-34"}).url.path == "/instructions"
    assert StudyStore(study_dir, load_study(study_dir)).demographic_rows() == []


def test_question_lists_are_checked_before_a_study_is_made(image_folders, tmp_path, capsys):
    assert parse_question_list("gender, age") == ["gender", "age"] and parse_question_list("") == []
    with pytest.raises(ConfigError, match="unknown question"):
        parse_question_list("gender,income")
    with pytest.raises(ConfigError, match="twice"):
        parse_question_list("age,age")
    args = ["study", "create", "--victim-dir", str(image_folders["victim"]), "--surrogate-dir"]
    args += [str(image_folders["surrogate"]), "--style-examples", str(image_folders["examples"])]
    args += ["--per-participant", "4"]
    assert main([*args, "--out", str(tmp_path / "bad"), "--demographics", "name"]) == 2
    assert not (tmp_path / "bad").exists()
    assert main([*args, "--out", str(tmp_path / "good"), "--demographics", "age,gender"]) == 0
    assert load_study(tmp_path / "good").demographics == ["age", "gender"]


def test_analysis_counts_the_analysed_participants_and_plots_them(demo_study, tmp_path, capsys):
    with TestClient(create_app(demo_study, PW), follow_redirects=True) as c:
        take_part(c, "P-1", {"gender": "female", "age": "25-34", "education": "master"})
        take_part(c, "P-2", {"gender": "male", "age": "25-34"})
        take_part(c, "P-3", {})  # answered nothing: all three skipped
        take_part(c, "P-4", {"gender": "female", "age": "65+", "education": "doctorate"}, finish=False)
    rows = load_ratings(demo_study)
    an = analyze_ratings(rows, demographics=load_demographics(demo_study))
    assert list(an.demographics) == ["gender", "age", "education"]
    assert an.demographics["gender"] == {"female": 2, "male": 1, "nonbinary": 0, "na": 0, SKIPPED: 1}
    assert an.demographics["age"]["25-34"] == 2 and an.demographics["age"]["65+"] == 1
    # participants dropped from the analysis are dropped from its demographics too
    done = analyze_ratings(rows, complete_only=True, demographics=load_demographics(demo_study))
    assert done.demographics["gender"] == {"female": 1, "male": 1, "nonbinary": 0, "na": 0, SKIPPED: 1}
    # Figure 5: one bar chart per question, bar lengths = counts
    fig = demographics_figure(an.demographics)
    for ax, (q, counts) in zip(fig.axes, an.demographics.items()):
        assert [p.get_width() for p in ax.patches] == list(counts.values())
        assert [t.get_text() for t in ax.get_yticklabels()][0] == QUESTIONS[q].label(next(iter(counts)))
    # the CLI: report with the table and the plot; the CSV route gives the same counts
    out = tmp_path / "rep"
    assert main(["study", "analyze", str(demo_study), "--out", str(out)]) == 0
    md = (out / "analysis.md").read_text()
    assert "![participants (optional questions)](demographics.png)" in md and "| Gender | Female | 2 |" in md
    assert (out / "demographics.png").read_bytes()[:4] == b"\x89PNG"
    csv, dcsv = tmp_path / "r.csv", tmp_path / "d.csv"
    assert main(["study", "export", str(demo_study), "--out", str(csv), "--demographics-out", str(dcsv)]) == 0
    assert len(read_demographics_csv(dcsv)) == 12
    out2 = tmp_path / "rep2"
    assert main(["study", "analyze", str(csv), "--demographics", str(dcsv), "--out", str(out2)]) == 0
    import json

    m1, m2 = (json.loads((d / "metrics.json").read_text())["demographics"] for d in (out, out2))
    assert m1 == m2 == {q: {k: v for k, v in c.items()} for q, c in an.demographics.items()}


def test_score_histograms_per_model_mark_the_means():
    """Figures 6-7: per model, the count of each score 1-5 and a vertical line at the mean."""
    an = analyze_ratings(simulate_ratings(30, 0.3, per_participant=10, seed=5))
    fig = score_histogram_figure(an)
    assert len(fig.axes) == 2
    for ax, (model, g) in zip(fig.axes, an.groups.items()):
        assert [p.get_height() for p in ax.patches] == g.counts
        (line,) = ax.get_lines()
        assert np.allclose(line.get_xdata(), g.mean)
        assert f"mean = {g.mean:.2f}, std = {g.sd:.2f}" in ax.get_title() and ax.get_title().startswith(model)


def test_bad_demographics_csv_is_a_clear_error(tmp_path):
    from copymark.errors import DataError

    p = tmp_path / "d.csv"
    p.write_text("participant,question,answer\n1,age,42\n")
    with pytest.raises(DataError, match=r"d.csv:2: answer '42' is not a choice of age"):
        read_demographics_csv(p)
    p.write_text("participant,question,answer\n1,name,Alice\n")
    with pytest.raises(DataError, match="unknown question"):
        read_demographics_csv(p)
