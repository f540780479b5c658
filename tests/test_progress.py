"""Progress that a log shows: plain periodic lines off a terminal, a bar on one, lines to the run log."""

from __future__ import annotations

import io

from copymark.progress import Progress


class Clock:
    """A clock the test moves by hand (counts, not durations, decide what is printed)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    out, clock, logged = io.StringIO(), Clock(), []
    with Progress("evaluate: victim answers", 10, stream=out, every_s=10.0, clock=clock, log=logged.append) as p:
        for i in range(10):
            clock.t += 3.0  # 3 s per item: a line once 10 s have passed since the last (items 4 and 8)
            p.advance(note="2 reused" if i == 9 else None)
    lines = out.getvalue().splitlines()
    assert lines[0] == "evaluate: victim answers 0/10 (0%), 0 s"
    assert lines[1] == "evaluate: victim answers 4/10 (40%), 12 s, about 18 s left"
    assert lines[2] == "evaluate: victim answers 8/10 (80%), 24 s, about 6 s left"
    assert len(lines) == 4
    assert lines[-1] == "evaluate: victim answers 10/10 (100%), 30 s (2 reused)"
    assert logged == lines  # the run's log gets the same lines
    assert "\x1b" not in out.getvalue()  # no terminal control codes in a log file


def test_a_bar_on_a_terminal_and_lines_only_in_the_log():
    out, logged = Tty(), []
    with Progress("scoring", 3, stream=out, every_s=0.0, log=logged.append) as p:
        for _ in range(3):
            p.advance()
    text = out.getvalue()
    assert "scoring" in text and "3/3" in text  # rich's bar (MofNCompleteColumn)
    assert "(100%)" not in text  # ... not the plain lines
    assert logged[0].startswith("scoring 0/3") and logged[-1].startswith("scoring 3/3 (100%)")


def test_disabled_prints_nothing_but_still_logs_and_stopped_is_marked():
    out, logged = io.StringIO(), []
    try:
        with Progress("work", None, stream=out, enabled=False, log=logged.append) as p:
            p.advance(2)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert out.getvalue() == ""
    assert logged[0].startswith("work 0,") and logged[-1].startswith("work 2,") and logged[-1].endswith("- stopped")


def test_long_durations_read_as_minutes_and_hours():
    clock = Clock()
    p = Progress("x", 4, stream=io.StringIO(), clock=clock)
    with p:
        clock.t += 150
        p.advance()
        assert p.line() == "x 1/4 (25%), 2 min 30 s, about 7 min 30 s left"
        clock.t += 3 * 3600
        assert p.line().startswith("x 1/4 (25%), 3 h 02 min")
