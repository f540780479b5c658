"""The ownership report of real (tiny) protect and verify runs: every figure is the one recorded,
the visibility grid's panels are the pixels of the files they come from, the trace plot draws the
recorded walk, the verify runs of the kit are found (and no other), and a missing, foreign or
changed run folder is a one-line error with exit status 2."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from copymark.cli import main
from copymark.report import plots
from copymark.report.ownership import write_protect_report, write_verify_report

VOID = {"img", "meta", "br", "link", "input", "hr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list = field(default_factory=list)

    def text(self) -> str:
        return " ".join("".join(c if isinstance(c, str) else " " + c.text() + " " for c in self.children).split())

    def iter(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [
            n
            for n in self.iter()
            if (tag is None or n.tag == tag) and all(n.attrs.get(k) == v for k, v in want.items())
        ]

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]


class Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        n = Node(tag, dict(attrs))
        self.stack[-1].children.append(n)
        if tag not in VOID:
            self.stack.append(n)

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(path: Path) -> Node:
    t = Tree()
    t.feed(path.read_text(encoding="utf-8"))
    return t.root


def pixels_of_uri(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    (dst / "report.html").unlink(missing_ok=True)
    return dst


# the presentation of the figures (the report's format, written out independently here)
def pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def prob(v: float) -> str:
    return f"{v:.3g}"


def summary_cells(entry: dict, decimals: int, with_min: bool = True) -> list[str]:
    ci = entry.get("ci95")
    cells = [f"{entry['mean']:.{decimals}f} ± {entry['std']:.{decimals}f}", str(entry["n"])]
    if with_min:
        cells.append(f"{entry['min']:.{decimals}f}")
    cells.append(f"[{ci[0]:.{decimals}f}, {ci[1]:.{decimals}f}]" if ci else "not recorded")
    return cells


# ---------------------------------------------------------------------------------------------
# figures


def check_verification(section: Node, rec: dict) -> None:
    """Every figure of one verification section is the verify run's record."""
    fc, acc, t = rec["false_claim_probability"], rec["trigger_accuracy"], rec["test"]

    def key(k: str) -> str:
        return section.find(data_key=k).text()

    assert section.find_all("span", **{"class": f"verdict {rec['verdict'].replace(' ', '-')}"})
    assert key("statement") == rec["statement"] + "."
    assert key("false_claim_probability.bound") == prob(fc["bound"])
    assert key("false_claim_probability.fixed_n_binomial_tail") == prob(fc["fixed_n_binomial_tail"])
    assert key("false_claim_probability.p0") == prob(fc["p0"])
    assert key("false_claim_probability.p0_source") == fc["p0_source"]
    assert key("trigger_accuracy.value") == pct(acc["value"])
    assert key("trigger_accuracy.ci95") == f"[{pct(acc['ci95'][0])}, {pct(acc['ci95'][1])}]"
    assert key("queries") == str(rec["queries"]) and key("triggers_used") == str(rec["triggers_used"])
    facts = section.text()
    assert f"({rec['successes']} of {acc['n']})" in facts
    assert f"claim at {t['claim_at_log_lr']:.2f}" in facts and f'"not owned" at {t["not_owned_at_log_lr"]:.2f}' in facts
    (img,) = section.find("figure", **{"class": "trace"}).find_all("img")
    assert pixels_of_uri(img.attrs["src"]).shape[0] > 100
    rs = rec["recovered_secrets"]
    if rs is not None:
        for name, decimals in (("psnr", 2), ("ssim", 4)):
            row = section.find("tr", data_key=f"recovered_secrets.{name}")
            assert [c.text() for c in row.find_all("td")][1:] == summary_cells(rs[name], decimals, with_min=False)


def test_protect_report_shows_what_the_runs_recorded(owner, tmp_path):
    run = owner["protected"]
    m = metrics(run)
    doc = parse(write_protect_report(run, out=tmp_path / "report.html"))
    for split in ("val", "test"):
        b, a = m["accuracy_before"][split], m["accuracy_after"][split]
        row = doc.find("tr", data_split=split)
        assert [c.text() for c in row.find_all("td")] == [split, pct(b), pct(a), f"{100 * (b - a):.2f} points"]
    assert doc.find(data_key="trigger_accuracy").text() == pct(m["trigger_accuracy"])
    assert doc.find(data_key="unprotected_agreement").text() == pct(m["unprotected_agreement"])
    assert doc.find(data_key="chance").text() == pct(0.25) == pct(m["chance"])
    assert doc.find(data_key="cover_accuracy").text().startswith(pct(m["cover_accuracy"]) + ":")
    assert doc.find(data_key="cover_label_agreement").text().startswith(pct(m["cover_label_agreement"]) + ":")
    assert f"({m['trigger_correct']} of {m['triggers']})" in doc.find("section", id="protection").text()
    for k, decimals in (("trigger_psnr", 2), ("trigger_ssim", 4), ("secret_psnr", 2), ("secret_ssim", 4)):
        row = doc.find("tr", data_key=k)
        assert [c.text() for c in row.find_all("td")][1:] == summary_cells(m[k], decimals), k
    # the commitment: recorded, published, and the hash of the manifest's bytes
    manifest = (run / "kit" / "manifest.json").read_bytes()
    assert doc.find(data_key="commitment").text() == m["commitment"]
    assert (
        m["commitment"]
        == "sha256:" + hashlib.sha256(manifest).hexdigest()
        == (run / "commitment.txt").read_text().strip()
    )
    assert doc.find("section", id="kit").find(data_key="trust").text().endswith("trusted public key (2 runs)")
    # the verify runs of this kit, found beside the run; not the one of the e2e kit
    sections = {s.attrs["data-run"]: s for s in doc.find_all("section", **{"class": "card verification"})}
    assert set(sections) == {"v-owned", "v-host"}
    verdicts = {}
    for name, s in sections.items():
        rec = metrics(owner[name])["verification"]
        check_verification(s, rec)
        verdicts[name] = rec["verdict"]
    assert verdicts == {"v-owned": "owned", "v-host": "not owned"}  # the fixture's real outcomes
    assert "(the protected model's weights)" in doc.find("tr", data_run="v-owned").text()
    assert "protected model's weights" not in doc.find("tr", data_run="v-host").text()


def test_trace_plot_draws_the_recorded_walk_and_its_thresholds(owner):
    rec = metrics(owner["v-owned"])["verification"]
    t = rec["test"]
    ax = plots.sprt_trace_figure(t, rec["verdict"]).axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    walk = lines["log likelihood ratio"]
    assert list(walk.get_xdata()) == list(range(len(t["trace"]) + 1))
    assert list(walk.get_ydata()) == [0.0, *t["trace"]]
    claim = next(ln for k, ln in lines.items() if k.startswith('claim "owned"'))
    refuse = next(ln for k, ln in lines.items() if k.startswith('"not owned"'))
    assert set(claim.get_ydata()) == {t["claim_at_log_lr"]} and set(refuse.get_ydata()) == {t["not_owned_at_log_lr"]}
    assert t["trace"][-1] >= t["claim_at_log_lr"] > t["trace"][-2]  # an SPRT stops at its first crossing
    assert plots.sprt_trace_png(t, rec["verdict"]).startswith(b"\x89PNG")


# ---------------------------------------------------------------------------------------------
# the visibility grid


def lsb_reveal(trigger: np.ndarray, bits: int = 4) -> np.ndarray:
    """The LSB codec's revealed secret: the trigger's low bits as the high bits, centred."""
    return (((trigger & ((1 << bits) - 1)) << (8 - bits)) | (1 << (8 - bits - 1))).astype(np.uint8)


@pytest.mark.parametrize("name", ["protected", "e2e", "acsac19"])
def test_visibility_panels_are_the_pixels_of_their_files(owner, tmp_path, name):
    run = owner[name]
    manifest = json.loads((run / "kit" / "manifest.json").read_text())
    n = len(manifest["triggers"])
    doc = parse(write_protect_report(run, out=tmp_path / "report.html", max_images=16))
    rows = doc.find("table", **{"class": "panels"}).find_all("tr", **{"class": "row"})
    assert len(rows) == min(16, n)
    vis = pixels(run / "visibility.png")
    size = manifest["model"]["input_size"]
    assert vis.shape[0] == min(8, n) * size  # protect saves the first 8 rows
    codec = None
    if name == "e2e":
        from copymark.stego.codecs import load_codec

        codec = load_codec(run / "kit" / "codec")
    for i, (row, rec) in enumerate(zip(rows, manifest["triggers"])):
        assert row.attrs["data-trigger"] == rec["trigger_id"]
        imgs = {im.attrs["data-panel"]: pixels_of_uri(im.attrs["src"]) for im in row.find_all("img")}
        cover = pixels(owner["data"] / f"{rec['cover_id']}.png")
        trigger, secret = pixels(run / "kit" / rec["trigger"]), pixels(run / "kit" / rec["secret"])
        assert np.array_equal(imgs["cover"], cover)
        assert np.array_equal(imgs["trigger"], trigger) and np.array_equal(imgs["secret"], secret)
        expected = np.minimum(255, 5 * np.abs(trigger.astype(int) - cover.astype(int)))
        assert np.array_equal(imgs["diff"], expected)
        if name == "acsac19":
            assert "recovered" not in imgs
            assert "ACSAC19" in row.find("div", data_panel="recovered").text()
            continue
        if i >= 8:  # protect saved no revealed secret for these
            assert "recovered" not in imgs
            assert "visibility.png holds the first 8" in row.find("div", data_panel="recovered").text()
            continue
        rec_px = imgs["recovered"]
        assert np.array_equal(rec_px, vis[i * size : (i + 1) * size, 4 * size : 5 * size])
        if name == "protected":  # LSB: computed here from the trigger; its top 4 bits are the secret's
            assert np.array_equal(rec_px, lsb_reveal(trigger))
            assert np.array_equal(rec_px >> 4, secret >> 4)
        else:  # the kit's learned codec run here: float32 kernels may flip the 8-bit rounding by one level
            import torch

            from copymark.images import load_image, to_uint8

            with torch.no_grad():
                revealed = to_uint8(codec.reveal(load_image(run / "kit" / rec["trigger"])[None]))[0]
            mine = revealed.permute(1, 2, 0).numpy().astype(int)
            assert np.abs(mine - rec_px.astype(int)).max() <= 1


def test_covers_come_from_the_data_and_changes_are_shown(owner, tmp_path):
    """A changed data file is named and the cover protect used is shown; a missing one falls back to
    visibility.png where it holds the cover, and is a placeholder beyond its rows."""
    src = owner["protected"]
    data = tmp_path / "data"
    shutil.copytree(owner["data"], data)
    run = copy_run(src, tmp_path / "runs" / "protected")
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["dir"] = str(data)
    (run / "config.json").write_text(json.dumps(cfg))
    triggers = json.loads((run / "kit" / "manifest.json").read_text())["triggers"]
    original = [pixels(owner["data"] / f"{t['cover_id']}.png") for t in triggers]
    Image.fromarray(255 - original[0]).save(data / f"{triggers[0]['cover_id']}.png")
    for i in (1, 9):
        (data / f"{triggers[i]['cover_id']}.png").unlink()
    doc = parse(write_protect_report(run, max_images=10))
    captions = doc.find("table", **{"class": "panels"}).find_all("tr", **{"class": "caption"})
    rows = doc.find("table", **{"class": "panels"}).find_all("tr", **{"class": "row"})

    def cover(i: int) -> np.ndarray:
        return pixels_of_uri(rows[i].find("img", data_panel="cover").attrs["src"])

    assert "differs from the cover protect used" in captions[0].text()
    assert np.array_equal(cover(0), original[0])
    assert "not found" in captions[1].text() and "shown from visibility.png" in captions[1].text()
    assert np.array_equal(cover(1), original[1])
    assert "not found" in captions[9].text()
    assert rows[9].find_all("img", data_panel="cover") == [] and rows[9].find_all("img", data_panel="diff") == []
    assert np.array_equal(cover(8), original[8]) and "visibility" not in captions[8].text()  # from the data
    assert "No verify run of this kit was found" in doc.find("section", id="verifications").text()


# ---------------------------------------------------------------------------------------------
# the command


def test_cli_finds_the_kit_verify_runs_or_takes_the_given_ones(owner, tmp_path, capsys):
    out = tmp_path / "all.html"
    assert main(["report", str(owner["protected"]), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    found = {s.attrs["data-run"] for s in parse(out).find_all("section", **{"class": "card verification"})}
    assert found == {"v-owned", "v-host"}
    one = tmp_path / "one.html"
    assert main(["report", str(owner["protected"]), "--verify", str(owner["v-owned"]), "--out", str(one)]) == 0
    doc = parse(one)
    assert [s.attrs["data-run"] for s in doc.find_all("section", **{"class": "card verification"})] == ["v-owned"]
    # a protect run made elsewhere keeps its kit's verify runs in its own folder: found there too
    run = copy_run(owner["protected"], tmp_path / "moved" / "protected")
    shutil.copytree(owner["v-host"], run / "verifications" / "v-host")
    shutil.copytree(owner["v-host"], run / "v-host")
    assert main(["report", str(run)]) == 0
    sections = parse(run / "report.html").find_all("section", **{"class": "card verification"})
    assert [s.attrs["data-run"] for s in sections] == ["v-host"]


@pytest.mark.parametrize("name", ["v-owned", "v-e2e"])
def test_a_verify_run_alone(owner, tmp_path, capsys, name):
    run = copy_run(owner[name], tmp_path / name)
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    doc = parse(run / "report.html")
    rec = metrics(run)["verification"]
    assert doc.find_all("section", id="protection") == [] and doc.find_all("section", id="visibility") == []
    assert doc.find(data_key="suspect").text() == f"checkpoint {rec['suspect']['source']}"
    assert doc.find(data_key="verdict").text() == rec["verdict"]
    assert doc.find("header").find(data_key="commitment").text() == rec["kit"]["commitment"]
    assert doc.find("header").find(data_key="trust").text() == rec["kit"]["trust"] == "trusted public key"
    (section,) = doc.find_all("section", **{"class": "card verification"})
    check_verification(section, rec)
    if name == "v-e2e":
        assert rec["false_claim_probability"]["p0_source"].startswith("given with --p0")
    assert write_verify_report(run, out=tmp_path / "again.html").read_text().count("<figure") == 1


def _unfinished(owner, t):
    run = copy_run(owner["protected"], t / "p")
    (run / "metrics.json").unlink()
    return [str(run)]


def _changed_trigger(owner, t):
    run = copy_run(owner["protected"], t / "p")
    (run / "kit" / "triggers" / "t00000.png").write_bytes((run / "kit" / "triggers" / "t00001.png").read_bytes())
    return [str(run)]


def _missing_secret(owner, t):
    run = copy_run(owner["protected"], t / "p")
    next((run / "kit" / "secrets").glob("*.png")).unlink()
    return [str(run), "--max-images", "16"]


def _changed_manifest(owner, t):
    run = copy_run(owner["protected"], t / "p")
    mf = run / "kit" / "manifest.json"
    mf.write_text(mf.read_text().replace('"seed": 0', '"seed": 1'))
    return [str(run)]


def _no_record(owner, t):
    run = copy_run(owner["v-owned"], t / "v")
    (run / "metrics.json").write_text("{}")
    return [str(run)]


def _bad_json(owner, t):
    run = copy_run(owner["v-owned"], t / "v")
    (run / "metrics.json").write_text("{ not json")
    return [str(run)]


def _no_threshold(owner, t):
    run = copy_run(owner["v-owned"], t / "v")
    m = metrics(run)
    del m["verification"]["test"]["claim_at_log_lr"]
    (run / "metrics.json").write_text(json.dumps(m))
    return [str(run)]


def _a_file(owner, t):
    (t / "file.txt").write_text("x")
    return [str(t / "file.txt")]


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda o, t: [str(t / "none")], "run folder not found"),
        (_a_file, "expected a run folder, got a file"),
        (lambda o, t: [str(o["host"])], "is a 'classifier-train' run"),
        (lambda o, t: [str(o["protected"] / "embed")], "is a 'protect-embed' run"),
        (_unfinished, "the protection has not finished"),
        (_changed_trigger, "triggers/t00000.png does not match its SHA-256"),
        (_missing_secret, "is missing"),
        (_changed_manifest, "hashes to"),
        (lambda o, t: [str(o["protected"]), "--verify", str(o["v-e2e"])], "not this run's kit"),
        (lambda o, t: [str(o["protected"]), "--verify", str(o["host"])], "no 'verification' record"),
        (lambda o, t: [str(o["v-owned"]), "--verify", str(o["v-host"])], "--verify adds verifications"),
        (lambda o, t: [str(o["protected"]), "--store", str(t)], "--store is for extraction runs"),
        (_no_record, "no 'verification' record"),
        (_bad_json, "not valid JSON"),
        (_no_threshold, "test.claim_at_log_lr must be a number"),
    ],
)
def test_missing_foreign_or_changed_runs_are_one_line_errors(owner, tmp_path, capsys, make, needle):
    args = make(owner, tmp_path)
    out = tmp_path / "out" / "report.html"
    assert main(["report", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0].startswith("error:") and needle in lines[0], err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint:")), err
    assert "Traceback" not in err and not out.exists()
