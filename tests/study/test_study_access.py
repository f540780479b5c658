"""Who may take part: invited ids, a panel's ids (the default) or explicitly open; `study invite`;
the `study serve` options. Over httpx's ASGI transport and real SQLite."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from copymark.cli import main
from copymark.errors import ConfigError
from copymark.study.access import PID_RE, ParticipantAccess
from copymark.study.app import create_app
from copymark.study.design import load_study
from copymark.study.store import StudyStore

PW = "pw"


def started(study_dir) -> int:
    return StudyStore(study_dir, load_study(study_dir)).counts()["participants_started"]


def fresh_browser_consents(app, pid: str | None) -> httpx.Response:
    """POST /consent from a new browser (no cookies); follows the redirect."""

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://study") as c:
            first = await c.get("/", params={} if pid is None else {"pid": pid})
            if first.status_code != 200:
                return first
            data = {"agree": "yes"} | ({} if pid is None else {"pid": pid})
            return await c.post("/consent", data=data, follow_redirects=True)

    return asyncio.run(go())


def test_invited_ids_only_once_each(study_dir, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# sent 2024-05-01\nalpha-1\n\n  beta-2  \n")
    access = ParticipantAccess.from_file(ids)
    assert access.mode == "ids" and access.ids == {"alpha-1", "beta-2"}
    app = create_app(study_dir, PW, access=access)
    r = fresh_browser_consents(app, None)
    assert r.status_code == 403 and "Personal link needed" in r.text
    r = fresh_browser_consents(app, "gamma-3")
    assert r.status_code == 403 and "not valid for this study" in r.text
    assert fresh_browser_consents(app, "alpha-1").url.path == "/instructions"
    r = fresh_browser_consents(app, "alpha-1")  # the same link in another browser
    assert r.status_code == 409 and "already started" in r.text
    assert fresh_browser_consents(app, "beta-2").url.path == "/instructions"
    assert started(study_dir) == 2
    con = StudyStore(study_dir, load_study(study_dir))._connect()
    try:
        assert sorted(r[0] for r in con.execute("SELECT external_id FROM participants")) == ["alpha-1", "beta-2"]
    finally:
        con.close()


def test_open_mode_is_explicit_and_admits_repeat_participation(study_dir):
    app = create_app(study_dir, PW, access=ParticipantAccess.open())
    assert all(fresh_browser_consents(app, None).url.path == "/instructions" for _ in range(20))
    assert started(study_dir) == 20  # what the operator chose: 20 of 20
    assert fresh_browser_consents(app, "P-1").url.path == "/instructions"  # an id is still kept once
    assert fresh_browser_consents(app, "P-1").status_code == 409


def test_panel_mode_needs_a_well_formed_id(study_dir):
    app = create_app(study_dir, PW)  # default
    assert fresh_browser_consents(app, "bad id<script>").status_code == 400
    assert fresh_browser_consents(app, "x" * 65).status_code == 400
    assert fresh_browser_consents(app, "5f3c9a0b1d2e4f6a7b8c9d0e").url.path == "/instructions"  # a Prolific-style id
    assert started(study_dir) == 1


def test_participant_id_files_are_checked(tmp_path):
    p = tmp_path / "ids.txt"
    p.write_text("ok-1\nok-1\n")
    with pytest.raises(ConfigError, match="duplicate"):
        ParticipantAccess.from_file(p)
    p.write_text("ok-1\nnot ok\n")
    with pytest.raises(ConfigError, match="invalid id"):
        ParticipantAccess.from_file(p)
    p.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no participant ids"):
        ParticipantAccess.from_file(p)
    with pytest.raises(ConfigError, match="not found"):
        ParticipantAccess.from_file(tmp_path / "missing.txt")


def test_cli_invite_writes_unguessable_ids_and_links(tmp_path, capsys):
    out = tmp_path / "ids.txt"
    assert main(["study", "invite", "--count", "150", "--out", str(out), "--base-url", "https://s.example/"]) == 0
    ids = out.read_text().split()
    assert len(ids) == len(set(ids)) == 150 and all(PID_RE.match(i) and len(i) == 16 for i in ids)
    links = (tmp_path / "ids.txt.links.txt").read_text().split()
    assert links == [f"https://s.example/?pid={i}" for i in ids]
    assert ParticipantAccess.from_file(out).ids == set(ids)
    before = out.read_text()
    assert main(["study", "invite", "--count", "3", "--out", str(out)]) == 2  # ids already sent are never replaced
    assert out.read_text() == before and "already exists" in capsys.readouterr().err
    assert main(["study", "invite", "--count", "0", "--out", str(tmp_path / "none.txt")]) == 2


def test_cli_serve_refuses_conflicting_or_bad_access_before_serving(study_dir, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("a-1\n")
    assert main(["study", "serve", str(study_dir), "--participant-ids", str(ids), "--open"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main(["study", "serve", str(study_dir), "--participant-ids", str(tmp_path / "nope.txt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_admin_page_names_the_access_mode(study_dir):
    async def go(app) -> str:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://study") as c:
            return (await c.get("/admin", auth=("admin", PW))).text

    assert "only the 2 listed participant ids" in asyncio.run(
        go(create_app(study_dir, PW, access=ParticipantAccess.from_ids({"a", "b"})))
    )
    assert "anyone with the link" in asyncio.run(go(create_app(study_dir, PW, access=ParticipantAccess.open())))
