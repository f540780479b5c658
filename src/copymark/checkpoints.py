"""Checkpoints: a folder with ``model.safetensors`` + ``config.json``. Never pickle.

``config.json`` holds the architecture config (whatever the net's builder needs), the copymark
version, and free-form provenance (training run, data, step). Weights are a flat safetensors
state dict. Third-party ``.pth`` state dicts are read only through
``torch.load(weights_only=True)`` and an explicit key-mapping function
(:func:`load_third_party_state_dict`).

Every net kind (translation nets, codecs, steganalyzers, victims) is saved and loaded through
this one format: :func:`copymark.nets.build.save_net` / :func:`~copymark.nets.build.load_net`
on top of :func:`save_checkpoint` / :func:`load_checkpoint`. Loading refuses what a
checkpoint must never hold: a ``config.json`` with a top-level key other than ``config``,
``copymark_version`` and ``provenance`` (a hand edit or another tool's file; the key is
named), and weights with NaN or inf values (a corrupt file or a diverged training; the
tensor is named).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError as SafetensorsError
from safetensors.torch import load_file, save_file

import copymark
from copymark.errors import WeightsError
from copymark.files import atomic_write_json, read_json

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CONFIG_KEYS = ("config", "copymark_version", "provenance")
"""The top-level keys of a checkpoint's config.json; any other key is refused on load."""

# the layout of training checkpoints in a run folder (written by copymark.train.checkpointing)
CHECKPOINTS = "checkpoints"
LATEST = "LATEST"
META = "meta.json"
NETS = "nets"


def _contiguous_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"state dict entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k] = v.detach().cpu().contiguous()
    return out


def save_checkpoint(
    folder: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` (each atomically).

    ``config`` is the architecture config (must contain ``kind``); ``provenance`` is free-form.
    Shared tensors (tied weights) are cloned, since safetensors refuses aliasing.
    """
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    if "kind" not in config:
        raise WeightsError("checkpoint config needs a 'kind' naming the architecture")
    state = _contiguous_state(state_dict)
    seen: dict[int, str] = {}
    for k, v in list(state.items()):
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        if ptr in seen and ptr != -1:
            state[k] = v.clone()
        seen[ptr] = k
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".model.", suffix=".safetensors.tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt", "copymark_version": copymark.__version__})
        os.replace(tmp, d / WEIGHTS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta = {
        "config": dict(config),
        "copymark_version": copymark.__version__,
        "provenance": dict(provenance or {}),
    }
    atomic_write_json(d / CONFIG_FILE, meta)
    return d


def checkpoint_folder(folder: str | Path) -> Path:
    """The checkpoint folder ``folder`` names (the folder itself, or the folder of its weight or config file)."""
    d = Path(folder)
    if d.is_file() and d.name in (WEIGHTS_FILE, CONFIG_FILE):
        d = d.parent
    return d


def read_checkpoint_meta(folder: str | Path) -> dict[str, Any]:
    """A checkpoint's ``config.json``, checked: ``config.kind`` present, no unknown top-level key.

    Reads no weights, so a caller can see which kind of model a checkpoint holds first.
    """
    d = checkpoint_folder(folder)
    wf, cf = d / WEIGHTS_FILE, d / CONFIG_FILE
    if not d.exists():
        raise WeightsError(f"checkpoint not found: {d}", hint="pass a folder holding model.safetensors and config.json")
    for f in (wf, cf):
        if not f.is_file():
            raise WeightsError(
                f"checkpoint {d} has no {f.name}",
                hint="a copymark checkpoint is a folder with model.safetensors + config.json",
            )
    meta = read_json(cf, WeightsError)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "kind" not in meta["config"]:
        raise WeightsError(f"{cf}: not a copymark checkpoint config (no config.kind)")
    unknown = [k for k in meta if k not in CONFIG_KEYS]
    if unknown:
        raise WeightsError(
            f"{cf}: unknown top-level key{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)}",
            hint=f"a checkpoint's config.json holds only {', '.join(CONFIG_KEYS)}; "
            "was it edited by hand or written by another tool?",
        )
    return meta


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights with NaN or inf values, naming the first such tensor.

    A finite sum means every value is finite (NaN and inf propagate into it), and a sum is ~20x
    faster than ``isfinite().all()`` on a CPU; only a tensor whose sum is not finite (a bad
    value, or finite values whose sum overflows) is checked element by element.
    """
    for k, v in state.items():
        if not (v.is_floating_point() or v.is_complex()) or not v.numel():
            continue
        if bool(torch.isfinite(v.sum())) or bool(torch.isfinite(v).all()):
            continue
        bad = int((~torch.isfinite(v)).sum())
        raise WeightsError(
            f"{source}: tensor {k!r} holds {bad} NaN/inf value(s) of {v.numel()}",
            hint="the file is corrupt or the training diverged; use an earlier checkpoint",
        )


def load_checkpoint(
    folder: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint folder -> ``(state_dict, meta)``; ``meta["config"]`` is the architecture.

    Refuses an unknown top-level key in config.json and non-finite weights (see the module docstring).
    """
    d = checkpoint_folder(folder)
    meta = read_checkpoint_meta(d)
    wf = d / WEIGHTS_FILE
    try:
        state = load_file(str(wf), device=str(map_location))
    except (SafetensorsError, OSError) as err:
        raise WeightsError(f"{wf}: cannot read weights ({err})") from None
    check_finite(state, str(wf))
    return state, meta


def load_third_party_state_dict(
    path: str | Path, key_map: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Load a third-party ``.pth`` state dict safely and map its keys to ours.

    Only ``torch.load(weights_only=True)`` is used (no arbitrary pickle code runs). The file
    must hold a plain state dict (mapping of names to tensors), possibly nested under a
    ``"state_dict"`` key. ``key_map`` renames/reshapes entries explicitly.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weight file not found: {p}", hint="check the path to the .pth file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for bad/unsafe files
        raise WeightsError(f"{p}: cannot load as a plain state dict with weights_only=True ({err})") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{p}: expected a state dict of tensors, got {type(obj).__name__}")
    return key_map(dict(obj))


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that lists missing/unexpected keys."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        first = str(err).strip().splitlines()[-1].strip()
        raise WeightsError(
            f"{source}: weights do not fit {type(model).__name__}: {first}",
            hint="is this a checkpoint of another kind or size?",
        ) from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise WeightsError(
            f"{source}: weights do not match {type(model).__name__}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}",
            hint="is this a checkpoint of another kind or size?",
        )


# ---------------------------------------------------------------------------------------------
# training checkpoints of a run folder: finding the exported net (written by copymark.train.checkpointing)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The folder ``checkpoints/LATEST`` names, or None when the run has no checkpoint yet."""
    f = run_dir / CHECKPOINTS / LATEST
    if not f.is_file():
        return None
    d = run_dir / CHECKPOINTS / f.read_text().strip()
    if not (d / META).is_file():
        raise WeightsError(f"{f} names {d.name}, which is missing or incomplete", hint="delete LATEST to start over")
    return d


def read_meta(checkpoint: Path) -> dict[str, Any]:
    try:
        return json.loads((checkpoint / META).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"{checkpoint / META}: cannot read ({err})") from None


def find_training_checkpoint(path: Path) -> Path | None:
    """The training checkpoint ``path`` names: a checkpoint folder itself, a run folder (its
    ``LATEST``), or a run's ``checkpoints/`` folder; None when ``path`` is none of those."""
    path = Path(path)
    if (path / META).is_file():
        return path
    if (path / CHECKPOINTS / LATEST).is_file():
        return latest_checkpoint(path)
    if (path / LATEST).is_file():  # the checkpoints/ folder itself
        return latest_checkpoint(path.parent)
    return None


def find_export_folder(path: Path) -> Path | None:
    """The exported net's checkpoint folder of a run folder or of one training checkpoint."""
    ckpt = find_training_checkpoint(path)
    if ckpt is None:
        return None
    export = read_meta(ckpt).get("export")
    if not export:
        return None
    folder = ckpt / NETS / str(export)
    return folder if (folder / WEIGHTS_FILE).is_file() else None
