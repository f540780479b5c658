"""Seeded, bounded mutation fuzz of the image decoder path: PNG, JPEG (with EXIF), TIFF, BMP and
WebP bytes with random byte edits, truncations and splices, plus every type swap of every TIFF
tag (issue 10: a StripOffsets tag retyped as RATIONAL gave HTTP 500 "TypeError: 'IFDRational'
object cannot be interpreted as an integer"). No answer may be a 5xx, every error is JSON, and
the server still answers afterwards."""

from __future__ import annotations

import asyncio
import io
import random
import struct
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from servehelpers import CountingVictim, asgi_client, auth, rand_png, settings, write_keys

SEED = 20240611
CASES_PER_FORMAT = 60


def _bases() -> dict[str, bytes]:
    rng = np.random.default_rng(SEED)
    img = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    out = {}
    for fmt, kw in [
        ("PNG", {}),
        ("JPEG", {"quality": 90}),
        ("TIFF", {"dpi": (72.5, 96)}),  # uncompressed: Pillow reads the strips itself
        ("TIFF-LZW", {"dpi": (72.5, 96), "compression": "tiff_lzw"}),  # libtiff decodes
        ("BMP", {}),
        ("WEBP", {"quality": 80}),
    ]:
        if fmt in ("JPEG", "TIFF", "TIFF-LZW"):
            exif = img.getexif()
            exif[0x0112] = 6  # orientation: decoding rotates (exercises exif_transpose)
            kw = {**kw, "exif": exif.tobytes()}
        buf = io.BytesIO()
        img.save(buf, format=fmt.split("-")[0], **kw)
        out[fmt] = buf.getvalue()
    return out


def _mutate(data: bytes, rng: random.Random) -> bytes:
    d = bytearray(data)
    match rng.randrange(4):
        case 0:  # a few random bytes, mostly in the headers
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(min(len(d), 256)) if rng.random() < 0.7 else rng.randrange(len(d))
                d[pos] = rng.randrange(256)
        case 1:  # truncation
            d = d[: rng.randrange(1, len(d))]
        case 2:  # a slice duplicated elsewhere
            a = rng.randrange(len(d))
            b = min(len(d), a + rng.randint(1, 64))
            at = rng.randrange(len(d))
            d[at:at] = d[a:b]
        case 3:  # one 16/32-bit field set to an extreme value
            pos = rng.randrange(max(1, min(len(d), 128) - 4))
            d[pos : pos + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"])
    return bytes(d)


def _tiff_type_swaps(tiff: bytes) -> list[bytes]:
    """Every tag of the first IFD with its type field replaced by each of the 12 TIFF types."""
    assert tiff[:2] == b"II"
    ifd = struct.unpack_from("<I", tiff, 4)[0]
    out = []
    for k in range(struct.unpack_from("<H", tiff, ifd)[0]):
        off = ifd + 2 + 12 * k
        for typ in range(1, 13):
            d = bytearray(tiff)
            struct.pack_into("<H", d, off + 2, typ)
            out.append(bytes(d))
    return out


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")  # Pillow on broken metadata
def test_mutated_images_never_give_5xx_and_the_server_keeps_answering(tmp_path):
    write_keys(tmp_path, budget=10**6)
    rng = random.Random(SEED)
    bases = _bases()
    cases = [(fmt, _mutate(data, rng)) for fmt, data in bases.items() for _ in range(CASES_PER_FORMAT)]
    cases += [("TIFF-type", d) for d in _tiff_type_swaps(bases["TIFF"])]
    cv = CountingVictim()

    async def go():
        async with asgi_client(cv.victim(), settings(tmp_path)) as c:
            statuses: Counter[tuple[str, int]] = Counter()
            bad = []
            for fmt, body in cases:
                r = await c.post("/v1/translate", content=body, headers=auth())
                statuses[(fmt, r.status_code)] += 1
                if r.status_code >= 500 or (r.status_code != 200 and set(r.json()) != {"error", "detail"}):
                    bad.append((fmt, r.status_code, r.text[:200]))
            after = [await c.get("/v1/health"), await c.post("/v1/translate", content=rand_png(), headers=auth())]
            return statuses, bad, after

    statuses, bad, after = asyncio.run(go())
    assert not bad, bad
    assert {s for _, s in statuses} <= {200, 413, 415, 422}, statuses
    for fmt in ("PNG", "JPEG", "TIFF", "TIFF-LZW", "BMP", "WEBP", "TIFF-type"):  # the fuzz reached the decoders
        assert statuses[(fmt, 422)] + statuses[(fmt, 415)] > 0, (fmt, statuses)
    assert [r.status_code for r in after] == [200, 200]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_issue_10_tiff_is_a_422(tmp_path):
    """StripOffsets (tag 273) retyped as RATIONAL: Pillow raises TypeError while decoding."""
    write_keys(tmp_path)
    tiff = _bases()["TIFF"]
    ifd = struct.unpack_from("<I", tiff, 4)[0]
    count = struct.unpack_from("<H", tiff, ifd)[0]
    entries = {struct.unpack_from("<H", tiff, ifd + 2 + 12 * k)[0]: ifd + 2 + 12 * k for k in range(count)}
    d = bytearray(tiff)
    struct.pack_into("<H", d, entries[273] + 2, 5)

    async def go():
        async with asgi_client(CountingVictim().victim(), settings(tmp_path)) as c:
            return await c.post("/v1/translate", content=bytes(d), headers=auth())

    r = asyncio.run(go())
    assert r.status_code == 422 and r.json()["error"] == "corrupt_image", r.text
    assert "TypeError" in r.json()["detail"]
