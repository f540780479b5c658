"""Crash-safe file writes, without torch (the attacker's client imports this and starts fast).

A reader sees either the old file or the new one, never a half-written one: the bytes go to a
temp file in the same folder, are fsynced, and an atomic ``os.replace`` puts them in place. The
file gets the permissions a plain ``open(path, "w")`` would give it (0666 less the umask), not
the temp file's private 0600: run records, reports and results are for reading. (Secrets are not
written here: the private key is created 0600 by :func:`copymark.watermark.kit.generate_keypair`.)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from copymark.errors import CopymarkError


def _plain_file_mode() -> int:
    umask = os.umask(0)  # the only way to read it; set back at once, once per process (at import)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _plain_file_mode()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
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
