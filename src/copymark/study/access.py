"""Who may take part: how an operator ties participants to a panel's ids.

Three modes, chosen when the study is served (``copymark study serve``):

* ``ids``: only the ids in a list the operator gives (``--participant-ids FILE``, one id per line,
  e.g. made by ``copymark study invite``); each person gets a personal link ``/?pid=ID``.
* ``panel`` (the default): any well-formed id in the link, e.g. the one a recruiting panel appends
  (Prolific's ``?pid={{%PROLIFIC_PID%}}``); the panel is what stops one person from holding two
  ids, so reconcile completion codes with it.
* ``open``: no id needed, every new browser session is a new participant; one person can take
  part again from another browser. Only on explicit request (``--open``).

In every mode an id starts the study at most once (``UNIQUE`` in the store), so one completion
per id. Ids are opaque: letters, digits, ``.``, ``_`` and ``-``, at most 64 characters.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from copymark.errors import ConfigError

PID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
AccessMode = Literal["ids", "panel", "open"]
Refusal = Literal["invalid", "missing", "unknown"]


@dataclass(frozen=True)
class ParticipantAccess:
    """The access mode and, for ``ids``, the allowed ids."""

    mode: AccessMode = "panel"
    ids: frozenset[str] = frozenset()

    @classmethod
    def open(cls) -> ParticipantAccess:
        return cls("open")

    @classmethod
    def panel(cls) -> ParticipantAccess:
        return cls("panel")

    @classmethod
    def from_ids(cls, ids: list[str] | set[str] | frozenset[str], where: str = "participant ids") -> ParticipantAccess:
        bad = sorted(i for i in ids if not PID_RE.match(i))
        if bad:
            raise ConfigError(
                f"{where}: {len(bad)} invalid id(s), e.g. {bad[0][:70]!r}",
                hint="ids may contain only letters, digits, '.', '_' and '-' (at most 64 characters)",
            )
        if not ids:
            raise ConfigError(
                f"{where}: no participant ids", hint="one id per line; `copymark study invite` makes some"
            )
        return cls("ids", frozenset(ids))

    @classmethod
    def from_file(cls, path: str | Path) -> ParticipantAccess:
        """Ids from a text file: one per line; blank lines and lines starting with ``#`` are skipped."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"participant id file not found: {p}", hint="make one with `copymark study invite`")
        ids: list[str] = []
        for line in p.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                ids.append(line)
        dup = len(ids) - len(set(ids))
        if dup:
            raise ConfigError(f"{p}: {dup} duplicate id(s)", hint="each participant needs an id of their own")
        return cls.from_ids(ids, where=str(p))

    def refusal(self, pid: str | None) -> Refusal | None:
        """Why a link with id ``pid`` (``None``: no id) may not start the study, or ``None`` if it may."""
        if pid is not None and not PID_RE.match(pid):
            return "invalid"
        match self.mode:
            case "open":
                return None
            case "panel":
                return "missing" if pid is None else None
            case "ids":
                if pid is None:
                    return "missing"
                return None if pid in self.ids else "unknown"
        raise ConfigError(f"unknown access mode {self.mode!r}")  # pragma: no cover (Literal)

    def describe(self) -> str:
        match self.mode:
            case "ids":
                return f"ids: only the {len(self.ids)} listed participant ids, once each (/?pid=ID)"
            case "panel":
                return "panel: a participant id is required in the link (/?pid=ID), once each"
            case _:
                return "open: anyone with the link; no participant id, repeat participation is possible"


def new_participant_ids(count: int) -> list[str]:
    """``count`` distinct random ids (16 hex digits, 64 bits: not guessable from one another)."""
    if count < 1:
        raise ConfigError(f"--count {count} must be >= 1")
    out: set[str] = set()
    while len(out) < count:
        out.add(secrets.token_hex(8))
    return sorted(out)
