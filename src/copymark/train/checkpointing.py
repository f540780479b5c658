"""Training checkpoints: nets as safetensors, everything else as safetensors + JSON. No pickle.

Layout inside a run folder::

    checkpoints/
      LATEST                     name of the newest complete checkpoint (written last, atomically)
      iter-00000500/
        meta.json                iteration, procedure kind, exported net name, provenance
        nets/<name>/             one copymark net checkpoint per net (model.safetensors + config.json,
                                 written by copymark.nets.build.save_net; loadable on its own)
        state.safetensors        every tensor of the training state (optimizer moments, RNG states,
                                 image pools, ...)
        state.json               the rest of the training state (scalars, lists, structure), with
                                 {"__tensor__": key} placeholders pointing into state.safetensors

A checkpoint is written into ``checkpoints/.tmp-iter-.../`` and renamed into place in one
``os.replace``; ``LATEST`` is then rewritten atomically (temp file + rename). A crash at any
moment therefore leaves either the previous checkpoint or the new one, never a half-written
one that ``LATEST`` points to.

Why safetensors + JSON instead of ``torch.save``: optimizer/scheduler/scaler state dicts and
RNG states are nested dicts/lists/tuples of numbers and tensors. :func:`encode_state` turns
such a structure into JSON (tuples, non-string dict keys and non-finite floats are tagged so
the round trip is exact) plus a flat ``{key: tensor}`` map stored with safetensors. Loading runs
no pickle code at all (``torch.load(weights_only=True)`` would also be safe, but this format is
readable with any JSON tool and is the project's one tensor format).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from copymark.checkpoints import CHECKPOINTS, LATEST, META, NETS, find_export_folder, latest_checkpoint, read_meta
from copymark.errors import WeightsError
from copymark.files import atomic_write_bytes, atomic_write_json, read_json

__all__ = ["find_export_folder", "latest_checkpoint", "read_meta"]  # the reading half lives in copymark.checkpoints

STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"


# ---------------------------------------------------------------------------------------------
# nested state <-> (JSON, tensors)


def encode_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Turn a nested structure into JSON-able data; tensors go into ``tensors`` keyed by their
    path in the structure (e.g. ``optimizers/G/state/3/exp_avg``)."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "tensor"
        n = 1
        while key in tensors:  # e.g. dict keys 1 and "1" side by side
            n += 1
            key = f"{prefix}#{n}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_state(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_state(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj):
            return {k: encode_state(v, tensors, f"{prefix}/{k}") for k, v in obj.items()}
        return {
            "__items__": [
                [encode_state(k, tensors, f"{prefix}/key{i}"), encode_state(v, tensors, f"{prefix}/{k}")]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    # numpy scalars / arrays (numpy RNG state)
    try:
        import numpy as np

        if isinstance(obj, np.ndarray):
            return {"__ndarray__": encode_state(torch.from_numpy(obj.copy()), tensors, prefix)}
        if isinstance(obj, np.generic):
            return encode_state(obj.item(), tensors, prefix)
    except ImportError:  # pragma: no cover
        pass
    raise WeightsError(f"cannot store a {type(obj).__name__} in a training checkpoint (at {prefix})")


def decode_state(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_state`."""
    if isinstance(obj, list):
        return [decode_state(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        if set(obj) == {"__tuple__"}:
            return tuple(decode_state(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__items__"}:
            return {decode_state(k, tensors): decode_state(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__ndarray__"}:
            return decode_state(obj["__ndarray__"], tensors).numpy()
        return {k: decode_state(v, tensors) for k, v in obj.items()}
    return obj


def write_state(folder: Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` as ``state.json`` + ``state.safetensors`` in ``folder``."""
    tensors: dict[str, torch.Tensor] = {}
    encoded = encode_state(dict(state), tensors)
    save_file(tensors, str(folder / STATE_TENSORS))
    atomic_write_json(folder / STATE_JSON, encoded)


def read_state(folder: Path) -> dict[str, Any]:
    """Read what :func:`write_state` wrote."""
    jf, tf = folder / STATE_JSON, folder / STATE_TENSORS
    for f in (jf, tf):
        if not f.is_file():
            raise WeightsError(f"training checkpoint {folder} has no {f.name}", hint="is the checkpoint complete?")
    return decode_state(read_json(jf, WeightsError), load_file(str(tf)))


# ---------------------------------------------------------------------------------------------
# checkpoint folders


def checkpoint_name(iteration: int) -> str:
    return f"iter-{iteration:08d}"


def write_checkpoint(
    run_dir: Path,
    iteration: int,
    nets: Mapping[str, tuple[torch.nn.Module, Any]],
    state: Mapping[str, Any],
    meta: Mapping[str, Any],
    keep: int = 2,
) -> Path:
    """Write a complete training checkpoint atomically and point ``LATEST`` at it.

    ``nets`` maps a name to ``(module, net_config)``; each is saved with
    :func:`copymark.nets.build.save_net`. Older checkpoints beyond the newest ``keep`` are
    deleted (``keep <= 0`` keeps all).
    """
    from copymark.nets.build import save_net

    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(iteration)
    tmp = root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for net_name, (module, config) in nets.items():
            save_net(
                tmp / NETS / net_name, module, config, {"iteration": iteration, **dict(meta.get("provenance", {}))}
            )
        write_state(tmp, state)
        atomic_write_json(tmp / META, {"iteration": iteration, **dict(meta)})
        final = root / name
        if final.exists():  # re-saving the same iteration (e.g. after a resume): move the old one aside
            old = root / f".old-{name}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(root / LATEST, (name + "\n").encode())
    if keep > 0:
        done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("iter-"))
        for p in done[:-keep]:
            if p.name != name:
                shutil.rmtree(p, ignore_errors=True)
    return root / name
