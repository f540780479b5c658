"""Progress of long work that a terminal and a log file both show.

:class:`Progress` is one step of a long command (``evaluate: victim answers``, ``scoring``):

* on a terminal, a rich progress bar (count, elapsed and remaining time);
* otherwise (output redirected to a file, a CI log, ``nohup``), plain lines such as
  ``evaluate: victim answers 40/105 (38%), 12 s, about 20 s left`` at the start, every
  ``every_s`` seconds and at the end, so a log shows that the work moves and how fast;
* in both cases the same plain lines go to ``log`` when given (e.g. ``Run.log``, the run
  folder's log.txt).

It writes to stderr by default, so stdout keeps a command's results (tables, JSON) clean.
Whether the stream is a terminal decides the form, so ``copymark evaluate ... > out.txt``
still shows a bar, and ``... > out.txt 2>&1`` plain lines.

This module depends on nothing of copymark, so every layer's long work can use it
(extraction campaigns, evaluation, training).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any


def _duration(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


class Progress:
    """A progress bar on a terminal, periodic plain lines elsewhere (see the module docstring).

    ``total`` may be None (unknown); ``enabled=False`` shows nothing on the stream but still
    writes the start and end lines to ``log``. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        *,
        enabled: bool = True,
        stream: IO[str] | None = None,
        every_s: float = 10.0,
        log: Callable[[str], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        start: int = 0,
    ) -> None:
        self.what, self.total = what, total
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.log = log
        self.clock = clock
        self.done = self.start = start  # ``start``: items done before (a resumed run); the rate counts only new ones
        self.note = ""
        self._bar: Any = None
        self._task: Any = None
        self._t0 = self._last = 0.0

    @property
    def terminal(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # a closed stream
            return False

    # -- lines ------------------------------------------------------------------------------

    def line(self) -> str:
        """The plain progress line now, e.g. ``scoring 3/10 (30%), 4 s, about 9 s left``."""
        elapsed = self.clock() - self._t0
        if self.total:
            pct = 100.0 * self.done / self.total
            text = f"{self.what} {self.done}/{self.total} ({pct:.0f}%), {_duration(elapsed)}"
            new = self.done - self.start
            if new > 0 and self.done < self.total:
                text += f", about {_duration(elapsed * (self.total - self.done) / new)} left"
        else:
            text = f"{self.what} {self.done}, {_duration(elapsed)}"
        return text + (f" ({self.note})" if self.note else "")

    def _emit(self, text: str, to_stream: bool) -> None:
        if to_stream and self.enabled and not self.terminal:
            print(text, file=self.stream, flush=True)
        if self.log is not None:
            self.log(text)

    # -- use --------------------------------------------------------------------------------

    def __enter__(self) -> Progress:
        self._t0 = self._last = self.clock()
        if self.enabled and self.terminal:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=self.total, completed=self.done)
        self._emit(self.line(), to_stream=True)
        return self

    def advance(self, n: int = 1, note: str | None = None) -> None:
        """``n`` more items done; ``note`` (e.g. ``"12 reused"``) is shown after the count."""
        self.done += n
        if note is not None:
            self.note = note
        if self._bar is not None:
            self._bar.update(self._task, advance=n, description=self.what + (f" ({self.note})" if self.note else ""))
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            self._emit(self.line(), to_stream=True)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        end = self.line() if exc_type is None else self.line() + " - stopped"
        self._emit(end, to_stream=True)
