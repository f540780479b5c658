"""The README's example commands name real commands and real options (they run as written)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import typer.main

from copymark.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> list[list[str]]:
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    cmds = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip().rstrip("&").strip()
            if line.startswith("copymark "):
                cmds.append(shlex.split(line)[1:])
    return cmds


def _resolve(group: Any, args: list[str]) -> tuple[Any, list[str]]:
    # typer vendors its own click: duck-type groups (they have .commands) instead of isinstance
    cmd = group
    while getattr(cmd, "commands", None) and args and not args[0].startswith("-"):
        sub = cmd.commands.get(args[0])
        assert sub is not None, f"README: unknown command {args[0]!r} (have {sorted(cmd.commands)})"
        cmd, args = sub, args[1:]
    return cmd, args


def test_readme_commands_use_existing_commands_and_options():
    cmds = _commands()
    assert len(cmds) >= 15, cmds  # the usage section is there
    root = typer.main.get_command(app)
    for argv in cmds:
        cmd, rest = _resolve(root, argv)
        known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for a in rest:
            if a.startswith("--"):
                flag = a.split("=")[0]
                assert flag in known, f"README: `copymark {' '.join(argv)}` uses {flag}, which {cmd.name} does not have"
        # and the whole line parses (types, choices, required options)
        ctx = cmd.make_context(cmd.name, list(rest), resilient_parsing=False)
        ctx.close()
