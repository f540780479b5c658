"""The attacker's query store: SQLite (WAL) index + content-addressed PNG files.

Layout of a store folder::

    index.sqlite             one row per (input hash, victim id)
    inputs/ab/abcdef....png  query images, named by the SHA-256 of their PNG bytes
    answers/12/1234....png   the victim's answers, named the same way (.json for a classifier's label answers)

Crash safety: every file is written atomically (temp file + fsync + rename) *before* the row
that names it is committed, so a crash (even SIGKILL) can leave at most an orphan file, never
a row that points at a missing file. A row is ``pending`` from just before its query is sent
until its answer is recorded (``answered``) or the query fails for good (``failed``). A rerun
re-sends only ``pending``/``failed`` rows, never ``answered`` ones.

Damage: every file is named by the SHA-256 of its bytes, so a flipped byte, a truncated,
deleted or replaced file is found by hashing (:meth:`QueryStore.integrity_check`, which lists
each damaged file as a :class:`Damage`). Writing a file whose name exists rewrites it unless the
existing bytes hash to the name. :meth:`QueryStore.requeue_damaged` turns answered rows whose
answer is damaged back into ``pending`` rows (the input file intact), so the next query of
that input -- with the same Idempotency-Key, a free replay while the server keeps the reply --
repairs them; nothing intact is touched.

Training code reads pairs with :meth:`QueryStore.pairs` (``[(input_path, answer_path)]``, in
the order the inputs were registered) and checks them with :meth:`QueryStore.verify_pairs`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from copymark.errors import DataError
from copymark.files import atomic_write_bytes

SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    input_sha   TEXT NOT NULL,
    victim_id   TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'answered', 'failed')),
    answer_sha  TEXT,
    request_id  TEXT,
    source      TEXT,
    created     REAL NOT NULL,
    updated     REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    answer_kind TEXT,
    PRIMARY KEY (input_sha, victim_id)
);
CREATE INDEX IF NOT EXISTS queries_victim_status ON queries (victim_id, status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


ANSWER_SUFFIX = {"image": ".png", "label": ".json"}  # answer kind -> file suffix


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_damage(path: Path, sha: str) -> str | None:
    """Why the file at ``path`` is not the bytes with hash ``sha`` (None: it is)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    return None if sha256_hex(data) == sha else "does not hash to its name"


@dataclass(frozen=True)
class Damage:
    """One damaged file of a row: ``what`` is ``"input"`` or ``"answer"``; ``reason`` says how."""

    input_sha: str
    victim_id: str
    status: str
    what: str
    path: Path
    reason: str

    def describe(self) -> str:
        return f"{self.input_sha[:12]}/{self.victim_id}: {self.what} file {self.reason}: {self.path}"


@dataclass
class IntegrityReport:
    """Result of :meth:`QueryStore.integrity_check`: ``ok`` iff ``problems`` is empty.

    ``problems`` has one line per problem (SQLite's own check, rows without an answer hash,
    and each entry of ``damaged``); ``orphan_files`` are files no row names (harmless leftovers
    of a crash or of a repair, never damage).
    """

    rows: int
    answered: int
    problems: list[str] = field(default_factory=list)
    orphan_files: int = 0
    damaged: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class QueryStore:
    """Resumable, content-addressed store of (query, answer) pairs."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise DataError(f"query store {self.root} exists and is not a folder")
        (self.root / "inputs").mkdir(parents=True, exist_ok=True)
        (self.root / "answers").mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "index.sqlite"
        try:
            self._db = sqlite3.connect(str(self.db_path), isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(queries)")}
            if "answer_kind" not in columns:  # a store made before label answers: all its answers are images
                self._db.execute("ALTER TABLE queries ADD COLUMN answer_kind TEXT")
        except sqlite3.DatabaseError as err:
            raise DataError(
                f"{self.db_path}: not a query store index ({err})",
                hint="point --store at an empty folder or at an existing store",
            ) from None

    # -- paths ------------------------------------------------------------------------------

    def _path(self, folder: str, sha: str, suffix: str = ".png") -> Path:
        return self.root / folder / sha[:2] / f"{sha}{suffix}"

    def input_path(self, sha: str) -> Path:
        return self._path("inputs", sha)

    def answer_path(self, sha: str, kind: str | None = "image") -> Path:
        """Where an answer lives: ``<sha>.png`` for image answers, ``<sha>.json`` for label answers."""
        return self._path("answers", sha, ANSWER_SUFFIX[kind or "image"])

    def _put_file(self, folder: str, data: bytes, suffix: str = ".png") -> str:
        """Write ``data`` under its hash, unless the file there already holds exactly these bytes
        (a damaged file of the same name -- even of the same size -- is rewritten)."""
        sha = sha256_hex(data)
        p = self._path(folder, sha, suffix)
        if file_damage(p, sha) is not None:
            atomic_write_bytes(p, data)
        return sha

    def restore_input(self, png: bytes) -> str:
        """Rewrite the input file of these bytes if it is missing or damaged; return its hash.
        Registers nothing (for inputs that rows already name)."""
        return self._put_file("inputs", png)

    # -- writes -----------------------------------------------------------------------------

    def add_input(self, png: bytes, victim_id: str, source: str = "") -> str:
        """Store a query image and register it as ``pending`` (idempotent); return its hash."""
        sha = self._put_file("inputs", png)  # file first ...
        now = time.time()
        self._db.execute(  # ... then the row that names it
            "INSERT OR IGNORE INTO queries (input_sha, victim_id, status, source, created, updated) "
            "VALUES (?, ?, 'pending', ?, ?, ?)",
            (sha, victim_id, source, now, now),
        )
        return sha

    def mark_sent(self, input_sha: str, victim_id: str) -> None:
        """Count one more attempt to query this input (before the request goes out)."""
        self._db.execute(
            "UPDATE queries SET attempts = attempts + 1, updated = ? WHERE input_sha=? AND victim_id=?",
            (time.time(), input_sha, victim_id),
        )

    def record_answer(
        self, input_sha: str, victim_id: str, answer: bytes, request_id: str = "", kind: str = "image"
    ) -> str:
        """Store the victim's answer for a registered input; return the answer's hash.

        ``kind``: ``"image"`` (a PNG, from /v1/translate) or ``"label"`` (JSON, from /v1/classify).
        """
        if kind not in ANSWER_SUFFIX:
            raise ValueError(f"answer kind must be one of {', '.join(ANSWER_SUFFIX)}, got {kind!r}")
        sha = self._put_file("answers", answer, ANSWER_SUFFIX[kind])  # file first, atomically ...
        cur = self._db.execute(  # ... then the row
            "UPDATE queries SET status='answered', answer_sha=?, answer_kind=?, request_id=?, updated=?, error=NULL "
            "WHERE input_sha=? AND victim_id=?",
            (sha, kind, request_id, time.time(), input_sha, victim_id),
        )
        if cur.rowcount != 1:
            raise DataError(f"query store: answer for unknown input {input_sha[:12]} (victim {victim_id})")
        return sha

    def record_failure(self, input_sha: str, victim_id: str, error: str, request_id: str = "") -> None:
        """Mark a query as failed for good (kept for the record; a rerun may retry it)."""
        self._db.execute(
            "UPDATE queries SET status='failed', error=?, request_id=?, updated=? "
            "WHERE input_sha=? AND victim_id=? AND status != 'answered'",
            (error[:500], request_id, time.time(), input_sha, victim_id),
        )

    def requeue_damaged(self, victim_id: str | None = None) -> list[Damage]:
        """Turn answered rows whose answer file is damaged, and whose input file is intact, back
        into ``pending`` rows, so the next query of that input repairs them; return what was
        damaged (every damaged file of the rows checked, requeued or not).

        A row whose input is damaged too stays as it is: the input must be restored first
        (:meth:`restore_input`; ``copymark extract`` does so from the attacker's photos).
        """
        report = self.integrity_check(victim_id=victim_id)
        bad_inputs = {(d.input_sha, d.victim_id) for d in report.damaged if d.what == "input"}
        now = time.time()
        for d in report.damaged:
            if d.what == "answer" and (d.input_sha, d.victim_id) not in bad_inputs:
                self._db.execute(
                    "UPDATE queries SET status='pending', updated=?, error=? WHERE input_sha=? AND victim_id=? "
                    "AND status='answered'",
                    (now, f"answer file {d.reason}; requeued", d.input_sha, d.victim_id),
                )
        return report.damaged

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_campaign(self, victim_id: str, record: dict[str, Any]) -> None:
        """Record the campaign against ``victim_id`` (one record per victim: a second victim's
        campaign in the same store never overwrites the first's budget and strategy)."""
        self.set_meta(f"campaign:{victim_id}", json.dumps({**record, "victim_id": victim_id}, sort_keys=True))

    def campaign(self, victim_id: str | None = None) -> dict[str, Any]:
        """The recorded campaign against ``victim_id`` ({} when none); ``victim_id`` may be
        omitted when the store holds one victim. Stores written before per-victim records keep
        one ``campaign`` record, used when it names this victim."""
        if victim_id is None:
            vs = self.victims()
            if len(vs) != 1:
                return {}
            victim_id = vs[0]
        for key in (f"campaign:{victim_id}", "campaign"):
            text = self.get_meta(key)
            if not text:
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("victim_id") in (None, victim_id):
                return rec
        return {}

    # -- reads ------------------------------------------------------------------------------

    def status(self, input_sha: str, victim_id: str) -> str | None:
        row = self._db.execute(
            "SELECT status FROM queries WHERE input_sha=? AND victim_id=?", (input_sha, victim_id)
        ).fetchone()
        return row[0] if row else None

    def answer_for(self, input_sha: str, victim_id: str) -> bytes | None:
        """The stored answer of ``victim_id`` to the input with hash ``input_sha`` (None if not
        answered). The file is checked against its hash: a damaged answer is a DataError naming
        it, never returned."""
        row = self._db.execute(
            "SELECT answer_sha, answer_kind FROM queries WHERE input_sha=? AND victim_id=? AND status='answered'",
            (input_sha, victim_id),
        ).fetchone()
        if row is None or not row[0]:
            return None
        p = self.answer_path(row[0], row[1])
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise DataError(
                f"query store {self.root}: answer file missing: {p}", hint="run `copymark store check --repair`"
            ) from None
        if sha256_hex(data) != row[0]:
            raise DataError(
                f"query store {self.root}: answer file {p} does not match its hash (damaged)",
                hint="run `copymark store check --repair`",
            )
        return data

    def answered(self, victim_id: str) -> set[str]:
        """Input hashes already answered by this victim."""
        rows = self._db.execute(
            "SELECT input_sha FROM queries WHERE victim_id=? AND status='answered'", (victim_id,)
        ).fetchall()
        return {r[0] for r in rows}

    def sent_before(self, victim_id: str) -> set[str]:
        """Input hashes of this victim sent at least once but not answered in the store (the
        server may have answered them: a rerun's query may be a free replay)."""
        rows = self._db.execute(
            "SELECT input_sha FROM queries WHERE victim_id=? AND status!='answered' AND attempts > 0", (victim_id,)
        ).fetchall()
        return {r[0] for r in rows}

    def counts(self, victim_id: str | None = None) -> dict[str, int]:
        """Rows per status (for one victim, or all)."""
        if victim_id is None:
            rows = self._db.execute("SELECT status, COUNT(*) FROM queries GROUP BY status").fetchall()
        else:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM queries WHERE victim_id=? GROUP BY status", (victim_id,)
            ).fetchall()
        out = {"pending": 0, "answered": 0, "failed": 0}
        out.update({s: n for s, n in rows})
        return out

    def victims(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT victim_id FROM queries ORDER BY victim_id")]

    def rows(self, victim_id: str | None = None) -> list[dict[str, object]]:
        cur = self._db.execute(
            "SELECT * FROM queries" + (" WHERE victim_id=?" if victim_id else "") + " ORDER BY created, input_sha",
            (victim_id,) if victim_id else (),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def pairs(self, victim_id: str | None = None) -> list[tuple[Path, Path]]:
        """``[(input_png, answer_png)]`` of answered queries with image answers, in query order, for training.

        Query order is the order the inputs were registered (just before each was first sent);
        it does not change when a damaged answer is re-queried. ``victim_id`` may be omitted
        when the store holds exactly one victim. The files are not read: see :meth:`verify_pairs`.
        """
        if victim_id is None:
            vs = self.victims()
            if len(vs) != 1:
                raise DataError(
                    f"query store {self.root} holds {len(vs)} victims ({', '.join(vs) or 'none'})",
                    hint="name the victim id",
                )
            victim_id = vs[0]
        rows = self._db.execute(
            "SELECT input_sha, answer_sha FROM queries WHERE victim_id=? AND status='answered' "
            "AND COALESCE(answer_kind, 'image')='image' ORDER BY created, input_sha",
            (victim_id,),
        ).fetchall()
        return [(self.input_path(i), self.answer_path(a)) for i, a in rows]

    def integrity_check(self, verify_hashes: bool = True, victim_id: str | None = None) -> IntegrityReport:
        """SQLite ``PRAGMA integrity_check`` + every row's files exist and hash to their names.

        ``victim_id``: check only that victim's rows (orphans are counted for the whole store).
        ``verify_hashes=False`` checks only that the files exist (no reading).
        """
        problems: list[str] = []
        res = self._db.execute("PRAGMA integrity_check").fetchall()
        if [r[0] for r in res] != ["ok"]:
            problems.append("sqlite: " + "; ".join(str(r[0]) for r in res[:5]))
        rows = self._db.execute(
            "SELECT input_sha, victim_id, status, answer_sha, answer_kind FROM queries"
            + (" WHERE victim_id=?" if victim_id is not None else "")
            + " ORDER BY created, input_sha",
            (victim_id,) if victim_id is not None else (),
        ).fetchall()
        damaged: list[Damage] = []
        answered = 0
        for input_sha, vid, status, answer_sha, answer_kind in rows:
            files = [("input", self.input_path(input_sha), input_sha)]
            if status == "answered":
                answered += 1
                if not answer_sha:
                    problems.append(f"{input_sha[:12]}/{vid}: answered without an answer hash")
                else:
                    files.append(("answer", self.answer_path(answer_sha, answer_kind), answer_sha))
            for what, p, sha in files:
                if verify_hashes:
                    reason = file_damage(p, sha)
                else:
                    reason = None if p.is_file() else "missing"
                if reason is not None:
                    d = Damage(input_sha, vid, status, what, p, reason)
                    damaged.append(d)
                    problems.append(d.describe())
        return IntegrityReport(
            rows=len(rows), answered=answered, problems=problems, orphan_files=self._orphans(), damaged=damaged
        )

    def _orphans(self) -> int:
        named = {self.input_path(r[0]) for r in self._db.execute("SELECT DISTINCT input_sha FROM queries")}
        named |= {
            self.answer_path(r[0], r[1])
            for r in self._db.execute(
                "SELECT DISTINCT answer_sha, answer_kind FROM queries WHERE answer_sha IS NOT NULL"
            )
        }
        return sum(
            1
            for folder in ("inputs", "answers")
            for p in (self.root / folder).rglob("*")
            if p.suffix in (".png", ".json") and p not in named
        )

    def verify_pairs(self, victim_id: str | None = None) -> tuple[list[tuple[Path, Path]], list[Damage]]:
        """:meth:`pairs`, each file read and checked against its hash: ``(pairs, damaged files)``."""
        pairs = self.pairs(victim_id)
        vid = victim_id or self.victims()[0]
        damaged: list[Damage] = []
        for inp, ans in pairs:
            for what, p in (("input", inp), ("answer", ans)):
                reason = file_damage(p, p.stem)
                if reason is not None:
                    damaged.append(Damage(inp.stem, vid, "answered", what, p, reason))
        return pairs, damaged

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> QueryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def store_pairs(store_dir: str | Path, victim_id: str | None = None) -> list[tuple[Path, Path]]:
    """Training entry point: the (input, answer) PNG pairs of a store folder."""
    p = Path(store_dir)
    if not (p / "index.sqlite").is_file():
        raise DataError(f"{p}: not a query store (no index.sqlite)", hint="run `copymark extract --store DIR` first")
    with QueryStore(p) as s:
        return s.pairs(victim_id)
