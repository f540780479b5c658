"""Classical (OpenCV / bicubic) served models: the ``classical:NAME?PARAMS`` specs.

* ``classical:stylize?sigma_s=20&sigma_r=0.3`` -- OpenCV ``cv2.stylization`` (a watercolour-like
  edge-aware smoothing). The defaults (sigma_s=20, sigma_r=0.3) are a victim a small UNet can
  really learn in minutes on CPU; larger sigma_s is harder.
* ``classical:edge_preserving?sigma_s=60&sigma_r=0.4&flags=1`` -- ``cv2.edgePreservingFilter``
  (flags 1 = recursive, 2 = normalized convolution).
* ``classical:cartoon?d=9&sigma_color=75&sigma_space=75&passes=2&block_size=9&c=2&levels=8``
  -- a cartoon filter defined here: ``passes`` bilateral filters flatten colours, the colours
  are quantised to ``levels`` levels per channel, and a black edge mask (adaptive threshold of
  the median-blurred grey image, ``block_size`` / ``c``) is drawn on top.
* ``classical:bicubic_x4?method=matlab&sharpen=0`` -- bicubic x4 upscaling
  (:func:`images.upscale_bicubic`), a super-resolution victim; ``sharpen > 0`` adds an unsharp
  mask of that amount (Gaussian sigma 1.5 px on the output), a "sharpening upscaler" whose
  answers differ from plain bicubic, so that the bicubic identity baseline is not already the
  victim (the SR demo uses ``sharpen=1``).

Classical filters work on 8-bit images: the input is rounded to 8 bits first (what a PNG
upload holds anyway), so the answer to a PNG is exactly the filter applied to its pixels.
OpenCV is native code: served through ``copymark serve`` these filters run in the supervised
model worker (:mod:`copymark.serving.execution`), so a crash inside OpenCV fails one request,
not the server.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import torch

from copymark.errors import ConfigError
from copymark.images import from_uint8, to_uint8, upscale_bicubic
from copymark.serving.models import ImageModel, spec_id, valid_specs_hint

# name -> {param: (type, default, low, high)}; the single source of valid classical specs.
CLASSICAL: dict[str, dict[str, tuple[type, float | int | str, float | None, float | None]]] = {
    "stylize": {"sigma_s": (float, 20.0, 0.0, 200.0), "sigma_r": (float, 0.3, 0.0, 1.0)},
    "edge_preserving": {
        "sigma_s": (float, 60.0, 0.0, 200.0),
        "sigma_r": (float, 0.4, 0.0, 1.0),
        "flags": (int, 1, 1, 2),
    },
    "cartoon": {
        "d": (int, 9, 1, 25),
        "sigma_color": (float, 75.0, 0.0, 500.0),
        "sigma_space": (float, 75.0, 0.0, 500.0),
        "passes": (int, 2, 1, 10),
        "block_size": (int, 9, 3, 51),
        "c": (float, 2.0, -50.0, 50.0),
        "levels": (int, 8, 2, 256),
    },
    "bicubic_x4": {"method": (str, "matlab", None, None), "sharpen": (float, 0.0, 0.0, 5.0)},
}


def _per_image_uint8(x: torch.Tensor, op: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
    """Apply ``op`` (RGB uint8 H x W x 3 -> RGB uint8 H x W x 3) to each image of the batch."""
    u8 = to_uint8(x.cpu()).permute(0, 2, 3, 1).numpy()
    outs = [torch.from_numpy(np.ascontiguousarray(op(np.ascontiguousarray(img)))) for img in u8]
    return from_uint8(torch.stack(outs).permute(0, 3, 1, 2).contiguous()).to(x.device)


def _stylize(sigma_s: float, sigma_r: float) -> Callable[[torch.Tensor], torch.Tensor]:
    import cv2

    def op(rgb: np.ndarray) -> np.ndarray:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        return cv2.cvtColor(cv2.stylization(bgr, sigma_s=sigma_s, sigma_r=sigma_r), cv2.COLOR_BGR2RGB)

    return lambda x: _per_image_uint8(x, op)


def _edge_preserving(sigma_s: float, sigma_r: float, flags: int) -> Callable[[torch.Tensor], torch.Tensor]:
    import cv2

    def op(rgb: np.ndarray) -> np.ndarray:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        out = cv2.edgePreservingFilter(bgr, flags=flags, sigma_s=sigma_s, sigma_r=sigma_r)
        return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)

    return lambda x: _per_image_uint8(x, op)


def cartoon_uint8(
    rgb: np.ndarray,
    d: int = 9,
    sigma_color: float = 75.0,
    sigma_space: float = 75.0,
    passes: int = 2,
    block_size: int = 9,
    c: float = 2.0,
    levels: int = 8,
) -> np.ndarray:
    """The cartoon filter: bilateral smoothing, colour quantisation, black edges.

    ``passes`` bilateral filters (diameter ``d``) flatten regions; each channel is quantised to
    ``levels`` evenly spaced levels (bin centres); pixels where the adaptive mean threshold of
    the median-blurred grey image (window ``block_size``, offset ``c``) says "edge" are black.
    """
    import cv2

    color = rgb
    for _ in range(passes):
        color = cv2.bilateralFilter(color, d, sigma_color, sigma_space)
    step = 256.0 / levels
    color = np.clip(np.floor(color / step) * step + step / 2, 0, 255).astype(np.uint8)
    gray = cv2.medianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 5)
    bs = block_size if block_size % 2 == 1 else block_size + 1
    edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, bs, c)
    return cv2.bitwise_and(color, color, mask=edges)


def _cartoon(**p: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: _per_image_uint8(x, lambda img: cartoon_uint8(img, **p))  # type: ignore[arg-type]


def unsharp_mask(x: torch.Tensor, amount: float, sigma: float = 1.5) -> torch.Tensor:
    """``x + amount * (x - gaussian_blur(x))``, clamped to [0, 1] (reflect-padded, separable)."""
    radius = int(math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = (g / g.sum()).to(x.device)
    c = x.shape[1]
    blur = torch.nn.functional.pad(x, (radius, radius, 0, 0), mode="reflect")
    blur = torch.nn.functional.conv2d(blur, g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    blur = torch.nn.functional.pad(blur, (0, 0, radius, radius), mode="reflect")
    blur = torch.nn.functional.conv2d(blur, g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return (x + amount * (x - blur)).clamp(0, 1)


def _bicubic_x4(method: str, sharpen: float = 0.0) -> Callable[[torch.Tensor], torch.Tensor]:
    if method not in ("matlab", "pil"):
        raise ConfigError(f"victim classical:bicubic_x4: method must be 'matlab' or 'pil', got {method!r}")

    def fn(x: torch.Tensor) -> torch.Tensor:
        # the input is what an 8-bit upload holds; the output is the float bicubic result
        y = upscale_bicubic(from_uint8(to_uint8(x)), 4, method=method)  # type: ignore[arg-type]
        return unsharp_mask(y, sharpen) if sharpen > 0 else y

    return fn


def _parse_params(name: str, query: str, spec: str) -> dict[str, float | int | str]:
    schema = CLASSICAL[name]
    params: dict[str, float | int | str] = {k: v[1] for k, v in schema.items()}
    for key, raw in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in schema:
            raise ConfigError(
                f"victim spec {spec!r}: unknown parameter {key!r} for classical:{name}",
                hint=f"parameters of classical:{name}: {', '.join(schema) or '(none)'}",
            )
        typ, _, lo, hi = schema[key]
        try:
            val = typ(raw)
        except ValueError:
            raise ConfigError(f"victim spec {spec!r}: parameter {key}={raw!r} is not a {typ.__name__}") from None
        if lo is not None and hi is not None and not (lo <= val <= hi):  # type: ignore[operator]
            raise ConfigError(f"victim spec {spec!r}: parameter {key}={val} outside [{lo}, {hi}]")
        params[key] = val
    return params


def classical_model(spec: str) -> ImageModel:
    """The served model of a ``classical:NAME?PARAMS`` spec; bad names or parameters raise ConfigError."""
    parts = urlsplit(spec[len("classical:") :])
    name = parts.path
    if name not in CLASSICAL:
        raise ConfigError(f"unknown classical victim {name!r} in spec {spec!r}", hint=valid_specs_hint())
    p = _parse_params(name, parts.query, spec)
    canonical = f"classical:{name}?" + "&".join(f"{k}={p[k]}" for k in sorted(p))
    vid = spec_id(canonical)
    match name:
        case "stylize":
            fn = _stylize(float(p["sigma_s"]), float(p["sigma_r"]))
            return ImageModel(name, "style", fn, vid, scale=1, params=p)
        case "edge_preserving":
            fn = _edge_preserving(float(p["sigma_s"]), float(p["sigma_r"]), int(p["flags"]))
            return ImageModel(name, "style", fn, vid, scale=1, params=p)
        case "cartoon":
            return ImageModel(name, "style", _cartoon(**p), vid, scale=1, params=p)  # type: ignore[arg-type]
        case "bicubic_x4":
            fn = _bicubic_x4(str(p["method"]), float(p["sharpen"]))
            return ImageModel(name, "sr", fn, vid, scale=4, params=p)
    raise ConfigError(f"unknown classical victim {name!r}", hint=valid_specs_hint())  # pragma: no cover
