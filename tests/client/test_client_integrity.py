"""Store integrity: every kind of damage to stored answers and inputs is found, named, refused by
training, reported by ``copymark store check`` and repaired by ``--repair`` without losing or
paying for anything intact.

Real parts: a store filled through uvicorn on 127.0.0.1 (BackgroundServer) with the server's
own Idempotency-Key replies, real files damaged the four ways a disk or a person damages them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import torch

from copymark.cli import main as cli_main
from copymark.client.http import ApiClient
from copymark.client.pairs import training_folder
from copymark.client.queries import query_all
from copymark.client.store import QueryStore, sha256_hex
from copymark.errors import DataError
from copymark.images import decode_image_bytes, encode_png, quantize
from copymark.serving.app import create_app
from copymark.serving.models import function_model
from copymark.serving.server import BackgroundServer
from copymark.serving.settings import ServeSettings

KEY = "integrity-test-key"
N = 6
KINDS = ("flip", "truncate", "delete", "replace")


def _png(seed: int) -> bytes:
    return encode_png(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(seed)))


def damage(path: Path, kind: str, other: Path) -> None:
    """Damage ``path`` in place: one flipped bit (same size), cut in half, deleted, or replaced by
    ``other`` (a valid PNG of another pair)."""
    data = path.read_bytes()
    match kind:
        case "flip":
            path.write_bytes(data[:40] + bytes([data[40] ^ 0x01]) + data[41:])
        case "truncate":
            path.write_bytes(data[: len(data) // 2])
        case "delete":
            path.unlink()
        case "replace":
            path.write_bytes(other.read_bytes())


def _paid_answers(log: Path) -> int:
    """Answers the victim really computed (and charged): 200s that were not replays."""
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    return sum(1 for e in entries if e["status"] == 200 and "replay_of" not in e)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("server")
    (d / "keys.json").write_text(json.dumps({KEY: {"budget": 1000, "rate_per_s": 1000, "burst": 1000}}))
    app = create_app(
        function_model(lambda x: 1 - x, "invert"),
        ServeSettings(keys_file=d / "keys.json", request_log=d / "requests.jsonl"),
    )
    with BackgroundServer(app) as srv:
        yield srv, d / "requests.jsonl"


@pytest.fixture(scope="module")
def master_store(served, tmp_path_factory):
    """A store of N answers made through the server (which keeps each reply for replays)."""
    srv, _ = served
    root = tmp_path_factory.mktemp("master") / "store"
    store = QueryStore(root)

    async def go():
        async with ApiClient(srv.url, KEY, concurrency=2) as c:
            info = await c.info()
            rep = await query_all(c, store, info["victim_id"], [(_png(i), f"img{i}") for i in range(N)])
            return info["victim_id"], rep

    victim_id, rep = asyncio.run(go())
    assert rep.answered == N
    store.set_meta("campaign", json.dumps({"victim_url": srv.url, "victim_id": victim_id, "task": "style"}))
    store.close()
    return root, victim_id


def _copy(master: Path, dst: Path) -> QueryStore:
    shutil.copytree(master, dst)
    return QueryStore(dst)


def _snapshot(root: Path) -> dict[str, tuple[int, float, bytes]]:
    """Every stored PNG: (inode, mtime, bytes), to prove intact files are never touched."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*.png"))
    }


def test_put_file_rewrites_a_damaged_file_of_the_same_size(tmp_path):
    store = QueryStore(tmp_path)
    sha = store.add_input(_png(1), "v")
    ans = _png(2)
    store.record_answer(sha, "v", ans)
    p = store.answer_path(sha256_hex(ans))
    damage(p, "flip", p)
    assert p.stat().st_size == len(ans) and p.read_bytes() != ans
    store.record_answer(sha, "v", ans)  # the same answer again (e.g. a replay)
    assert p.read_bytes() == ans
    q = store.input_path(sha)
    damage(q, "flip", q)
    assert store.restore_input(_png(1)) == sha and q.read_bytes() == _png(1)
    assert store.integrity_check().ok


@pytest.mark.parametrize("what", ["answer", "input"])
@pytest.mark.parametrize("kind", KINDS)
def test_each_damage_is_found_refused_by_training_and_repaired(tmp_path, served, master_store, kind, what):
    srv, log = served
    master, victim_id = master_store
    root = tmp_path / "store"
    store = _copy(master, root)
    pairs = store.pairs(victim_id)
    originals = [(i.read_bytes(), a.read_bytes()) for i, a in pairs]
    col = 0 if what == "input" else 1
    target, other = pairs[2][col], pairs[4][col]
    damage(target, kind, other)
    # found, and named exactly
    rep = store.integrity_check()
    assert not rep.ok and len(rep.damaged) == 1
    d = rep.damaged[0]
    assert (d.what, d.path, d.input_sha) == (what, target, pairs[2][0].stem)
    store.close()
    intact = {k: v for k, v in _snapshot(root).items() if not k.endswith(target.name)}

    # training refuses it, before writing anything, naming the file and the repair
    out = tmp_path / "pairs"
    with pytest.raises(DataError) as ei:
        training_folder(root, out)
    assert str(target) in ei.value.message and "damaged" in ei.value.message
    if what == "answer":  # the hint names the fix for this damage, with the store's own victim URL
        assert f"copymark store check --store {root} --repair --victim-url {srv.url}" in ei.value.hint
    else:
        assert "copymark extract" in ei.value.hint and "rewrites damaged inputs from your photos" in ei.value.hint
    assert not out.exists()

    # `store check` reports it and exits non-zero
    assert cli_main(["store", "check", "--store", str(root)]) == 2

    # `--repair` re-queries only the damaged answer, as a free replay; inputs it cannot re-make
    paid = _paid_answers(log)
    rc = cli_main(["store", "check", "--store", str(root), "--repair", "--victim-url", srv.url, "--api-key", KEY])
    assert _paid_answers(log) == paid  # nothing charged
    with QueryStore(root) as store:
        if what == "answer":
            assert rc == 0 and store.integrity_check().ok
            assert [(i.read_bytes(), a.read_bytes()) for i, a in store.pairs(victim_id)] == originals
            sd = training_folder(root, out)
            assert sd.n_pairs == N
            for i, _ in store.pairs(victim_id):
                got = decode_image_bytes((out / "B" / f"{i.stem}.png").read_bytes())
                assert torch.equal(got, quantize(1 - decode_image_bytes(i.read_bytes())))
        else:
            assert rc == 2 and not store.integrity_check().ok  # an input crop is the attacker's: extract re-makes it
            assert store.counts(victim_id)["answered"] == N  # its intact answer was not thrown away
    after = _snapshot(root)
    assert all(after[k] == v for k, v in intact.items())  # nothing intact was touched


def test_store_check_output_and_hints(tmp_path, served, master_store, capsys):
    srv, _ = served
    master, victim_id = master_store
    root = tmp_path / "store"
    store = _copy(master, root)
    (root / "answers" / "00").mkdir(exist_ok=True)
    (root / "answers" / "00" / ("0" * 64 + ".png")).write_bytes(_png(99))  # an orphan: harmless
    store.close()
    capsys.readouterr()
    assert cli_main(["store", "check", "--store", str(root)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["rows"] == N and report["answered"] == N and report["orphan_files"] == 1
    assert report["problems"] == [] and report["victims"] == [victim_id]

    pairs = QueryStore(root).pairs(victim_id)
    damage(pairs[0][0], "delete", pairs[0][0])
    damage(pairs[1][1], "flip", pairs[1][1])
    assert cli_main(["store", "check", "--store", str(root)]) == 2
    cap = capsys.readouterr()
    report = json.loads(cap.out)
    assert not report["ok"] and len(report["problems"]) == 2
    assert "input file missing" in " ".join(report["problems"]) and "does not hash" in " ".join(report["problems"])
    assert "damaged: 2 problem(s)" in cap.err and "--repair" in cap.err

    assert cli_main(["store", "check", "--store", str(root), "--repair"]) == 2  # needs the victim
    assert "--victim-url and --api-key" in capsys.readouterr().err
    assert cli_main(["store", "check", "--store", str(tmp_path / "nowhere")]) == 2
    assert "not a query store" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_training_folder_relinks_what_a_repair_rewrote(tmp_path, served, master_store):
    """Hard links share the damaged bytes; after the repair (a new file) the layout links the new one."""
    srv, _ = served
    master, victim_id = master_store
    root = tmp_path / "store"
    store = _copy(master, root)
    out = tmp_path / "pairs"
    assert training_folder(root, out).n_pairs == N
    inp, ans = store.pairs(victim_id)[3]
    good = ans.read_bytes()
    damage(ans, "flip", ans)  # in place: the link in out/B is damaged with it
    assert (out / "B" / f"{inp.stem}.png").read_bytes() != good
    store.close()
    with pytest.raises(DataError, match="refusing to train"):
        training_folder(root, out)
    rc = cli_main(["store", "check", "--store", str(root), "--repair", "--victim-url", srv.url, "--api-key", KEY])
    assert rc == 0
    (out / "A" / ("f" * 64 + ".png")).write_bytes(_png(7))  # a stale file of an earlier layout
    assert training_folder(root, out).n_pairs == N
    assert (out / "B" / f"{inp.stem}.png").read_bytes() == good
    assert len(list((out / "A").glob("*.png"))) == N
