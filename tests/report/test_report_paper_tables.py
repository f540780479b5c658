"""Tables 2-4 in the extraction study's layout (copymark.report.paper_tables).

Built from hand-made setting results (the JSON ``reproduce extraction-tables`` writes per
setting), so every expected cell text is known: the study's published figure beside copymark's
in the study's rows and columns, SR cells as mean ± std on Y and RGB, style cells with KID /
SWD and their CIs, table B alone when there is no target-style set, a setting not yet run,
the conditions that differ, the goals; Markdown and HTML the same tables, HTML escaped.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from copymark.report.paper_tables import STUDY, render_html, render_markdown, write_tables


def _pi(mean: float, std: float) -> dict[str, Any]:
    return {"mean": mean, "std": std, "ci95": [mean - 0.1, mean + 0.1], "n": 5, "n_inf": 0}


def sr_result() -> dict[str, Any]:
    def cell(p: float, s: float) -> dict[str, Any]:
        return {
            "psnr_y": _pi(p, 2.5),
            "ssim_y": _pi(s, 0.05),
            "psnr_rgb": _pi(p - 2, 2.0),
            "ssim_rgb": _pi(s - 0.04, 0.06),
        }

    return {
        "name": "sr-x4",
        "task": "sr",
        "study_table": "4",
        "victim": {"label": "SRGAN x4", "victim_id": "v1"},
        "set_labels": {"test": "Set5", "benchmark": "Set14"},
        "tables": ["A", "B", "C"],
        "sets": {
            "test": {"A": cell(30.64, 0.8631), "B": cell(36.05, 0.9520), "C": cell(30.44, 0.8602)},
            "benchmark": {"A": cell(27.68, 0.7534), "B": cell(35.46, 0.9507), "C": cell(27.56, 0.7521)},
        },
        "goals": [{"goal": "test: C within 0.2 dB of A (PSNR Y)", "met": False, "detail": "gap +0.20 dB"}],
        "conditions": {
            "victim": "SRGAN x4",
            "attacker_data": "Tiny-ImageNet val",
            "test_set": "Set5",
            "benchmark_set": "Set14",
            "queries": 1000,
            "query_size": 32,
            "strategy": "random",
            "surrogate": {"procedure": "srresnet", "iters": 800, "batch_size": 16, "train_size": 64, "pairs": 1000},
            "counts": {"attacker": 10000, "test_images": 5, "benchmark_images": 14},
            "fid": "not computed: no --inception-weights",
            "notes": ["Set5 | Set14 stand in for DIV2K"],
        },
    }


def style_b_only() -> dict[str, Any]:
    swd = {"value": 80.5, "ci95": [70.25, 90.75]}
    return {
        "name": "h2z",
        "task": "style",
        "study_table": None,
        "victim": {"label": "horse<->zebra <b>", "victim_id": "v2"},
        "set_labels": {"test": "photos[0:6]", "benchmark": "photos[6:12]"},
        "tables": ["B"],
        "sets": {
            "test": {"B": {"swd": swd, "kid": None, "fid": None, "psnr_rgb": _pi(21.5, 1.25)}},
            "benchmark": {"B": {"swd": swd, "kid": {"mean": 0.0123, "std": 0.0045, "ci95": [0.01, 0.02]}}},
        },
        "goals": [],
        "conditions": {"victim": "h2z", "counts": {}, "queries": 8, "query_size": 32, "strategy": "random"},
    }


def rows(md: str, title_part: str) -> list[list[str]]:
    """The body rows of the first Markdown table whose heading contains ``title_part``."""
    block = md.split(title_part, 1)[1].split("\n### ", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines[1:]]


def test_sr_table_in_the_studys_layout_with_its_figures_beside():
    md = render_markdown({"sr-x4": sr_result()}, ["sr-x4"])
    psnr = rows(md, "(b) PSNR")
    assert [r[:2] for r in psnr] == [
        ["V output", "DIV2K Test → Set5 (5)"],
        ["V output", "SRBENCHMARK → Set14 (14)"],
        ["A output", "DIV2K Test → Set5 (5)"],
        ["A output", "SRBENCHMARK → Set14 (14)"],
    ]
    assert psnr[0][2:] == ["N/A", "N/A", "(A) 24.67 ± 3.63", "(A) Y 30.64 ± 2.50 · RGB 28.64 ± 2.00"]
    assert psnr[2][2:] == [
        "(B) 24.74 ± 9.21",
        "(B) Y 36.05 ± 2.50 · RGB 34.05 ± 2.00",
        "(C) 23.24 ± 7.17",
        "(C) Y 30.44 ± 2.50 · RGB 28.44 ± 2.00",
    ]
    # the study marks B only on its test-set row; its figures are its own Table 4(b)
    assert psnr[3][2] == STUDY["4"]["cells"][("benchmark", "B", "psnr")] == "20.64 ± 7.33"
    ssim = rows(md, "(a) SSIM")
    assert ssim[1][4:] == ["(A) 0.69 ± 0.23", "(A) Y 0.7534 ± 0.0500 · RGB 0.7134 ± 0.0600"]


def test_conditions_and_goals_are_stated():
    md = render_markdown({"sr-x4": sr_result()}, ["sr-x4"])
    cond = {r[0]: r[1:] for r in rows(md, "Conditions — setting `sr-x4`")}
    assert cond["queries (answers bought)"] == ["not stated", "1000 of 32 px (random)"]
    assert cond["victim's test set"] == ["DIV2K test (200 pairs)", "Set5 (5 images)"]
    assert cond["surrogate and its iterations"][1] == "srresnet: 800 iterations, batch 16, 64 px crops, 1000 pairs"
    assert cond["victim's training data and iterations"][1] == "pretrained third-party weights (not trained here)"
    assert "- Set5 | Set14 stand in for DIV2K" in md  # the notes of the setting, under the conditions
    goals = rows(md, "Goals — setting `sr-x4`")
    assert goals == [["test: C within 0.2 dB of A (PSNR Y)", "missed", "gap +0.20 dB"]]


def test_style_table_b_only_and_a_setting_not_run():
    md = render_markdown({"h2z": style_b_only()}, ["h2z", "later"], "a description")
    assert "a description" in md
    table = rows(md, "Extra setting (not in the study)")
    assert table[0][2:] == ["N/A", "(A) not measured (no target-style set)"]
    assert table[2][2] == "(B) KID — (needs --inception-weights) · SWD 80.5 [70.2, 90.8] · PSNR 21.50 ± 1.25 dB"
    assert table[3][2] == "KID 0.0123 ± 0.0045 [0.0100, 0.0200] · SWD 80.5 [70.2, 90.8]"
    assert table[3][3] == "(C) not measured (no target-style set)"
    assert "not run yet (rerun the command, or --only later)" in md


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self._in = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("td", "th"):
            self._in, self.cells = True, [*self.cells, ""]

    def handle_endtag(self, tag: str) -> None:
        self._in = self._in and tag not in ("td", "th")

    def handle_data(self, data: str) -> None:
        if self._in:
            self.cells[-1] += data


def test_html_holds_the_same_cells_escaped(tmp_path):
    results, order = {"sr-x4": sr_result(), "h2z": style_b_only()}, ["sr-x4", "h2z"]
    md_path, html_path = write_tables(tmp_path, results, order)
    md, page = md_path.read_text(), html_path.read_text()
    assert md == render_markdown(results, order) and page == render_html(results, order)
    assert "horse&lt;-&gt;zebra &lt;b&gt;" in page
    parser = _Cells()
    parser.feed(page)
    md_cells = [c.strip().replace("\\|", "|") for ln in md.splitlines() if ln.startswith("| ") for c in
                re.split(r"(?<!\\)\|", ln)[1:-1]]  # fmt: skip
    assert parser.cells == md_cells
    assert '<td class="missed">missed</td>' in page


def test_a_copymark_trained_victim_states_its_training_and_a_stopped_schedule():
    result = sr_result()
    result["conditions"]["victim_training"] = {
        "procedure": "cyclegan", "iters": 700, "trained_iters": 400, "batch_size": 4, "size": 64
    }  # fmt: skip
    cond = {r[0]: r[1:] for r in rows(render_markdown({"x": result}, ["x"]), "Conditions — setting")}
    assert cond["victim's training data and iterations"][1] == (
        "copymark cyclegan: 400 of a 700-iteration schedule, batch 4, 64 px"
    )
    result["conditions"]["victim_training"]["trained_iters"] = 700
    cond = {r[0]: r[1:] for r in rows(render_markdown({"x": result}, ["x"]), "Conditions — setting")}
    assert cond["victim's training data and iterations"][1] == "copymark cyclegan: 700 iterations, batch 4, 64 px"
