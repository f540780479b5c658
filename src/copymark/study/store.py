"""SQLite store of a study's participants and answers (``STUDY/responses.sqlite``).

Each answer is one INSERT committed in its own ``BEGIN IMMEDIATE`` transaction the moment it
is posted, so a closed tab loses nothing. ``PRIMARY KEY (participant_id, position)`` and
``UNIQUE (participant_id, item_id)`` make a replayed or double submission impossible to count
twice; the plan of each participant is stored when they consent, so the plan that was shown is
the plan that is checked. The optional demographic answers (:mod:`copymark.study.demographics`)
are a separate table, one row per question asked (``NULL`` when left blank), written once.
Connections are short-lived (one per call) so the store is safe to
use from FastAPI's thread pool.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from copymark.errors import DataError
from copymark.study.demographics import QUESTIONS
from copymark.study.design import DB_FILE, PlanItem, StudyConfig, participant_plan

CSV_FIELDS = [
    "participant",
    "position",
    "item_id",
    "input_id",
    "model",
    "score",
    "expected_score",
    "answered_at",
    "completed",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS participants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash TEXT NOT NULL UNIQUE,
    external_id TEXT UNIQUE,
    plan TEXT NOT NULL,
    created_at TEXT NOT NULL,
    completed_at TEXT,
    completion_code TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS responses (
    participant_id INTEGER NOT NULL REFERENCES participants(id),
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    model TEXT NOT NULL CHECK (model IN ('victim', 'surrogate', 'attention')),
    input_id TEXT,
    expected INTEGER,
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    answered_at TEXT NOT NULL,
    PRIMARY KEY (participant_id, position),
    UNIQUE (participant_id, item_id)
);
CREATE TABLE IF NOT EXISTS demographics (
    participant_id INTEGER NOT NULL REFERENCES participants(id),
    question TEXT NOT NULL,
    answer TEXT,
    PRIMARY KEY (participant_id, question)
);
"""

DEMOGRAPHICS_FIELDS = ["participant", "question", "answer"]

Outcome = Literal["recorded", "completed", "duplicate", "out_of_order", "wrong_item", "bad_nonce", "finished"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Participant:
    id: int
    plan: list[PlanItem]
    answered: set[int]
    completed_at: str | None
    completion_code: str | None
    demographics_done: bool = False  # answered (or skipped) the optional demographic questions

    @property
    def next_position(self) -> int | None:
        for it in self.plan:
            if it.position not in self.answered:
                return it.position
        return None


class StudyStore:
    """Participants and answers of one study, in ``<study>/responses.sqlite``."""

    def __init__(self, study_dir: str | Path, cfg: StudyConfig):
        self.path = Path(study_dir) / DB_FILE
        self.cfg = cfg
        self._init()

    # -- plumbing ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 30000")
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def _init(self) -> None:
        db = self._connect()
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('secret', ?)", (secrets.token_hex(32),))
            self._secret = db.execute("SELECT value FROM meta WHERE key='secret'").fetchone()[0].encode()
        finally:
            db.close()

    # -- participants -----------------------------------------------------------------------
    def create_participant(self, external_id: str | None = None) -> tuple[str, int]:
        """New participant with a fresh session token and plan; returns ``(token, id)``.

        Raises :class:`DataError` when ``external_id`` (e.g. a panel's participant id) already
        took part, so nobody is counted twice.
        """
        token = secrets.token_urlsafe(32)
        with self._tx() as db:
            if (
                external_id is not None
                and db.execute("SELECT 1 FROM participants WHERE external_id=?", (external_id,)).fetchone()
            ):
                raise DataError(f"participant id {external_id!r} has already started this study")
            cur = db.execute(
                "INSERT INTO participants(token_hash, external_id, plan, created_at) VALUES (?,?,?,?)",
                (hash_token(token), external_id, "[]", _now()),
            )
            pid = int(cur.lastrowid)
            plan = participant_plan(self.cfg, pid - 1)
            db.execute("UPDATE participants SET plan=? WHERE id=?", (json.dumps([p.model_dump() for p in plan]), pid))
        return token, pid

    def participant_by_token(self, token: str | None) -> Participant | None:
        if not token:
            return None
        db = self._connect()
        try:
            row = db.execute(
                "SELECT id, plan, completed_at, completion_code FROM participants WHERE token_hash=?",
                (hash_token(token),),
            ).fetchone()
            if row is None:
                return None
            answered = {r[0] for r in db.execute("SELECT position FROM responses WHERE participant_id=?", (row[0],))}
            demo = db.execute("SELECT 1 FROM demographics WHERE participant_id=? LIMIT 1", (row[0],)).fetchone()
        finally:
            db.close()
        plan = [PlanItem(**p) for p in json.loads(row[1])]
        return Participant(
            id=row[0],
            plan=plan,
            answered=answered,
            completed_at=row[2],
            completion_code=row[3],
            demographics_done=demo is not None,
        )

    def derive_key(self, label: str) -> bytes:
        """A key for ``label`` derived from this study's persistent secret (e.g. to sign admin cookies)."""
        return hmac.new(self._secret, b"copymark-study:" + label.encode(), hashlib.sha256).digest()

    # -- demographics -----------------------------------------------------------------------
    def record_demographics(self, participant_id: int, answers: dict[str, str | None]) -> bool:
        """Store one participant's answers (``None``: skipped) once; ``False`` if already stored.

        Values must already be checked against the fixed choices (:mod:`copymark.study.demographics`).
        """
        with self._tx() as db:
            if db.execute("SELECT 1 FROM demographics WHERE participant_id=? LIMIT 1", (participant_id,)).fetchone():
                return False
            db.executemany(
                "INSERT INTO demographics(participant_id, question, answer) VALUES (?,?,?)",
                [(participant_id, q, a) for q, a in answers.items()],
            )
        return True

    def demographic_rows(self) -> list[dict]:
        """All demographic answers, ``{"participant", "question", "answer"}`` (``""`` when skipped)."""
        db = self._connect()
        try:
            cur = db.execute(
                "SELECT participant_id, question, answer FROM demographics ORDER BY participant_id, question"
            )
            return [{"participant": p, "question": q, "answer": a or ""} for p, q, a in cur]
        finally:
            db.close()

    # -- answers ----------------------------------------------------------------------------
    def nonce(self, participant_id: int, position: int, item_id: str) -> str:
        """Per-page token binding a form to this participant, position and image."""
        msg = f"{participant_id}:{position}:{item_id}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:32]

    def record_answer(self, participant_id: int, position: int, item_id: str, nonce: str, score: int) -> Outcome:
        """Store one answer atomically; returns what happened (never stores anything twice).

        ``score`` must already be validated as an integer in 1..5 (the schema checks again).
        """
        if not hmac.compare_digest(nonce.encode(), self.nonce(participant_id, position, item_id).encode()):
            return "bad_nonce"
        with self._tx() as db:
            row = db.execute("SELECT plan, completed_at FROM participants WHERE id=?", (participant_id,)).fetchone()
            if row is None:
                return "bad_nonce"
            plan = [PlanItem(**p) for p in json.loads(row[0])]
            if position < 0 or position >= len(plan) or plan[position].item_id != item_id:
                return "wrong_item"
            answered = {
                r[0] for r in db.execute("SELECT position FROM responses WHERE participant_id=?", (participant_id,))
            }
            if position in answered:
                return "duplicate"
            if row[1] is not None:
                return "finished"
            nxt = next((p.position for p in plan if p.position not in answered), None)
            if position != nxt:
                return "out_of_order"
            it = plan[position]
            db.execute(
                "INSERT INTO responses(participant_id, position, item_id, model, input_id, expected, score, "
                "answered_at) VALUES (?,?,?,?,?,?,?,?)",
                (participant_id, position, item_id, it.model, it.input_id, it.expected, int(score), _now()),
            )
            if len(answered) + 1 == len(plan):
                code = secrets.token_hex(4).upper()
                db.execute(
                    "UPDATE participants SET completed_at=?, completion_code=? WHERE id=?",
                    (_now(), code, participant_id),
                )
                return "completed"
        return "recorded"

    # -- reporting --------------------------------------------------------------------------
    def counts(self) -> dict:
        """Live numbers for the admin page."""
        db = self._connect()
        try:
            started = db.execute("SELECT COUNT(*) FROM participants").fetchone()[0]
            completed = db.execute("SELECT COUNT(*) FROM participants WHERE completed_at IS NOT NULL").fetchone()[0]
            per_model = {
                m: {"n": n, "mean": mean}
                for m, n, mean in db.execute(
                    "SELECT model, COUNT(*), AVG(score) FROM responses GROUP BY model ORDER BY model"
                )
            }
            att = db.execute("SELECT COUNT(*), SUM(score = expected) FROM responses WHERE model='attention'").fetchone()
        finally:
            db.close()
        return {
            "participants_started": started,
            "participants_completed": completed,
            "per_model": per_model,
            "attention_checks": att[0],
            "attention_passed": att[1] or 0,
        }

    def rows(self) -> list[dict]:
        """All answers in the export schema (:data:`CSV_FIELDS`), ordered by participant and position."""
        db = self._connect()
        try:
            cur = db.execute(
                "SELECT r.participant_id, r.position, r.item_id, r.input_id, r.model, r.score, r.expected, "
                "r.answered_at, p.completed_at IS NOT NULL FROM responses r JOIN participants p ON p.id = r.participant_id "
                "ORDER BY r.participant_id, r.position"
            )
            out = [dict(zip(CSV_FIELDS, r)) for r in cur]
        finally:
            db.close()
        for r in out:
            r["input_id"] = r["input_id"] or ""
            r["expected_score"] = "" if r["expected_score"] is None else r["expected_score"]
            r["completed"] = int(r["completed"])
        return out


def rows_to_csv(rows: list[dict]) -> str:
    """The export CSV text (header :data:`CSV_FIELDS`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in CSV_FIELDS})
    return buf.getvalue()


def demographics_to_csv(rows: list[dict]) -> str:
    """The demographics CSV text (header :data:`DEMOGRAPHICS_FIELDS`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=DEMOGRAPHICS_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in DEMOGRAPHICS_FIELDS})
    return buf.getvalue()


def read_demographics_csv(path: str | Path) -> list[dict]:
    """Read a demographics CSV (``copymark study export --demographics-out``), checking every answer."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"demographics CSV not found: {p}")
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in DEMOGRAPHICS_FIELDS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{p}: missing column(s) {missing}", hint=f"expected {','.join(DEMOGRAPHICS_FIELDS)}")
        rows = []
        for line, r in enumerate(reader, start=2):
            q, a = r["question"], r["answer"] or ""
            if q not in QUESTIONS:
                raise DataError(f"{p}:{line}: unknown question {q[:40]!r}", hint=f"one of {', '.join(QUESTIONS)}")
            if a and a not in QUESTIONS[q].values:
                raise DataError(
                    f"{p}:{line}: answer {a[:40]!r} is not a choice of {q}", hint=f"one of {QUESTIONS[q].values}"
                )
            rows.append({"participant": r["participant"], "question": q, "answer": a})
    return rows


def read_csv(path: str | Path) -> list[dict]:
    """Read an export/simulation CSV, checking the header and each row's values."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"ratings CSV not found: {p}")
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("participant", "item_id", "model", "score") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{p}: missing column(s) {missing}", hint=f"expected the export schema: {','.join(CSV_FIELDS)}"
            )
        rows = []
        for line, r in enumerate(reader, start=2):
            try:
                score = int(r["score"])
            except (TypeError, ValueError):
                raise DataError(f"{p}:{line}: score {r['score']!r} is not an integer") from None
            if not 1 <= score <= 5:
                raise DataError(f"{p}:{line}: score {score} is outside 1-5")
            if r["model"] not in ("victim", "surrogate", "attention"):
                raise DataError(f"{p}:{line}: model {r['model']!r} is not victim, surrogate or attention")
            exp = (r.get("expected_score") or "").strip()
            rows.append(
                {
                    "participant": r["participant"],
                    "position": int(r.get("position") or 0),
                    "item_id": r["item_id"],
                    "input_id": r.get("input_id") or "",
                    "model": r["model"],
                    "score": score,
                    "expected_score": int(exp) if exp else "",
                    "answered_at": r.get("answered_at") or "",
                    "completed": int(r.get("completed") or 1),
                }
            )
    return rows
