"""Evidence that cannot be mixed up, and evaluations that never pay twice (through real servers).

* two victims evaluated one after the other each get their own table B, and the second into
  the first's run folder is refused (issue 10 item 4a: it used to reuse the stylize answers);
* two evaluations in a row pay the victim's answers once, with a 10 requests/s key at the
  default concurrency (issue 11 item 4);
* a SIGKILLed evaluation resumes without re-querying; a spent budget stops with a hint about
  the budget and resumes once the budget is raised;
* bad options, folders and sizes are refused before a run folder is created or a query paid;
* the extraction store is found from the surrogate's training record and checked against the
  served victim.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from evalhelpers import (
    ATTACKER,
    CARTOON,
    KEY,
    STYLIZE,
    Blur,
    Upscale,
    charged,
    paid_per_input,
    photos,
    request_log,
    scripted,
    serve,
    write_keys,
)
from skimage.metrics import peak_signal_noise_ratio

from copymark import images as I
from copymark.cli import main
from copymark.client.store import QueryStore
from copymark.errors import CopymarkError
from copymark.extraction.evaluate import EvaluateConfig, run_evaluation
from copymark.serving.models import function_model, load_model

ROOT = Path(__file__).resolve().parents[2]


def _cfg(url: str, run_dir: Path, test: Path, sur: Path, **kw) -> EvaluateConfig:
    kw.setdefault("n_boot", 200)
    kw.setdefault("progress", False)
    return EvaluateConfig(victim_url=url, api_key=KEY, surrogate=sur, test=test, run_dir=run_dir, **kw)


def _psnr_b_in_process(spec: str, test: Path) -> float:
    """Table B's mean PSNR computed independently: the victim in process, the blur, skimage."""
    victim, blur = load_model(spec), Blur()
    vals = []
    for p in I.list_images(test):
        x = I.load_image(p).unsqueeze(0)
        v = I.to_uint8(I.quantize(victim(x))[0]).permute(1, 2, 0).numpy()
        y = I.to_uint8(I.quantize(blur(x).clamp(0, 1))[0]).permute(1, 2, 0).numpy()
        vals.append(peak_signal_noise_ratio(v, y, data_range=255))
    return float(np.mean(vals))


def _b(m: dict) -> float:
    return m["sets"]["test"]["tables"]["B"]["metrics"]["psnr_rgb"]["mean"]


def test_two_victims_each_get_their_own_table_b_and_never_share_a_run_folder(tmp_path):
    test = photos(tmp_path / "test")
    sur = scripted(Blur(), tmp_path / "blur.pt")
    answers = tmp_path / "answers"  # one answers store for both victims: keyed by victim id
    with serve(tmp_path / "s1", STYLIZE) as s1:
        m1 = run_evaluation(_cfg(s1.url, tmp_path / "run", test, sur, answers=answers))
    with serve(tmp_path / "s2", CARTOON) as s2:
        with pytest.raises(CopymarkError) as refused:
            run_evaluation(_cfg(s2.url, tmp_path / "run", test, sur, answers=answers))
        assert "victim.victim_id" in refused.value.message and "another configuration" in refused.value.message
        assert charged(s2.url) == 0  # refused before any query
        m2 = run_evaluation(_cfg(s2.url, tmp_path / "run2", test, sur, answers=answers))
        assert charged(s2.url) == 3  # the cartoon victim answered every input itself
    stylize_id, cartoon_id = load_model(STYLIZE).id, load_model(CARTOON).id
    assert m1["victim"]["victim_id"] == stylize_id and m2["victim"]["victim_id"] == cartoon_id
    # each table B is that victim's: equal to the figure computed in process, and they differ
    assert _b(m1) == pytest.approx(_psnr_b_in_process(STYLIZE, test), abs=1e-9)
    assert _b(m2) == pytest.approx(_psnr_b_in_process(CARTOON, test), abs=1e-9)
    assert abs(_b(m1) - _b(m2)) > 0.5
    # the refused run left the first run's evidence untouched
    kept = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert kept["victim"]["victim_id"] == stylize_id and _b(kept) == _b(m1)
    with QueryStore(answers) as store:
        assert store.victims() == sorted([stylize_id, cartoon_id])
        assert len(store.answered(stylize_id)) == len(store.answered(cartoon_id)) == 3


def _campaign(url: str, data: Path, store: Path, budget: int = 6) -> None:
    from copymark.extraction.campaign import CampaignConfig, run_campaign

    res = run_campaign(
        CampaignConfig(victim_url=url, data_dir=data, budget=budget, store_dir=store, size=32, seed=0),
        ATTACKER,
        progress=False,
    )
    assert res.answered_total == budget


def test_two_evaluations_pay_once(tmp_path):
    test = photos(tmp_path / "test", n=12, side=48)
    data = photos(tmp_path / "attacker", n=2, side=64)
    blur = scripted(Blur(), tmp_path / "blur.pt")
    ident = scripted(torch.nn.Identity(), tmp_path / "ident.pt")
    with serve(tmp_path / "s", STYLIZE) as srv:
        _campaign(srv.url, data, tmp_path / "store")
        before = charged(srv.url)
        m1 = run_evaluation(_cfg(srv.url, tmp_path / "run1", test, blur, store=tmp_path / "store"))
        m2 = run_evaluation(_cfg(srv.url, tmp_path / "run2", test, ident, store=tmp_path / "store"))
        assert charged(srv.url) - before == 12  # two evaluations (two surrogates), 12 answers paid once
    e1, e2 = m1["provenance"]["evaluation"], m2["provenance"]["evaluation"]
    assert (e1["paid"], e1["in_store"]) == (12, 0) and (e2["paid"], e2["in_store"]) == (0, 12)
    assert e1["answers_store"] == str(tmp_path / "store" / "evaluation")
    # the extraction's own rows are untouched: test images never become training pairs
    vid = m1["victim"]["victim_id"]
    with QueryStore(tmp_path / "store") as store:
        assert store.counts(vid)["answered"] == 6
    # provenance from the extraction store, in metrics.json and in the report
    ext = m1["provenance"]["extraction"]
    assert (ext["queries_spent"], ext["budget"], ext["strategy"], ext["victim_id"]) == (6, 6, "random", vid)
    assert ext["first_answer"] <= ext["last_answer"]
    assert main(["report", str(tmp_path / "run2")]) == 0
    html = (tmp_path / "run2" / "report.html").read_text()
    assert "6 of 6 (100% of the budget), strategy random" in html and vid in html
    assert "0 paid by this run, 12 already stored" in html


def test_an_evaluation_survives_a_10_per_s_key_at_the_default_concurrency(tmp_path):
    test = photos(tmp_path / "test", n=12, side=48)
    blur = scripted(Blur(), tmp_path / "blur.pt")
    write_keys(tmp_path / "s", rate=10.0, burst=2)  # the README's kind of evaluator key, slower
    with serve(tmp_path / "s", STYLIZE) as srv:
        m = run_evaluation(_cfg(srv.url, tmp_path / "run", test, blur))  # default concurrency 4
        assert charged(srv.url) == 12
    assert m["provenance"]["evaluation"]["paid"] == 12
    limited = sum(1 for e in request_log(tmp_path / "s") if e.get("status") == 429)
    assert limited > 0  # the key's rate limit was really hit, and the evaluation went through it


def test_a_killed_evaluation_resumes_without_requerying(tmp_path):
    test = photos(tmp_path / "test", n=6, side=48)
    sur = scripted(Blur(), tmp_path / "blur.pt")
    stylize = load_model(STYLIZE)

    def slow(x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.5)  # half a second per answer: the kill lands mid-evaluation
        return stylize.fn(x)

    victim = function_model(slow, name="slow-stylize")
    argv = ["evaluate", "--victim-url", "URL", "--api-key", KEY, "--surrogate", str(sur), "--test", str(test)]
    argv += ["--run-dir", str(tmp_path / "run"), "--answers", str(tmp_path / "answers"), "--concurrency", "1"]
    index = tmp_path / "answers" / "index.sqlite"

    def answered() -> int:
        if not index.exists():
            return 0
        with sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=10) as db:
            try:
                return db.execute("SELECT COUNT(*) FROM queries WHERE status='answered'").fetchone()[0]
            except sqlite3.OperationalError:  # the table is being created
                return 0

    with serve(tmp_path / "s", victim, max_batch=1) as srv:
        args = [a if a != "URL" else srv.url for a in argv]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.Popen([sys.executable, "-m", "copymark.cli", *args], env=env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while answered() < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "the evaluation never got two answers"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        at_kill = answered()
        assert 2 <= at_kill < 6  # killed mid-way
        assert main(args + ["--quiet"]) == 0  # the same command resumes
    paid = paid_per_input(tmp_path / "s")
    assert len(paid) == 6 and set(paid.values()) == {1}  # every input answered (and charged) once
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    ev = m["provenance"]["evaluation"]
    assert ev["in_store"] == at_kill and ev["paid"] + ev["replayed"] == 6 - at_kill
    assert m["sets"]["test"]["n"] == 6


def test_a_spent_budget_stops_with_a_budget_hint_and_resumes(tmp_path, capsys):
    test = photos(tmp_path / "test", n=4, side=48)
    sur = scripted(Blur(), tmp_path / "blur.pt")
    argv = ["evaluate", "--api-key", KEY, "--surrogate", str(sur), "--test", str(test), "--quiet"]
    argv += ["--run-dir", str(tmp_path / "run")]
    keys = write_keys(tmp_path / "s", budget=2)
    with serve(tmp_path / "s", STYLIZE) as srv:
        assert main([*argv, "--victim-url", srv.url]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "evaluation stopped with 2 of 4 victim answers" in err
    assert "larger evaluator budget" in err and "not paid again" in err and "reachable" not in err
    write_keys(tmp_path / "s", budget=10)  # the owner raises the budget (the spent 2 persist)
    with serve(tmp_path / "s", STYLIZE, keys=keys) as srv:
        assert main([*argv, "--victim-url", srv.url]) == 0
        assert charged(srv.url) == 2  # only the two missing answers
    assert set(paid_per_input(tmp_path / "s").values()) == {1}


@pytest.mark.parametrize(
    "case, needle",
    [
        ("no_test", "not a folder of images"),
        ("empty_test", "has no images"),
        ("too_small", "SSIM window"),
        ("over_server_limit", "accepts at most"),
        ("gt_size", "the victim's answer will be"),
        ("gt_unpaired", "no ground truth with the same stem"),
        ("gt_pairing_typo", "gt_pairing"),
        ("sr_surrogate", "upscales x4 but the victim x1"),
        ("not_a_store", "not a query store"),
        ("bad_option", "n_boot"),
    ],
)
def test_everything_is_checked_before_a_run_folder_or_a_query(tmp_path, capsys, case, needle):
    test = photos(tmp_path / "test", n=2, side=48)
    gt = None
    sur = scripted(Blur(), tmp_path / "blur.pt")
    extra: list[str] = []
    settings = {}
    match case:
        case "no_test":
            test = tmp_path / "nope"
        case "empty_test":
            test = tmp_path / "empty"
            test.mkdir()
        case "too_small":
            test = photos(tmp_path / "small", n=2, side=8)
        case "over_server_limit":
            settings["max_pixels"] = 40 * 40
        case "gt_size":
            gt = photos(tmp_path / "gt", n=2, side=32)  # paired by stem, but not the answer's size
            extra = ["--gt-pairing", "paired"]
        case "gt_unpaired":  # paired asked for, but the stems differ
            gt = photos(tmp_path / "gtx", n=2, side=64)
            for f in list(gt.iterdir()):
                f.rename(gt / f"other-{f.name}")
            extra = ["--gt-pairing", "paired"]
        case "gt_pairing_typo":
            gt = photos(tmp_path / "gt", n=2, side=64)
            extra = ["--gt-pairing", "pared"]
        case "sr_surrogate":
            sur = scripted(Upscale(), tmp_path / "up.pt")
        case "not_a_store":
            (tmp_path / "somefolder").mkdir()
            extra = ["--store", str(tmp_path / "somefolder")]
        case "bad_option":
            extra = ["--n-boot", "100", "--max-retries", "0"]
    run = tmp_path / "run"
    with serve(tmp_path / "s", STYLIZE, **settings) as srv:
        argv = ["evaluate", "--victim-url", srv.url, "--api-key", KEY, "--surrogate", str(sur), "--test", str(test)]
        argv += ["--run-dir", str(run), "--quiet", *extra] + (["--gt", str(gt)] if gt else [])
        if case == "bad_option":  # an invalid config value, refused by the typed config itself
            with pytest.raises(CopymarkError, match=needle):
                from copymark.config import parse_config

                parse_config(EvaluateConfig, {**_cfg(srv.url, run, test, sur).model_dump(), "n_boot": 5})
        else:
            assert main(argv) == 2
            err = " ".join(capsys.readouterr().err.split())
            assert needle in err and "Traceback" not in err, err
        assert charged(srv.url) == 0
    assert not run.exists()


def _train_from_store(tmp_path: Path, store: Path, monkeypatch) -> Path:
    """`copymark train pix2pix --from-store` as the console script runs it (sys.argv recorded in env.json)."""
    run = tmp_path / "surrogate"
    argv = ["pix2pix", "--from-store", str(store), "--run-dir", str(run), "--size", "32", "--iters", "2"]
    argv += ["--batch-size", "2", "--no-progress", "--net-config", '{"generator": {"num_downs": 5, "ngf": 4}}']
    monkeypatch.setattr(sys, "argv", ["copymark", "train", *argv])
    assert main(["train", *argv]) == 0
    return run


def test_the_store_is_found_from_the_training_record_and_checked_against_the_victim(tmp_path, monkeypatch):
    test = photos(tmp_path / "test", n=2, side=64)
    data = photos(tmp_path / "attacker", n=2, side=64)
    with serve(tmp_path / "s1", STYLIZE) as s1:
        _campaign(s1.url, data, tmp_path / "store")
        sur = _train_from_store(tmp_path, tmp_path / "store", monkeypatch)
        m = run_evaluation(_cfg(s1.url, tmp_path / "run", test, sur))  # no --store: found
    prov = m["provenance"]
    assert prov["extraction"]["store"] == str(tmp_path / "store") and prov["extraction"]["queries_spent"] == 6
    assert prov["training"]["pairs"] == 6 and prov["training"]["procedure"] == "pix2pix"
    assert prov["evaluation"]["answers_store"] == str(tmp_path / "store" / "evaluation")
    md = (tmp_path / "run" / "tables.md").read_text()
    assert "6 of 6 (100% of the budget), strategy random" in md and "6 (query, answer) pairs (pix2pix" in md
    # the surrogate was extracted from the stylize victim: evaluating it against another is refused
    with serve(tmp_path / "s2", CARTOON) as s2:
        with pytest.raises(CopymarkError, match="was trained on answers of victim"):
            run_evaluation(_cfg(s2.url, tmp_path / "run2", test, sur))
        with pytest.raises(CopymarkError, match="holds no queries of victim"):
            run_evaluation(_cfg(s2.url, tmp_path / "run3", test, sur, store=tmp_path / "store"))
        assert charged(s2.url) == 0
    assert not (tmp_path / "run2").exists() and not (tmp_path / "run3").exists()


@pytest.mark.parametrize(
    "error, hint",
    [
        ("budget", "larger evaluator budget"),
        ("key", "check --api-key"),
        ("rate", "--max-rate-wait"),
        ("unreachable", "running and reachable"),
    ],
)
def test_a_stopped_evaluation_gets_the_hint_of_its_cause(tmp_path, error, hint):
    """The evaluation forwards the client's own error, whose hint names the cause (the client's
    tests check those hints against real servers), and adds what is kept and how to resume."""
    from copymark.client.http import AuthError, BudgetExhausted, RateLimited, Unreachable
    from copymark.client.queries import QueryReport
    from copymark.extraction.evaluate import _stop_error

    err = {
        "budget": BudgetExhausted("the server says this key's query budget is spent (HTTP 402)", hint="ask for more"),
        "key": AuthError("the server refused the API key (HTTP 403)", hint="check --api-key"),
        "rate": RateLimited("gave up on the rate limit", hint="raise --max-rate-wait or ask for a higher rate"),
        "unreachable": Unreachable("gave up after 9 attempts", hint="is the server running and reachable at URL?"),
    }[error]
    e = _stop_error(QueryReport(stop_reason=err.message, stop_error=err), 3, 10, tmp_path / "answers")
    assert e.message.startswith("evaluation stopped with 3 of 10 victim answers") and hint in (e.hint or "")
    assert "not paid again" in (e.hint or "")
    others = {"larger evaluator budget", "check --api-key", "--max-rate-wait", "running and reachable"} - {hint}
    assert not any(o in (e.hint or "") for o in others)
