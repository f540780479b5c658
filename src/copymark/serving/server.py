"""Run the inference API with uvicorn, in the foreground or in a background thread.

:func:`serve_forever` is what ``copymark serve`` calls. :class:`BackgroundServer` runs the same
app in a thread on an already-bound socket (port 0 -> a free port, no race), for tests,
benchmarks and ``copymark demo``; ``stop()`` shuts it down gracefully.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time

from fastapi import FastAPI

from copymark.errors import CopymarkError


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening-ready TCP socket (SO_REUSEADDR, so a restarted server can take the same port).

    ``proto=IPPROTO_TCP`` matters: asyncio sets TCP_NODELAY only on accepted sockets whose
    protocol says TCP; with proto 0, Nagle's algorithm holds the response body until the
    client's delayed ACK (~40 ms per request on Linux).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise CopymarkError(f"cannot listen on {host}:{port} ({err})", hint="pick another --port") from None
    sock.set_inheritable(True)
    return sock


class BackgroundServer:
    """uvicorn serving ``app`` in a daemon thread; ``url`` is its base URL."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.sock = bind_socket(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_keep_alive=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True, name=f"uvicorn-{self.port}"
        )

    def start(self, timeout: float = 300.0) -> BackgroundServer:
        """Start serving; returns once the app's lifespan has started (its model is built, in
        its worker process if isolated), or raises when startup fails or takes ``timeout`` s."""
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive():
                raise CopymarkError(f"server on {self.url} failed to start (see the log above)")
            if time.monotonic() - t0 > timeout:
                raise CopymarkError(f"server on {self.url} did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    """Serve in the foreground until interrupted (Ctrl-C / SIGTERM shut down gracefully)."""
    import uvicorn

    sock = bind_socket(host, port)
    config = uvicorn.Config(app, log_level=log_level, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0, poll_s: float = 0.1) -> None:
    """Block until ``GET {url}/v1/health`` answers 200 (a ``copymark serve`` started elsewhere).

    Raises :class:`RuntimeError` when ``proc`` (the server process, if given) exits first, with
    the tail of its stderr, or when ``timeout`` seconds pass.
    """
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise RuntimeError(f"server exited with status {proc.returncode} before {url} was healthy: {err}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server at {url} not healthy after {timeout:g} s")
        time.sleep(poll_s)
