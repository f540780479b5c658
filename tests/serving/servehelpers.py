"""Helpers for the serving tests: keys files, test victims, ASGI clients, PNG bytes."""

from __future__ import annotations

import contextlib
import json
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from copymark.images import encode_png
from copymark.serving.app import create_app
from copymark.serving.models import ImageModel, function_model
from copymark.serving.settings import ServeSettings

KEY = "test-key-0001"
OTHER_KEY = "test-key-0002"


def write_keys(d: Path, budget: int = 100, rate: float = 1000.0, burst: int = 1000, extra: dict | None = None) -> Path:
    keys = {KEY: {"budget": budget, "rate_per_s": rate, "burst": burst}}
    keys.update(extra or {})
    p = d / "keys.json"
    p.write_text(json.dumps(keys))
    return p


def settings(d: Path, **kw) -> ServeSettings:
    kw.setdefault("keys_file", d / "keys.json")
    return ServeSettings(**kw)


def rand_png(h: int = 24, w: int = 24, seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return encode_png(torch.rand(3, h, w, generator=g))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, followed by a tiny bogus IDAT and IEND.

    Any attempt to decode its pixels fails; reading its header succeeds.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


class CountingVictim:
    """A real (deterministic) image function that records every batch size it sees."""

    def __init__(self, delay_s: float = 0.0, first_delay_s: float | None = None):
        self.batch_sizes: list[int] = []
        self.images = 0
        self.delay_s = delay_s
        self.first_delay_s = first_delay_s
        self._lock = threading.Lock()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with self._lock:
            first = not self.batch_sizes
            self.batch_sizes.append(x.shape[0])
            self.images += x.shape[0]
        d = self.first_delay_s if (first and self.first_delay_s is not None) else self.delay_s
        if d:
            time.sleep(d)
        # a colour inversion with a gamma: nontrivial, exact on 8-bit inputs
        return (1.0 - x).pow(0.8)

    def victim(self, name: str = "counting") -> ImageModel:
        return function_model(self, name=name)


@contextlib.asynccontextmanager
async def asgi_client(victim: ImageModel, s: ServeSettings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app through ASGITransport, with the app's lifespan running."""
    app = create_app(victim, s)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://victim.test") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def to_uint8_array(png: bytes) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
