"""The study web app through its real ASGI stack (Starlette TestClient over httpx) and real SQLite."""

from __future__ import annotations

import re
import sqlite3
import threading
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from copymark.study.app import COOKIE, create_app
from copymark.study.design import load_study
from copymark.study.store import StudyStore, read_csv

PW = "s3cret-pw"


@pytest.fixture
def client(study_dir):
    app = create_app(study_dir, PW)
    with TestClient(app, follow_redirects=True) as c:
        yield c


def form_fields(html: str) -> dict:
    return dict(re.findall(r'name="(position|item_id|nonce)" value="([^"]+)"', html))


def expected_score(html: str) -> str | None:
    m = re.search(r"please choose <strong>(\d)", html)
    return m.group(1) if m else None


def db_rows(study_dir) -> list[tuple]:
    con = sqlite3.connect(study_dir / "responses.sqlite")
    try:
        return con.execute(
            "SELECT participant_id, position, item_id, model, score FROM responses ORDER BY participant_id, position"
        ).fetchall()
    finally:
        con.close()


def start(client, pid: str = "P-1") -> None:
    r = client.get("/", params={"pid": pid})
    assert r.status_code == 200 and 'name="agree"' in r.text and f'value="{pid}"' in r.text
    r = client.post("/consent", data={"agree": "yes", "pid": pid})
    assert r.status_code == 200 and r.url.path == "/instructions"
    assert "Example 1" in r.text and "/image/" in r.text


class _A11y(HTMLParser):
    def __init__(self):
        super().__init__()
        self.radios, self.label_for, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "input" and a.get("type") == "radio":
            self.radios.append(a)
        if tag == "label" and "for" in a:
            self.label_for.append(a["for"])


def test_full_session_stores_every_answer(client, study_dir):
    start(client)
    cfg = load_study(study_dir)
    given = []
    r = client.get("/rate")
    for step in range(7):
        assert r.url.path == "/rate"
        assert f"Image {step + 1} of 7" in r.text
        f = form_fields(r.text)
        score = expected_score(r.text) or str(1 + step % 5)
        given.append((int(f["position"]), f["item_id"], int(score)))
        r = client.post("/rate", data={**f, "score": score})
        assert r.status_code == 200
    assert r.url.path == "/done"
    code = re.search(r'id="completion-code">([0-9A-F]{8})<', r.text).group(1)
    rows = db_rows(study_dir)
    assert [(p, i, s) for _, p, i, _, s in rows] == given
    # stored models follow the plan that was shown, which is participant 0's seeded plan
    from copymark.study.design import participant_plan

    plan = participant_plan(cfg, 0)
    assert [row[3] for row in rows] == [p.model for p in plan]
    assert [row[2] for row in rows] == [p.item_id for p in plan]
    # coming back shows the same code; the participant is counted once
    assert client.get("/").url.path == "/done"
    assert code in client.get("/done").text
    store = StudyStore(study_dir, cfg)
    c = store.counts()
    assert c["participants_started"] == 1 and c["participants_completed"] == 1
    assert c["per_model"]["victim"]["n"] == 3 and c["per_model"]["surrogate"]["n"] == 3
    assert c["attention_checks"] == 1 and c["attention_passed"] == 1


def test_each_answer_is_committed_immediately(client, study_dir):
    start(client)
    f = form_fields(client.get("/rate").text)
    client.post("/rate", data={**f, "score": "4"})
    # a fresh connection (as after a closed tab or a crash) sees the answer
    assert len(db_rows(study_dir)) == 1 and db_rows(study_dir)[0][4] == 4
    # leaving and coming back resumes at the next image
    r = client.get("/")
    assert r.url.path == "/rate" and "Image 2 of 7" in r.text


def test_bad_input_is_refused_and_nothing_counts_twice(client, study_dir):
    start(client)
    f = form_fields(client.get("/rate").text)
    for bad in ("0", "6", "3.5", "abc", "-1"):
        r = client.post("/rate", data={**f, "score": bad})
        assert r.status_code == 422 and "1 to 5" in r.text
    r = client.post("/rate", data=f)  # no score chosen
    assert r.status_code == 422 and "choose" in r.text
    r = client.post("/rate", data={**f, "item_id": "deadbeefdeadbeef", "score": "3"})
    assert r.status_code == 404 and "Unknown image" in r.text
    r = client.post("/rate", data={**f, "nonce": "0" * 32, "score": "3"})
    assert r.status_code == 403
    assert db_rows(study_dir) == []
    r = client.post("/rate", data={**f, "score": "2"})
    assert r.status_code == 200 and r.url.path == "/rate"
    r = client.post("/rate", data={**f, "score": "5"})  # replay / double submission
    assert r.status_code == 409 and "not counted again" in r.text
    rows = db_rows(study_dir)
    assert len(rows) == 1 and rows[0][4] == 2  # the first answer stands
    # answering a later page before the current one (with a valid token for it) is refused
    store = StudyStore(study_dir, load_study(study_dir))
    p = store.participant_by_token(client.cookies.get(COOKIE))
    later = p.plan[3]
    r = client.post(
        "/rate",
        data={"position": "3", "item_id": later.item_id, "score": "1", "nonce": store.nonce(p.id, 3, later.item_id)},
    )
    assert r.status_code == 409
    # an image of the study that is not this page's image
    other = p.plan[2].item_id
    r = client.post(
        "/rate", data={"position": "1", "item_id": other, "score": "1", "nonce": store.nonce(p.id, 1, other)}
    )
    assert r.status_code == 404
    assert len(db_rows(study_dir)) == 1
    assert client.get("/image/unknown-id").status_code == 404


def test_missing_session_and_consent(study_dir):
    with TestClient(create_app(study_dir, PW)) as c:
        for path in ("/rate", "/instructions", "/done"):
            r = c.get(path)
            assert r.status_code == 401 and "session" in r.text
        r = c.post("/rate", data={"position": "0", "item_id": "x", "nonce": "y", "score": "3"})
        assert r.status_code == 401
        r = c.post("/consent", data={"pid": "P-9"})
        assert r.status_code == 400 and "consent" in r.text.lower()
        assert StudyStore(study_dir, load_study(study_dir)).counts()["participants_started"] == 0


def test_external_id_counted_once(study_dir):
    app = create_app(study_dir, PW)
    with TestClient(app) as a, TestClient(app) as b:
        assert 'value="P-123"' in a.get("/?pid=P-123").text
        assert a.post("/consent", data={"agree": "yes", "pid": "P-123"}).status_code == 200
        r = b.post("/consent", data={"agree": "yes", "pid": "P-123"})
        assert r.status_code == 409
        assert a.get("/?pid=bad%20id<script>").status_code in (303, 200)  # a has a session: redirected
        assert b.get("/?pid=bad%20id<script>").status_code == 400
    assert StudyStore(study_dir, load_study(study_dir)).counts()["participants_started"] == 1


def test_rate_page_is_accessible_and_mobile_ready(client):
    start(client)
    html = client.get("/rate").text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "<script" not in html  # works without JavaScript
    p = _A11y()
    p.feed(html)
    assert "fieldset" in p.tags and "legend" in p.tags and "progress" in p.tags
    ids = [r["id"] for r in p.radios]
    assert len(ids) == 5 and [r["value"] for r in p.radios] == ["1", "2", "3", "4", "5"]
    assert sorted(p.label_for) == sorted(ids)  # every option has its <label for=...>
    assert all("required" in r for r in p.radios)
    assert re.search(r'<img src="/image/[0-9a-f]{16}" alt="[^"]+"', html)


def test_admin_pages_need_the_password(client, study_dir):
    assert client.get("/admin").status_code == 401
    assert client.get("/admin", auth=("admin", "wrong")).status_code == 401
    assert client.get("/admin", auth=("root", PW)).status_code == 401
    assert client.get("/admin/export.csv", auth=("admin", "wrong")).status_code == 401
    r = client.get("/admin")
    assert r.headers["www-authenticate"].startswith("Basic")
    start(client)
    f = form_fields(client.get("/rate").text)
    client.post("/rate", data={**f, "score": "5"})
    r = client.get("/admin", auth=("admin", PW))
    assert r.status_code == 200 and 'id="started">1<' in r.text
    r = client.get("/admin/export.csv", auth=("admin", PW))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    path = study_dir / "export.csv"
    path.write_text(r.text)
    rows = read_csv(path)
    assert len(rows) == 1 and rows[0]["score"] == 5 and rows[0]["item_id"] == f["item_id"]


def test_concurrent_double_submission_is_stored_once(study_dir):
    cfg = load_study(study_dir)
    store = StudyStore(study_dir, cfg)
    token, pid = store.create_participant()
    p = store.participant_by_token(token)
    item = p.plan[0].item_id
    nonce = store.nonce(pid, 0, item)
    outcomes = []
    barrier = threading.Barrier(8)

    def post():
        barrier.wait()
        outcomes.append(StudyStore(study_dir, cfg).record_answer(pid, 0, item, nonce, 3))

    threads = [threading.Thread(target=post) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(outcomes) == ["duplicate"] * 7 + ["recorded"]
    assert len(db_rows(study_dir)) == 1
