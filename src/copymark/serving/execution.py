"""Where the served model runs: inline (a thread of the server) or in a supervised worker process.

Both runners take a batch ``N x 3 x H x W`` (float32, ``[0, 1]``) and return one result per
image: its answer in the model's wire form (:meth:`ServedModel.answer`), or the exception that
answers that request (the app turns it into a JSON error; nothing is charged).

:class:`WorkerRunner` (``isolation="worker"``) runs the model in a child process that rebuilds
it from its :class:`~copymark.serving.models.ModelSource` (:mod:`copymark.serving.worker`):

* a crash (segfault, glibc abort, ``os._exit``) while answering a batch of one answers that
  request :class:`ModelCrashed` (HTTP 500); in a batch of several, the worker is restarted and
  every image is run again alone, so that only the culprit fails;
* a batch that takes longer than ``inference_timeout_s`` is a hang: the worker is killed and
  every request of the batch gets :class:`InferenceTimeout` (HTTP 504). (A hang cannot be
  pinned on one image without running each again for the full timeout.)
* after either, a new worker is started at once, before the next batch runs. Startup costs a
  fork of the forkserver (which imported torch once) plus building the model.

Images cross the process boundary as raw uint8 bytes when they are 8-bit (every PNG/JPEG
upload; float32 otherwise), image answers as uint8: a 64 x 64 RGB image is 12 kB each way.

:class:`InlineRunner` (``isolation="inline"``) calls the model in one inference thread of the
server process: no copies and no restart, but a native crash kills the server and a hang
blocks the thread for good. It is the only choice for in-process callables
(:func:`~copymark.serving.models.function_model`), which cannot be rebuilt in another process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import signal
from concurrent.futures import ThreadPoolExecutor

import torch

from copymark.errors import ConfigError, CopymarkError
from copymark.images import from_uint8, to_uint8
from copymark.serving.models import ServedModel
from copymark.serving.settings import ServeSettings

STARTUP_TIMEOUT_S = 300.0  # building a large model from disk (or on a busy machine) can take a while

Result = torch.Tensor | BaseException


class ModelCrashed(Exception):
    """The worker process died while answering (HTTP 500)."""


class InferenceTimeout(Exception):
    """The model did not answer in time; the worker was killed (HTTP 504). ``alone``: the
    image was the only one of its batch, so the hang is its own."""

    def __init__(self, message: str, alone: bool):
        super().__init__(message)
        self.alone = alone


class ModelFailed(Exception):
    """The model raised a Python exception in the worker (HTTP 500); ``kind`` is its type name."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class ModelUnavailable(CopymarkError):
    """The worker could not be started (HTTP 503, or a startup error)."""


class InlineRunner:
    """The model in one inference thread of this process."""

    isolation = "inline"

    def __init__(self, model: ServedModel):
        self.model = model
        self.restarts = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="copymark-model")

    def prepare(self) -> None:
        """Nothing to start: the model is already built in this process."""

    async def run(self, batch: torch.Tensor) -> list[Result]:
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self._executor, self.model.answer, batch)
        except Exception as err:  # noqa: BLE001 - every request of the batch gets the model's error
            return [err] * batch.shape[0]
        return list(out)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _wire_input(batch: torch.Tensor) -> torch.Tensor:
    """uint8 when the batch is exactly 8-bit (4x fewer bytes; the worker restores the same floats)."""
    u8 = to_uint8(batch)
    return u8 if torch.equal(from_uint8(u8), batch) else batch.float()


class WorkerRunner:
    """The model in a supervised worker process, restarted after a crash or a hang."""

    isolation = "worker"

    def __init__(self, model: ServedModel, timeout_s: float, startup_timeout_s: float = STARTUP_TIMEOUT_S):
        if model.source is None:
            raise ConfigError(
                f"isolation 'worker' needs a model built from a spec; {model.name!r} is an in-process callable",
                hint="use isolation 'auto' or 'inline' for function_model(...) models",
            )
        self.source = model.source
        self.expected_id = model.id
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.starts = 0
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._closed = False
        # every pipe and process operation happens on this one thread, so they never interleave
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="copymark-model-io")

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def prepare(self) -> None:
        """Start the worker (if not running) and wait until it has built the model."""
        if not self._alive():
            self._start()

    async def run(self, batch: torch.Tensor) -> list[Result]:
        loop = asyncio.get_running_loop()
        results, broken = await loop.run_in_executor(self._executor, self._run, batch)
        if broken and not self._closed:  # restart now: the next batch queues behind this on the same thread
            try:
                loop.run_in_executor(self._executor, self._restart_quietly)
            except RuntimeError:  # closed meanwhile: nothing to restart
                pass
        return results

    def close(self) -> None:
        """Stop the worker; safe from any thread (no pipe I/O here: the I/O thread may be in a call)."""
        self._closed = True
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- on the I/O thread ---------------------------------------------------------------------

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def _start(self) -> None:
        if self._closed:
            raise ModelUnavailable("the server is shutting down")
        from copymark.serving import worker

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["copymark.serving.worker"])  # torch and copymark imported once
        conn, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=worker.serve,
            args=(child, self.source, torch.get_num_threads()),
            name="copymark-model-worker",
            daemon=True,
        )
        proc.start()
        child.close()
        ready = multiprocessing.connection.wait([conn, proc.sentinel], self.startup_timeout_s)
        msg = None
        if conn in ready:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                msg = None
        if msg is not None and msg[0] == "ready" and msg[1] == self.expected_id:
            self._proc, self._conn = proc, conn
            self.starts += 1
            return
        proc.kill()
        proc.join(5)
        conn.close()
        if msg is not None and msg[0] == "ready":
            raise ModelUnavailable(
                f"the model worker built model {msg[1]}, not the served {self.expected_id}",
                hint="did the model's files change after the server loaded them? restart the server",
            )
        if msg is not None and msg[0] == "error":
            raise ModelUnavailable(f"the model worker could not build the model: {msg[1]}", hint=msg[2])
        if not ready:
            raise ModelUnavailable(f"the model worker did not build the model within {self.startup_timeout_s:g} s")
        raise ModelUnavailable(
            f"the model worker exited while starting ({_describe_exit(proc.exitcode)})",
            hint="a script that serves an isolated model must start the server under "
            "`if __name__ == '__main__':` (the worker imports the main module, as multiprocessing does), "
            "or use isolation 'inline'",
        )

    def _discard(self, kill: bool) -> str:
        """Forget the current worker (killing it first if asked); return how it ended."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return "no worker"
        if kill:
            proc.kill()
        proc.join(5)
        if conn is not None:
            conn.close()
        return _describe_exit(proc.exitcode)

    def _restart_quietly(self) -> None:
        try:
            self.prepare()
        except Exception:  # noqa: BLE001 - the next batch tries again and answers ModelUnavailable if it still fails
            pass

    def _call(self, batch: torch.Tensor) -> torch.Tensor:
        """One batch through the worker: its answers, or ModelCrashed / InferenceTimeout / ModelFailed."""
        from copymark.serving.worker import recv_tensor, send_tensor

        if not self._alive():
            if self._proc is not None:
                self._discard(kill=False)
            self._start()
        assert self._conn is not None and self._proc is not None
        conn, proc = self._conn, self._proc
        try:
            send_tensor(conn, "run", _wire_input(batch))
        except (OSError, ValueError):
            raise ModelCrashed(f"the model worker died ({self._discard(kill=False)})") from None
        ready = multiprocessing.connection.wait([conn, proc.sentinel], self.timeout_s)
        if not ready:
            self._discard(kill=True)
            raise InferenceTimeout(
                f"no answer within {self.timeout_s:g} s; the model worker was restarted", alone=batch.shape[0] == 1
            )
        try:
            msg = conn.recv()
            if msg[0] == "failed":
                raise ModelFailed(msg[1], msg[2])
            return recv_tensor(conn, msg[1], msg[2])
        except (EOFError, OSError):
            raise ModelCrashed(f"the model worker died while answering ({self._discard(kill=False)})") from None

    def _run(self, batch: torch.Tensor) -> tuple[list[Result], bool]:
        """Results per image, and whether the worker must be restarted."""
        n = batch.shape[0]
        try:
            return list(self._call(batch)), False
        except InferenceTimeout as err:
            return [err] * n, True
        except ModelCrashed as err:
            if n == 1:
                return [err], True
        except (ModelFailed, ModelUnavailable) as err:
            return [err] * n, False
        # the batch crashed the worker: run each image alone, so that only the culprit fails
        out: list[Result] = []
        for i in range(n):
            try:
                out.append(self._call(batch[i : i + 1])[0])
            except (ModelCrashed, InferenceTimeout, ModelFailed, ModelUnavailable) as err:
                out.append(err)
        return out, not self._alive()


def make_runner(model: ServedModel, settings: ServeSettings) -> InlineRunner | WorkerRunner:
    """The runner ``settings.isolation`` asks for ("auto": the worker when the model has a source)."""
    isolation = settings.isolation
    if isolation == "auto":
        isolation = "worker" if model.source is not None else "inline"
    match isolation:
        case "worker":
            return WorkerRunner(model, settings.inference_timeout_s)
        case "inline":
            return InlineRunner(model)
    raise ConfigError(f"unknown isolation {settings.isolation!r}")  # pragma: no cover - pydantic checks it
