"""copymark.files: atomic writes."""

from __future__ import annotations

import os

from copymark.files import atomic_write_bytes, atomic_write_json


def test_atomic_writes_replace_whole_files_with_a_plain_files_permissions(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open(path, "w") gives under this process's umask
    a, j = tmp_path / "sub" / "a.bin", tmp_path / "b.json"
    atomic_write_bytes(a, b"old")
    atomic_write_bytes(a, b"new")
    atomic_write_json(j, {"k": 1})
    assert a.read_bytes() == b"new" and j.read_text() == '{\n  "k": 1\n}\n'
    for f in (a, j):
        assert f.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777, oct(f.stat().st_mode)
    assert not [p for p in os.listdir(a.parent) if p.endswith(".tmp")]  # no temp file left behind
