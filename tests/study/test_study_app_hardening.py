"""Issue 10 item 7: the study app's admin login and participant access, over real HTTP (uvicorn on
127.0.0.1 via copymark.serving.server.BackgroundServer) with real SQLite."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
import unicodedata

import httpx

from copymark.serving.server import BackgroundServer
from copymark.study.app import create_app
from copymark.study.auth import DEVICE_COOKIE, ThrottlePolicy
from copymark.study.design import load_study
from copymark.study.store import StudyStore

PW = "s3cret-pw"


def started(study_dir) -> int:
    return StudyStore(study_dir, load_study(study_dir)).counts()["participants_started"]


def test_non_ascii_admin_password_is_utf8(study_dir):
    """RFC 7617: HTTP Basic credentials are UTF-8; a password with umlauts, a check mark and CJK works."""
    pw = "pässwörd-✓-密码"
    with BackgroundServer(create_app(study_dir, pw)) as srv, httpx.Client(base_url=srv.url) as c:
        assert c.get("/admin", auth=("admin", pw)).status_code == 200
        r = c.get("/admin")
        assert r.status_code == 401 and 'charset="UTF-8"' in r.headers["www-authenticate"]
        # the same password in decomposed form (as some keyboards/OSes send it) is the same password (NFC)
        assert pw != unicodedata.normalize("NFD", pw)
        assert c.get("/admin", auth=("admin", unicodedata.normalize("NFD", pw))).status_code == 200
        assert c.get("/admin/export.csv", auth=("admin", pw)).status_code == 200
        assert c.get("/admin", auth=("admin", "passwörd-✓-密码")).status_code == 401
        # bytes that are not UTF-8 are a failed login (401), not a server error
        bad = httpx.Headers({"Authorization": "Basic " + __import__("base64").b64encode(b"admin:\xff\xfe").decode()})
        assert c.get("/admin", headers=bad).status_code == 401


def test_wrong_admin_passwords_are_throttled(study_dir):
    """200 wrong passwords in a row from one client: only a handful are checked, the rest get 429."""
    with BackgroundServer(create_app(study_dir, PW)) as srv, httpx.Client(base_url=srv.url) as c:
        t0 = time.monotonic()
        responses = [c.get("/admin", auth=("admin", f"guess-{i}")) for i in range(200)]
        elapsed = time.monotonic() - t0
        codes = [r.status_code for r in responses]
        assert codes.count(429) > 0, "200 wrong passwords were all checked"
        assert codes.count(401) + codes.count(429) == 200
        limited = next(r for r in responses if r.status_code == 429)
        assert int(limited.headers["retry-after"]) >= 1
        # while this client is locked, even the right password is not checked
        r = c.get("/admin", auth=("admin", PW))
        assert r.status_code == 429

        pol = ThrottlePolicy()
        # the locks double from base_delay_s: within `elapsed` seconds at most log2(1 + elapsed / base) of them
        # can run out, each letting one more guess through
        bound = pol.free_failures + math.ceil(math.log2(1 + elapsed / pol.base_delay_s)) + 1
        assert codes.count(401) <= bound
        assert codes[: pol.free_failures] == [401] * pol.free_failures


def test_a_participant_id_is_required_by_default(study_dir):
    """Without an id in the link nobody starts (was: 20 of 20 fresh browsers each counted as a participant)."""
    with BackgroundServer(create_app(study_dir, PW)) as srv:
        for _ in range(20):
            with httpx.Client(base_url=srv.url) as c:  # a fresh browser each time
                r = c.post("/consent", data={"agree": "yes"})
                assert r.status_code == 403 and "personal link" in r.text
                assert c.get("/").status_code == 403
        assert started(study_dir) == 0
        # with an id: once per id, from any number of browsers
        for _ in range(5):
            with httpx.Client(base_url=srv.url) as c:
                c.post("/consent", data={"agree": "yes", "pid": "P-1"})
        assert started(study_dir) == 1


def test_unbounded_input_is_never_echoed(study_dir):
    """A 1 MB item_id was echoed into a 1 MB 404 page; now bodies are bounded and no input is echoed."""
    with BackgroundServer(create_app(study_dir, PW)) as srv, httpx.Client(base_url=srv.url) as c:
        c.post("/consent", data={"agree": "yes", "pid": "P-echo"})
        big = "x" * 1_000_000
        r = c.post("/rate", data={"position": "0", "item_id": big, "nonce": "n", "score": "3"})
        assert 400 <= r.status_code < 500
        assert len(r.content) < 10_000 and "x" * 64 not in r.text
        assert r.status_code == 413
        # the same without Content-Length (chunked): counted while it streams in
        chunks = (b"item_id=" if i == 0 else b"x" * 65536 for i in range(17))
        r = c.post("/rate", content=chunks, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413 and len(r.content) < 10_000
        # under the body limit but far longer than any item id or score: refused, not echoed
        for field in ("item_id", "score", "position", "nonce"):
            data = {"position": "0", "item_id": "deadbeefdeadbeef", "nonce": "n", "score": "3", field: "y" * 3000}
            r = c.post("/rate", data=data)
            assert 400 <= r.status_code < 500 and "y" * 64 not in r.text, field
        r = c.get("/image/" + "z" * 4000)
        assert r.status_code == 404 and "z" * 64 not in r.text
        r = c.get("/no-such-page/" + "w" * 4000)
        assert r.status_code == 404 and "w" * 64 not in r.text
        with httpx.Client(base_url=srv.url) as fresh:  # no session
            r = fresh.get("/", params={"pid": "q" * 5000})
            assert r.status_code == 400 and "q" * 64 not in r.text
            r = fresh.post("/consent", data={"agree": "yes", "pid": "q" * 5000})
            assert 400 <= r.status_code < 500 and "q" * 64 not in r.text
        # the server still serves the participant, and nothing of the above was stored
        assert c.get("/rate").status_code == 200
    assert started(study_dir) == 1
    con = sqlite3.connect(study_dir / "responses.sqlite")
    try:
        assert con.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 0
    finally:
        con.close()


# -- the throttle's rules, with a clock the test moves (no sleeping), through the ASGI app -------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def admin_get(app, ip: str, password: str | None, cookies: dict | None = None) -> httpx.Response:
    """GET /admin from client address ``ip`` (httpx's ASGI transport sets the peer address)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(ip, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://study", cookies=cookies) as c:
            return await c.get("/admin", auth=None if password is None else ("admin", password))

    return asyncio.run(go())


def test_client_lock_doubles_expires_and_resets(study_dir):
    clock = FakeClock()
    policy = ThrottlePolicy(free_failures=3, base_delay_s=10, max_delay_s=40, global_burst=1000)
    app = create_app(study_dir, PW, throttle=policy, clock=clock)
    a, b = "10.0.0.1", "10.0.0.2"
    assert admin_get(app, a, None).status_code == 401  # no credentials: a challenge, not a failure
    assert [admin_get(app, a, "wrong").status_code for _ in range(3)] == [401] * 3
    r = admin_get(app, a, "wrong")
    assert r.status_code == 429 and r.headers["retry-after"] == "10"
    assert admin_get(app, a, PW).status_code == 429  # the right password is not checked while locked
    assert admin_get(app, b, PW).status_code == 200  # another client is not affected
    for wait in (10, 20, 40):
        clock.t += wait - 1
        assert admin_get(app, a, "wrong").status_code == 429
        clock.t += 1
        assert admin_get(app, a, "wrong").status_code == 401  # one more guess after each lock...
        r = admin_get(app, a, "wrong")
        assert r.status_code == 429 and r.headers["retry-after"] == str(min(40, 2 * wait))  # ...doubling, capped
    clock.t += 40
    assert admin_get(app, a, PW).status_code == 200  # the lock ends; a success clears the record
    assert [admin_get(app, a, "wrong").status_code for _ in range(3)] == [401] * 3


def test_global_limit_and_the_admins_device_cookie(study_dir):
    """Failures from many addresses share one budget; the admin's logged-in browser is exempt."""
    clock = FakeClock()
    policy = ThrottlePolicy(free_failures=5, global_burst=10, global_per_minute=6)  # refill: 1 per 10 s
    app = create_app(study_dir, PW, throttle=policy, clock=clock)
    r = admin_get(app, "192.0.2.1", PW)
    assert r.status_code == 200
    device = {DEVICE_COOKIE: r.cookies[DEVICE_COOKIE]}
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
    # an attacker spreads guesses over addresses: after 10 failures in all, nobody new is checked ...
    assert [admin_get(app, f"198.51.100.{i}", "guess").status_code for i in range(10)] == [401] * 10
    r = admin_get(app, "198.51.100.200", "guess")
    assert r.status_code == 429 and r.headers["retry-after"] == "10"
    assert admin_get(app, "203.0.113.7", PW).status_code == 429  # a browser that never logged in waits too
    # ... but the admin's browser keeps access, from any address, for as long as the attack goes on
    assert admin_get(app, "192.0.2.1", PW, cookies=device).status_code == 200
    assert admin_get(app, "198.51.100.3", PW, cookies=device).status_code == 200
    # a forged device cookie is no exemption
    assert admin_get(app, "192.0.2.9", PW, cookies={DEVICE_COOKIE: "0" * 32 + "." + "0" * 32}).status_code == 429
    # the device has its own lock for wrong passwords sent with it
    assert [admin_get(app, "192.0.2.1", "typo", cookies=device).status_code for _ in range(5)] == [401] * 5
    assert admin_get(app, "192.0.2.1", PW, cookies=device).status_code == 429
    # the budget refills: after 10 s one more address may try
    clock.t += 10
    assert admin_get(app, "203.0.113.7", PW).status_code == 200


def test_a_new_admin_password_revokes_device_cookies(study_dir):
    """Device cookies are signed with a key bound to the study's secret and the password."""
    cookie = {DEVICE_COOKIE: admin_get(create_app(study_dir, PW), "192.0.2.1", PW).cookies[DEVICE_COOKIE]}
    tight = ThrottlePolicy(global_burst=1, global_per_minute=1)
    for password, exempt in ((PW, True), ("another-password", False)):
        app = create_app(study_dir, password, throttle=tight, clock=FakeClock())  # restarted server, same study
        assert admin_get(app, "198.51.100.1", "guess").status_code == 401  # uses up the global budget
        assert admin_get(app, "192.0.2.1", password, cookies=cookie).status_code == (200 if exempt else 429)
