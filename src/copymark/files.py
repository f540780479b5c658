"""Crash-safe file writes, without torch (the attacker's client imports this and starts fast).

A reader sees either the old file or the new one, never a half-written one: the bytes go to a
temp file in the same folder, are fsynced, and an atomic ``os.replace`` puts them in place.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from copymark.errors import CopymarkError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Indented, key-sorted JSON, written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: str | Path, error: type[CopymarkError] = CopymarkError) -> Any:
    """Parse a JSON file; invalid JSON raises ``error`` naming the file.

    A missing file is left to the caller (``FileNotFoundError``), which knows what the file is
    for and how to make one.
    """
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON ({err})") from None
