"""The HTML report of an extraction run: structure, numbers, inlined images, bad input."""

from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from copymark.cli import main
from copymark.errors import CopymarkError
from copymark.report.html import write_report
from copymark.report.tables import format_metric


class ReportParser(HTMLParser):
    """Collects tags, <img> attributes, table rows (cell texts) and all visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.rows: list[tuple[str, str | None, list[str]]] = []  # (tbody class, data-metric, cells)
        self.text: list[str] = []
        self._tbody: str = ""
        self._row: list[str] | None = None
        self._metric: str | None = None
        self._cell: list[str] | None = None
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag not in ("img", "meta", "br"):
            self.open.append(tag)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "tbody":
            self._tbody = a.get("class") or ""
        elif tag == "tr":
            self._row, self._metric = [], a.get("data-metric")
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if self.open and self.open[-1] == tag:
            self.open.pop()
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append((self._tbody, self._metric, self._row))
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if not self.open or self.open[-1] not in ("style", "title"):
            self.text.append(data)


def parse(path: Path) -> ReportParser:
    p = ReportParser()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    return p


def decode_png(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,"), uri[:40]
    data = base64.b64decode(uri.split(",", 1)[1], validate=True)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(data))
    img.verify()  # checks the chunks' CRCs
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "PNG" and img.width > 0 and img.height > 0
    return img


def check_self_contained(html: str, parser: ReportParser) -> None:
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower() and "url(" not in html
    assert parser.imgs, "no images"
    for img in parser.imgs:
        decode_png(img["src"] or "")
        assert img.get("alt")


def test_style_report_tables_images_self_contained(style_run: Path):
    out = write_report(style_run)
    assert out == style_run / "report.html"
    html = out.read_text(encoding="utf-8")
    p = parse(out)
    check_self_contained(html, p)
    assert p.open == [], f"unclosed tags: {p.open}"
    metrics = json.loads((style_run / "metrics.json").read_text())
    test = metrics["sets"]["test"]
    by_table = {}
    for tbody, metric, cells in p.rows:
        if metric:
            by_table.setdefault(tbody, {})[metric] = cells
    # every number of every table appears in its own row: mean ± std, n, CI (formatted independently here)
    for key, table in test["tables"].items():
        rows = by_table[f"table-{key}"]
        assert set(rows) == set(table["metrics"])
        for name, entry in table["metrics"].items():
            d = 2 if name.startswith("psnr") else 4
            _, value, n, ci = rows[name]
            assert value == f"{entry['mean']:.{d}f} ± {entry['std']:.{d}f}"
            assert n == str(entry["n"]) == "6"
            assert ci == f"[{entry['ci95'][0]:.{d}f}, {entry['ci95'][1]:.{d}f}]"
    assert {"table-identity_vs_victim", "table-untrained_vs_victim"} <= set(by_table)
    text = " ".join(" ".join(p.text).split())
    # header facts
    assert "classical:stylize?sigma_s=20&sigma_r=0.3" in text
    assert "400 of 400 (100% of the budget)" in text
    assert "127.0.0.1:8123" in text
    # the plain-language reading mentions table B's PSNR and both baselines
    b = test["tables"]["B"]["metrics"]["psnr_rgb"]["mean"]
    assert f"reproduces the victim at PSNR (RGB) {b:.2f} dB" in text
    assert "the identity map" in text and "an untrained surrogate" in text
    # the grid has the four columns, the curve and the method section are there
    assert "input | victim | surrogate | ground truth" in text
    assert "Learning curve" in text and "How these numbers were computed" in text
    # grid + bar chart + learning curve; no zooms for a style task
    assert len(p.imgs) == 3
    grid = decode_png(p.imgs[1]["src"])
    assert grid.width > 4 * 128 and grid.height > 6 * 128  # 64 px photos enlarged x2 for display


def test_sr_report_has_zoom_crops(sr_run: Path):
    out = write_report(sr_run, max_images=4)
    html = out.read_text(encoding="utf-8")
    p = parse(out)
    check_self_contained(html, p)
    zooms = [i for i in p.imgs if (i.get("class") or "") == "pixelated"]
    assert len(zooms) == 3
    for z in zooms:
        img = decode_png(z["src"])
        assert img.height > img.width / 4 * 2  # two rows: full images and crops
    text = " ".join(" ".join(p.text).split())
    assert "Zoomed crops" in text
    assert "(the first 4 of 6)" in text
    assert "border of 4 pixels" in text  # the SR protocol names the crop
    rows = {m: cells for tb, m, cells in p.rows if tb == "table-B" and m}
    metrics = json.loads((sr_run / "metrics.json").read_text())
    e = metrics["sets"]["test"]["tables"]["B"]["metrics"]["psnr_y"]
    assert rows["psnr_y"][1] == f"{e['mean']:.2f} ± {e['std']:.2f}"


def test_no_ground_truth_no_gt_column_and_missing_tables(style_run: Path):
    shutil.rmtree(style_run / "outputs" / "test" / "gt")
    m = json.loads((style_run / "metrics.json").read_text())
    for k in ("A", "C"):
        del m["sets"]["test"]["tables"][k]
    (style_run / "metrics.json").write_text(json.dumps(m))
    (style_run / "learning_curve.json").unlink()
    p = parse(write_report(style_run))
    text = " ".join(" ".join(p.text).split())
    assert "input | victim | surrogate." in text and "ground truth." not in text
    bodies = {tb for tb, _, _ in p.rows}
    assert "table-B" in bodies and "table-A" not in bodies and "table-C" not in bodies
    assert "Learning curve" not in text


def test_metrics_escape_markup(style_run: Path):
    m = json.loads((style_run / "metrics.json").read_text())
    m["victim"]["name"] = "<b>evil</b><script>alert(1)</script>"
    (style_run / "metrics.json").write_text(json.dumps(m))
    html = write_report(style_run).read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_set_level_metric_row():
    row = format_metric("kid", {"mean": 0.0123, "std": 0.0021, "value": 0.0123, "n": 12})
    assert (row.value, row.n, row.ci95, row.set_level) == ("0.0123 ± 0.0021", "12", "—", True)
    row = format_metric("swd", {"value": 1.5, "n": 12})
    assert row.value == "1.5000" and row.label.startswith("SWD")


def test_cli_report(style_run: Path, tmp_path: Path):
    target = tmp_path / "out" / "r.html"
    assert main(["report", str(style_run), "--out", str(target), "--max-images", "2"]) == 0
    text = " ".join(" ".join(parse(target).text).split())
    assert "(the first 2 of 6)" in text


@pytest.mark.parametrize(
    "breakage, needle",
    [
        ("no_dir", "run folder not found"),
        ("no_metrics", "no metrics.json"),
        ("bad_json", "not valid JSON"),
        ("bad_task", "field 'task'"),
        ("no_sets", "field 'sets'"),
        ("no_outputs", "no outputs/ folder"),
        ("empty_outputs", "holds no set"),
    ],
)
def test_bad_run_folders(style_run: Path, breakage: str, needle: str, capsys):
    run = style_run
    mpath = run / "metrics.json"
    match breakage:
        case "no_dir":
            run = run.parent / "does-not-exist"
        case "no_metrics":
            mpath.unlink()
        case "bad_json":
            mpath.write_text("{ not json")
        case "bad_task":
            m = json.loads(mpath.read_text())
            m["task"] = "classify"
            mpath.write_text(json.dumps(m))
        case "no_sets":
            m = json.loads(mpath.read_text())
            del m["sets"]
            mpath.write_text(json.dumps(m))
        case "no_outputs":
            shutil.rmtree(run / "outputs")
        case "empty_outputs":
            shutil.rmtree(run / "outputs" / "test")
            (run / "outputs" / "test").mkdir()
    with pytest.raises(CopymarkError) as ei:
        write_report(run)
    assert needle in ei.value.message
    assert "copymark evaluate" in (ei.value.hint or "") or "copymark evaluate" in ei.value.message
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert needle in " ".join(err.split())
    assert "Traceback" not in err
    assert not (run / "report.html").exists()


def _store(path: Path, victim_id: str, n: int, budget: int) -> Path:
    """A real query store as `copymark extract` leaves it: n answered queries and the campaign meta."""
    from copymark.client.store import QueryStore

    with QueryStore(path) as store:
        for i in range(n):
            sha = store.add_input(f"query {i}".encode(), victim_id, f"photo.png#{i},0")
            store.record_answer(sha, victim_id, f"answer {i}".encode(), f"req-{i}")
        store.set_meta(
            "campaign", json.dumps({"victim_id": victim_id, "budget": budget, "strategy": "diverse", "size": 64})
        )
    return path


def test_report_takes_the_store_for_a_manual_run(style_run: Path, tmp_path: Path):
    """A run folder without provenance (the manual workflow) gets it from --store."""
    m = json.loads((style_run / "metrics.json").read_text())
    del m["queries"]
    m["victim"] = {"url": "http://127.0.0.1:8123", "victim_id": "0123abcd0123abcd"}
    (style_run / "metrics.json").write_text(json.dumps(m))
    text = " ".join(" ".join(parse(write_report(style_run)).text).split())
    assert "not recorded (give the extraction's query store: --store)" in text
    store = _store(tmp_path / "store", "another-victim", n=2, budget=2)  # a store may hold several victims
    _store(store, "0123abcd0123abcd", n=30, budget=40)  # (the campaign meta is the last campaign's)
    assert main(["report", str(style_run), "--store", str(store)]) == 0
    text = " ".join(" ".join(parse(style_run / "report.html").text).split())
    assert "30 of 40 (75% of the budget), strategy diverse, answered " in text
    assert "victim id 0123abcd0123abcd" in text and str(store) in text
    # a store without this victim's queries is an error naming both, not a silent "not recorded"
    other = _store(tmp_path / "other", "someone-else", n=1, budget=1)
    with pytest.raises(CopymarkError, match="holds no queries of victim 0123abcd0123abcd"):
        write_report(style_run, store=other)


def test_infinite_mean_and_notes_are_shown(style_run: Path):
    m = json.loads((style_run / "metrics.json").read_text())
    t = m["sets"]["test"]
    t["tables"]["B"]["metrics"]["psnr_rgb"] = {"mean": "inf", "std": None, "n": 6, "n_inf": 2, "ci95": None}
    t["notes"] = ["table A: set-level metrics compare 6 with 2 images; SWD, KID and FID need tens"]
    (style_run / "metrics.json").write_text(json.dumps(m))
    p = parse(write_report(style_run))
    rows = {metric: cells for tb, metric, cells in p.rows if tb == "table-B" and metric}
    assert rows["psnr_rgb"][1].startswith("∞") and "2 of 6 values infinite" in rows["psnr_rgb"][1]
    assert rows["psnr_rgb"][3] == "—"
    text = " ".join(" ".join(p.text).split())
    assert "Note: table A: set-level metrics compare 6 with 2 images" in text
