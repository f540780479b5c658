"""Run folders: every command that trains, attacks or evaluates writes one.

Layout of ``runs/<name>-<YYYYmmdd-HHMMSS>/``::

    config.json    the resolved config (every default filled in)
    env.json       python, torch, CUDA, device, seed, git commit, host, command line
    metrics.json   figures written by the run (merged on each update)
    log.txt        the run's log
    ...            artifacts (checkpoints, images, reports)

A run is resumed by pointing at its folder: :func:`open_run` reads ``config.json`` back.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import copymark
from copymark import files
from copymark.errors import CopymarkError
from copymark.files import atomic_write_json

CONFIG = "config.json"
ENV = "env.json"
METRICS = "metrics.json"
LOG = "log.txt"


def git_commit(cwd: Path | None = None) -> str | None:
    """The current git commit of the copymark source tree, if it is a git checkout."""
    here = cwd or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


SECRET_OPTIONS = ("--api-key", "--eval-api-key", "--passphrase", "--password")


def redact_argv(argv: list[str]) -> list[str]:
    """``argv`` with the values of secret options (API keys, passphrases) replaced by ``***``,
    in both the ``--api-key KEY`` and the ``--api-key=KEY`` forms: a run folder is evidence
    that gets shared, a key is not."""
    out: list[str] = []
    hide_next = False
    for a in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        name, eq, _ = a.partition("=")
        if name in SECRET_OPTIONS:
            out.append(f"{name}=***" if eq else a)
            hide_next = not eq
        else:
            out.append(a)
    return out


def environment(device: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """Facts that make a number reproducible."""
    cuda = torch.cuda.is_available()
    return {
        "copymark": copymark.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "device": device,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "argv": redact_argv(sys.argv),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


@dataclass
class Run:
    """A run folder and its logger."""

    path: Path
    logger: logging.Logger

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def config(self) -> dict[str, Any]:
        return read_json(self.path / CONFIG)

    def metrics(self) -> dict[str, Any]:
        p = self.path / METRICS
        return read_json(p) if p.exists() else {}

    def update_metrics(self, values: dict[str, Any]) -> dict[str, Any]:
        """Merge ``values`` into metrics.json (atomic write; earlier keys kept)."""
        merged = self.metrics()
        merged.update(values)
        atomic_write_json(self.path / METRICS, merged)
        return merged

    def log(self, msg: str, *args: Any) -> None:
        self.logger.info(msg, *args)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return files.read_json(path)
    except FileNotFoundError:
        raise CopymarkError(f"missing {path}", hint="is this a copymark run folder?") from None


def _logger(path: Path) -> logging.Logger:
    logger = logging.getLogger(f"copymark.run.{path.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not any(isinstance(h, logging.FileHandler) for h in logger.handlers):
        fh = logging.FileHandler(path / LOG, encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(fh)
    return logger


def new_run_dir(root: str | Path, name: str) -> Path:
    """``root/<name>-<YYYYmmdd-HHMMSS>`` (suffix -2, -3, ... if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{name}-{stamp}"
    p, i = base, 1
    while p.exists():
        i += 1
        p = Path(f"{base}-{i}")
    return p


def check_new_run_dir(path: str | Path) -> None:
    """Refuse a path where a new run cannot be created: a folder that already holds a run, or a file.

    Commands call it before their (possibly long) validation, so a taken ``--run-dir`` is
    reported first; :func:`create_run` checks again.
    """
    p = Path(path)
    if (p / CONFIG).exists():
        raise CopymarkError(
            f"{p} already holds a run (config.json exists)",
            hint="pass --resume to continue it, or choose another --run-dir",
        )
    if p.exists() and not p.is_dir():
        raise CopymarkError(f"{p} is a file, not a run folder", hint="choose another --run-dir")


def create_run(path: str | Path, config: dict[str, Any], device: str | None = None, seed: int | None = None) -> Run:
    """Create (or reuse an empty) run folder and write config.json and env.json.

    Refuses a folder that already holds a run, so nothing stored is overwritten: resume it
    with :func:`open_run` instead.
    """
    p = Path(path)
    check_new_run_dir(p)
    p.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p / CONFIG, config)
    atomic_write_json(p / ENV, environment(device=device, seed=seed))
    run = Run(p, _logger(p))
    run.log("created run %s", p)
    return run


def config_differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Paths (``a.b.c``) where two JSON-like configs differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{where}.{k}" if where else str(k)
            if k not in old or k not in new:
                out.append(key)
            else:
                out += config_differences(old[k], new[k], key)
        return out
    return [] if old == new else [where or "(config)"]


def create_or_reuse_run(
    path: str | Path, config: dict[str, Any], device: str | None = None, seed: int | None = None
) -> Run:
    """Create a run folder, or reopen one that holds a run of exactly this ``config``.

    A folder whose recorded config.json differs is refused (naming the differing keys), so
    one run folder never mixes the outputs of two configurations (e.g. two victims).
    ``config`` is compared after a JSON round trip (tuples = lists, paths = strings).
    """
    import json

    p = Path(path)
    if not (p / CONFIG).exists():
        return create_run(p, config, device, seed)
    recorded = read_json(p / CONFIG)
    wanted = json.loads(json.dumps(config, default=str))
    diff = config_differences(recorded, wanted)
    if diff:
        shown = ", ".join(diff[:6]) + (" ..." if len(diff) > 6 else "")
        raise CopymarkError(
            f"{p} holds a run of another configuration (differs in: {shown})",
            hint="choose another --run-dir, or rerun with the same options to resume it",
        )
    return open_run(p)


def open_run(path: str | Path) -> Run:
    """Open an existing run folder (to resume it or add to it)."""
    p = Path(path)
    if not (p / CONFIG).is_file():
        raise CopymarkError(f"{p} is not a run folder (no config.json)", hint="pass the folder a copymark run created")
    run = Run(p, _logger(p))
    env = read_json(p / ENV) if (p / ENV).exists() else {}
    resumes = env.get("resumes", [])
    resumes.append(environment())
    env["resumes"] = resumes
    atomic_write_json(p / ENV, env)
    run.log("resumed run %s", p)
    return run
