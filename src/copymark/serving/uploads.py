"""Uploads: the body under its size and time limits, the image bytes, the header checks, decoding.

Order of refusals (each a JSON error): 413 body larger than ``max_upload_bytes`` (from
``Content-Length`` and again while streaming); 408 upload too slow; 422 empty body, bad
multipart or no field ``image``; then from the image *header*, before any pixel is decoded:
415 not an image, 413 more than ``max_pixels``, 422 a side shorter than ``min_side`` or an
aspect ratio above ``max_aspect``; then decoding: 422 for every failure of the decoder
(corrupt or truncated data, inconsistent TIFF tags, NaN pixels, ...), never a 500.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from typing import NamedTuple

import torch
from fastapi import Request
from PIL import Image, UnidentifiedImageError

from copymark.errors import ImageError
from copymark.images import decode_image_bytes
from copymark.serving.http_errors import ApiError
from copymark.serving.settings import ServeSettings

NOT_AN_IMAGE = "not a decodable image (send PNG, JPEG, WebP, BMP or TIFF bytes)"


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refusing more than ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ApiError(400, "bad_request", "Content-Length is not an integer") from None
        if n > limit:
            raise ApiError(413, "upload_too_large", f"upload of {n} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "upload_too_large", f"upload exceeds the limit of {limit} bytes")
            chunks.append(chunk)

    from starlette.requests import ClientDisconnect

    try:
        await asyncio.wait_for(read(), timeout)
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away during the upload") from None
    except TimeoutError:
        raise ApiError(408, "upload_timeout", f"upload not received within {timeout:g} s") from None
    return b"".join(chunks)


async def image_bytes(request: Request, body: bytes) -> bytes:
    """The image bytes: the multipart field ``image``, or the raw body."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        from starlette.formparsers import MultiPartException, MultiPartParser

        async def stream():  # replay the body we already read under the size limit
            yield body
            yield b""

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=4, max_fields=16).parse()
        except MultiPartException as err:
            raise ApiError(422, "bad_multipart", f"cannot parse multipart body: {err.message}") from None
        part = form.get("image")
        if part is None:
            raise ApiError(422, "missing_field", "multipart body has no field named 'image'")
        data = await part.read() if hasattr(part, "read") else str(part).encode()
        await form.close()
    else:
        data = body
    if not data:
        raise ApiError(
            422, "empty_body", "no image bytes received (send the image as the body or multipart field 'image')"
        )
    return data


class ImageHeader(NamedTuple):
    """What an image's header says: size, PIL mode, and whether a palette has a transparent entry."""

    width: int
    height: int
    mode: str
    transparent: bool


def probe_image_header(data: bytes, limits: ServeSettings) -> ImageHeader:
    """Width, height and mode from the header only; refuse what the limits forbid before decoding.

    413 too many pixels (or a decompression bomb), 415 not an image, 422 an unreadable header,
    a side shorter than ``min_side`` or an aspect ratio above ``max_aspect``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's metadata and bomb warnings: we decide below
            img = Image.open(io.BytesIO(data))  # lazy: parses the header, decodes no pixels
            w, h = (int(v) for v in img.size)
            mode, transparent = str(img.mode), "transparency" in img.info
    except Image.DecompressionBombError as err:
        raise ApiError(413, "too_many_pixels", f"refused as a decompression bomb: {err}") from None
    except UnidentifiedImageError:
        raise ApiError(415, "unsupported_media", NOT_AN_IMAGE) from None
    except Exception as err:  # noqa: BLE001 - a recognised format whose header is broken
        raise ApiError(422, "corrupt_image", f"unreadable image header ({type(err).__name__})") from None
    if w < 1 or h < 1:
        raise ApiError(422, "corrupt_image", f"image header declares an empty image {w}x{h}")
    if w * h > limits.max_pixels:
        raise ApiError(
            413, "too_many_pixels", f"image header declares {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels}"
        )
    if min(w, h) < limits.min_side:
        raise ApiError(
            422, "image_too_small", f"image header declares {w}x{h}; the shortest side must be >= {limits.min_side}"
        )
    if max(w, h) / min(w, h) > limits.max_aspect:
        raise ApiError(
            422,
            "aspect_ratio_too_large",
            f"image header declares {w}x{h} (aspect {max(w, h) / min(w, h):.4g}); the limit is {limits.max_aspect:g}",
        )
    return ImageHeader(w, h, mode, transparent)


def decode_upload(data: bytes, limits: ServeSettings) -> torch.Tensor:
    """Decode to ``3 x H x W`` float32 RGB in ``[0, 1]``; any decoder failure is a 422."""
    try:  # (may run in a worker thread: no warnings.catch_warnings here, it is not thread-safe)
        x = decode_image_bytes(data, "upload", limits.max_pixels)
    except ImageError as err:
        raise ApiError(422, "corrupt_image", err.message) from None
    except Exception as err:  # noqa: BLE001 - Pillow raises TypeError, struct.error, ... on crafted files
        raise ApiError(422, "corrupt_image", f"the image could not be decoded ({type(err).__name__})") from None
    h, w = x.shape[-2:]
    if h * w > limits.max_pixels or min(h, w) < limits.min_side or max(h, w) / min(h, w) > limits.max_aspect:
        raise ApiError(422, "corrupt_image", f"the decoded image is {w}x{h}, not what its header declared")
    if not bool(torch.isfinite(x).all()):
        raise ApiError(422, "corrupt_image", "the image has NaN or infinite pixel values")
    return x
