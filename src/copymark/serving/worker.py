"""The model worker: a child process that rebuilds the served model from its spec and answers batches.

Started by :class:`copymark.serving.execution.WorkerRunner` (multiprocessing, forkserver start
method, so a restart forks a clean process that already imported torch). Messages on the pipe:

* worker -> server, once: ``("ready", model_id)`` or ``("error", message, hint)``;
* server -> worker: ``("run", dtype, shape)`` then the batch as raw bytes (uint8 when the
  images are 8-bit, which is every PNG/JPEG upload, else float32), or ``("stop",)``
  (the server also stops a worker with SIGTERM, or SIGKILL after a hang);
* worker -> server: ``("ok", dtype, shape)`` then the answers as raw bytes (the model's wire
  dtype: uint8 for images, float64 for logits), or ``("failed", exception type, message)`` for a Python
  exception raised by the model (the worker keeps serving).

Tensors travel as raw bytes, never pickled. A crash (signal, abort, ``os._exit``) closes the
pipe: the server sees it, answers the affected requests and starts a new worker. The worker
exits by itself when the server process dies.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from multiprocessing.connection import Connection

import torch

from copymark.errors import CopymarkError
from copymark.images import from_uint8
from copymark.serving.models import ModelSource, build_from_source

DTYPES = {"uint8": torch.uint8, "float32": torch.float32, "float64": torch.float64}


def send_tensor(conn: Connection, tag: str, t: torch.Tensor) -> None:
    """``(tag, dtype, shape)`` then the raw bytes of ``t`` (CPU, uint8 or float32)."""
    t = t.detach().cpu().contiguous()
    conn.send((tag, str(t.dtype).removeprefix("torch."), tuple(t.shape)))
    conn.send_bytes(t.numpy().tobytes() if t.numel() == 0 else memoryview(t.numpy()).cast("B"))


def recv_tensor(conn: Connection, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The tensor whose header ``(dtype, shape)`` was just received."""
    dt = DTYPES[dtype]
    n = math.prod(shape) * torch.empty((), dtype=dt).element_size()
    buf = bytearray(n)
    got = conn.recv_bytes_into(buf)
    if got != n:
        raise EOFError(f"expected {n} tensor bytes, got {got}")
    return torch.frombuffer(buf, dtype=dt).reshape(shape) if n else torch.empty(shape, dtype=dt)


def _exit_with_parent() -> None:
    """Exit when the server process dies, even if the model hangs in a thread that holds no GIL."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="copymark-parent-watch").start()


def serve(conn: Connection, source: ModelSource, threads: int) -> None:
    """The worker's main function: build the model, then answer batches until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the server decides
    _exit_with_parent()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        model = build_from_source(source)
    except CopymarkError as err:
        conn.send(("error", err.message, err.hint))
        return
    except Exception as err:  # noqa: BLE001 - reported to the server, which decides
        conn.send(("error", f"{type(err).__name__}: {err}", None))
        return
    conn.send(("ready", model.id))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        x = recv_tensor(conn, msg[1], msg[2])
        x = from_uint8(x) if x.dtype == torch.uint8 else x
        try:
            y = model.answer(x)
        except Exception as err:  # noqa: BLE001 - the model failed on this batch; keep serving
            conn.send(("failed", type(err).__name__, str(err)[:500]))
            continue
        send_tensor(conn, "ok", y)
