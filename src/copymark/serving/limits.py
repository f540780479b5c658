"""Per-key limits: a token-bucket rate limiter and a persistent query budget.

Budget policy: a key is charged only for *successful answers* (HTTP 200 with an image). A
request is first *reserved* (so concurrent requests of a key with one query left cannot all
be answered), and the reservation becomes a charge when the answer is ready, or is released
when anything fails (bad upload, victim error, timeout, full queue). Spent counts live in
SQLite (WAL), so restarting the server never refills a budget. Keys are stored as SHA-256
hashes, never in clear.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class TokenBucket:
    """Classic token bucket: ``burst`` tokens, refilled at ``rate`` per second."""

    rate: float
    burst: int
    tokens: float = -1.0
    last: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def take(self, now: float | None = None) -> float:
        """Take one token; return 0.0 on success, else seconds until one is available."""
        now = time.monotonic() if now is None else now
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class UsageLedger:
    """Spent answers per key (SQLite), reservations in memory, idempotent-answer cache."""

    def __init__(self, path: Path, cache_per_key: int = 256):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.cache_per_key = cache_per_key
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash or kill of the server process (the OS holds it);
        # only a power loss can drop the last few charges. FULL would fsync on every answer,
        # on the event loop.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS usage (key_hash TEXT PRIMARY KEY, spent INTEGER NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS replies (key_hash TEXT NOT NULL, idem_key TEXT NOT NULL, "
            "body_sha TEXT NOT NULL, png BLOB NOT NULL, request_id TEXT NOT NULL, created REAL NOT NULL, "
            "PRIMARY KEY (key_hash, idem_key))"
        )
        self._reserved: dict[str, int] = {}

    def spent(self, kh: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT spent FROM usage WHERE key_hash=?", (kh,)).fetchone()
        return int(row[0]) if row else 0

    def reserve(self, kh: str, budget: int) -> bool:
        """Reserve one answer if ``spent + reserved < budget``."""
        with self._lock:
            row = self._db.execute("SELECT spent FROM usage WHERE key_hash=?", (kh,)).fetchone()
            spent = int(row[0]) if row else 0
            if spent + self._reserved.get(kh, 0) >= budget:
                return False
            self._reserved[kh] = self._reserved.get(kh, 0) + 1
            return True

    def release(self, kh: str) -> None:
        with self._lock:
            self._reserved[kh] = max(0, self._reserved.get(kh, 0) - 1)

    def charge(
        self, kh: str, idem_key: str | None = None, body_sha: str = "", png: bytes = b"", request_id: str = ""
    ) -> int:
        """Turn a reservation into a spent answer (and cache the reply); return the new spent count."""
        with self._lock:
            self._reserved[kh] = max(0, self._reserved.get(kh, 0) - 1)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO usage (key_hash, spent) VALUES (?, 1) "
                    "ON CONFLICT(key_hash) DO UPDATE SET spent = spent + 1",
                    (kh,),
                )
                if idem_key and self.cache_per_key > 0:
                    self._db.execute(
                        "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?)",
                        (kh, idem_key, body_sha, png, request_id, time.time()),
                    )
                    self._db.execute(
                        "DELETE FROM replies WHERE key_hash=? AND idem_key NOT IN (SELECT idem_key FROM replies "
                        "WHERE key_hash=? ORDER BY created DESC LIMIT ?)",
                        (kh, kh, self.cache_per_key),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            row = self._db.execute("SELECT spent FROM usage WHERE key_hash=?", (kh,)).fetchone()
        return int(row[0])

    def cached_reply(self, kh: str, idem_key: str) -> tuple[str, bytes, str] | None:
        """``(body_sha, png, request_id)`` of an earlier answer with this Idempotency-Key, if kept."""
        with self._lock:
            row = self._db.execute(
                "SELECT body_sha, png, request_id FROM replies WHERE key_hash=? AND idem_key=?", (kh, idem_key)
            ).fetchone()
        return (row[0], bytes(row[1]), row[2]) if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
