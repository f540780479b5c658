"""A whole participant session in headless Chromium (Debian's, via Playwright) against a real
``copymark study serve --participant-ids FILE`` process on 127.0.0.1, through a personal link, with
the optional demographic questions (one answered, one left blank); then the stored answers are
checked in SQLite."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PID = "invited-7f3a"


@pytest.fixture
def browser_study(tmp_path, image_folders) -> Path:
    from copymark.study.design import create_study

    out = tmp_path / "browser_study"
    create_study(
        image_folders["victim"],
        image_folders["surrogate"],
        image_folders["examples"],
        out,
        per_participant=6,
        seed=3,
        attention_checks=1,
        demographics=["gender", "age"],
    )
    return out


@pytest.fixture
def server(browser_study, tmp_path):
    study_dir = browser_study
    ids = tmp_path / "ids.txt"
    ids.write_text(f"# invited\n{PID}\nother-id\n")
    port = _free_port()
    env = {**os.environ, "COPYMARK_STUDY_ADMIN_PASSWORD": "browser-pw"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "copymark.cli",
            "study",
            "serve",
            str(study_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--participant-ids",
            str(ids),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"study server did not start (rc={proc.poll()}):\n{out}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_participant_session_in_chromium(server, browser_study, artifacts_dir: Path):
    study_dir = browser_study
    from playwright.sync_api import expect, sync_playwright

    exe = chromium_path_or_skip()
    chosen: list[tuple[str, int]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(viewport={"width": 390, "height": 844}, java_script_enabled=False)
            page = ctx.new_page()
            page.goto(server + "/")  # without the personal link: refused
            assert "Personal link needed" in page.content()
            page.goto(server + f"/?pid={PID}")
            page.get_by_label("I have read the information above and agree to take part.").check()
            with page.expect_navigation():
                page.get_by_role("button", name="Continue").click()
            # the optional questions: answer one by its label, leave the other blank (nothing is required)
            assert page.url.endswith("/about-you")
            assert page.locator("input[type=radio][required]").count() == 0
            page.locator("label[for=age-3]").click()
            assert page.locator("#age-3").is_checked()
            page.screenshot(path=str(artifacts_dir / "study_about_you_mobile.png"), full_page=True)
            with page.expect_navigation():
                page.get_by_role("button", name="Continue").click()
            assert page.url.endswith("/instructions")
            assert page.locator("img[alt^='Example']").count() == 2
            with page.expect_navigation():
                page.get_by_role("link", name="Start").click()

            # submitting without a choice is blocked by the browser (required radio), nothing stored
            page.get_by_role("button", name="Next").click()
            assert page.url.endswith("/rate") and "Image 1 of 7" in page.content()

            step = 0
            while page.url.endswith("/rate"):
                step += 1
                expect(page.get_by_text(f"Image {step} of 7")).to_be_visible()
                item_id = page.locator("input[name=item_id]").get_attribute("value")
                notice = page.locator("#attention-instruction")
                if notice.count():
                    label = notice.locator("strong").inner_text()
                    score = int(label.split(" ")[0])
                else:
                    score = 1 + (step * 2) % 5
                # choose by clicking the option's <label> (checks the label/radio association)
                page.locator(f"label[for=score-{score}]").click()
                assert page.locator(f"#score-{score}").is_checked()
                if step == 2:
                    page.screenshot(path=str(artifacts_dir / "study_rate_mobile.png"), full_page=True)
                chosen.append((item_id, score))
                with page.expect_navigation():  # wait for the POST-redirect-GET to finish
                    page.get_by_role("button", name=re.compile("^(Next|Finish)$")).click()
                if step == 3:
                    # the Back button cannot resubmit an answered page: pages are POST-redirect-GET and
                    # not cached, so going back shows the current (next) image, never the answered one
                    page.go_back()
                    assert page.url.endswith("/rate")
                    assert page.locator("input[name=item_id]").get_attribute("value") != item_id
            assert page.url.endswith("/done")
            code = page.locator("#completion-code").inner_text()
            assert re.fullmatch(r"[0-9A-F]{8}", code)
            page.screenshot(path=str(artifacts_dir / "study_done_mobile.png"), full_page=True)
        finally:
            browser.close()

    con = sqlite3.connect(study_dir / "responses.sqlite")
    try:
        rows = con.execute(
            "SELECT position, item_id, model, score, expected FROM responses ORDER BY position"
        ).fetchall()
        parts = con.execute(
            "SELECT COUNT(*), MAX(completion_code) FROM participants WHERE completed_at IS NOT NULL"
        ).fetchone()
        demo = con.execute("SELECT question, answer FROM demographics ORDER BY question").fetchall()
        external = con.execute("SELECT external_id FROM participants").fetchall()
    finally:
        con.close()
    assert [(r[1], r[3]) for r in rows] == chosen
    assert len(rows) == 7 and [r[0] for r in rows] == list(range(7))
    assert sorted(r[2] for r in rows) == [
        "attention",
        "surrogate",
        "surrogate",
        "surrogate",
        "victim",
        "victim",
        "victim",
    ]
    att = [r for r in rows if r[2] == "attention"]
    assert att[0][3] == att[0][4]  # the instructed answer was given
    assert parts == (1, code)
    assert demo == [("age", "35-44"), ("gender", None)]  # the blank question is stored as skipped
    assert external == [(PID,)]
    # the admin sees it live
    r = httpx.get(server + "/admin", auth=("admin", "browser-pw"))
    assert r.status_code == 200 and 'id="completed">1<' in r.text
    assert (artifacts_dir / "study_rate_mobile.png").stat().st_size > 1000


def chromium_path_or_skip() -> str:
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(p).exists():
            return p
    pytest.skip("Debian's chromium is not installed")
