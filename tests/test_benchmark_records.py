"""Recorded benchmark results (benchmarks/results/*.json) are portable and say how they were made.

Issue 11 item 5: a record names data by paths relative to the data root or the repository, never
by absolute paths of the machine that made it, and it carries the command that produced it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
RECORDS = sorted(RESULTS.glob("*.json"))
# an absolute POSIX path with at least two components, a Windows drive path or a home folder,
# anywhere in a string (commands hold several paths); URLs (scheme://host/...) are not paths
ABSOLUTE = re.compile(r"(?<![\w.:/])(/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+|[A-Za-z]:\\|~/)")


def _strings(value, where="$"):
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k, f"{where}.<key>")
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")


def _commands(value):
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "command" and isinstance(v, str) and v.strip():
                yield v
            else:
                yield from _commands(v)
    elif isinstance(value, list):
        for v in value:
            yield from _commands(v)


def test_the_pattern_finds_absolute_paths_and_spares_relative_ones():
    assert ABSOLUTE.search("--out /work/scratch/run --queries 3")
    assert ABSOLUTE.search("/home/alice/data")
    assert ABSOLUTE.search("C:\\data\\x")
    assert not ABSOLUTE.search("--data sr/Set5 --out runs/x")
    assert not ABSOLUTE.search("see https://github.com/org/repo/blob/x")
    assert not ABSOLUTE.search("3.20 +/- 1.59, ms/request")


@pytest.mark.skipif(not RECORDS, reason="no recorded results in benchmarks/results")
@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.name)
def test_records_hold_no_machine_paths_and_name_their_command(record):
    data = json.loads(record.read_text(encoding="utf-8"))
    bad = [f"{where}: {s!r}" for where, s in _strings(data) if ABSOLUTE.search(s)]
    assert not bad, f"{record.name} names absolute paths of the machine that made it: {bad[:5]}"
    assert list(_commands(data)), f"{record.name} does not say which command made it (no 'command' field)"
