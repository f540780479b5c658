"""The one image convention and its conversions.

In memory an image batch is a ``torch.Tensor`` of dtype float32, shape ``N x 3 x H x W``,
RGB, values in ``[0, 1]``; a single image is ``3 x H x W``. Conversions happen only here, at
the edges: decoding files, uint8 <-> float, RGB <-> YCbCr, crops and bicubic resizing.

Decoding is by content, never by file extension (PIL sniffs the magic bytes), so PNG data in a
file named ``.jpg`` loads fine. EXIF orientation is applied. Grayscale, grayscale+alpha,
palette, RGBA, CMYK and 16-bit images are converted to RGB; alpha is dropped (the colour
channels are kept as stored). A corrupt or truncated file raises
:class:`~copymark.errors.ImageError` naming the path.

Bicubic resizing comes in two flavours, both with antialiasing when downscaling:

* ``"matlab"`` (default): MATLAB ``imresize`` semantics: Keys cubic kernel with a = -0.5,
  kernel stretched by the scale factor when shrinking, symmetric (mirror) border handling,
  computed in float. This is the kernel SR benchmarks (Set5/Set14 LR images, BasicSR's
  ``imresize``) are made with.
* ``"pil"``: Pillow's ``Image.resize(..., BICUBIC)``: also Keys a = -0.5 and stretched when
  shrinking, but the border weights are renormalised instead of mirrored and the result is
  rounded to 8 bits. The two agree in the interior to within rounding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from copymark.errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

ResizeMethod = Literal["matlab", "pil"]

# ---------------------------------------------------------------------------------------------
# decoding / encoding


def _pil_to_rgb_array(img: Image.Image) -> np.ndarray:
    """PIL image of any common mode -> H x W x 3 float32 array in [0, 1]."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif mode == "I":
        raw = np.asarray(img, dtype=np.float32)
        # 32-bit integer mode: PIL uses it for 16-bit PNGs; scale by the 16-bit range.
        scale = 65535.0 if raw.max(initial=0) > 255 else 255.0
        arr = np.repeat((raw / scale)[..., None], 3, axis=2)
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        arr = np.repeat(arr[..., None], 3, axis=2)
    else:
        if mode != "RGB":
            if mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            img = img.convert("RGB")
        arr = np.asarray(img, dtype=np.float32) / 255.0
    return np.clip(arr, 0.0, 1.0)


def _decode(source: Any, name: str, max_pixels: int | None, as_array: bool = True) -> Any:
    """Open, check and fully decode one image (EXIF orientation applied); as an ``H x W x 3``
    float32 RGB array, or (``as_array=False``) as the decoded PIL image in its own mode.

    Decoders of untrusted files fail in many ways (mutated TIFFs raise TypeError, struct.error,
    ZeroDivisionError, ...): every failure is an :class:`ImageError` naming the file, never a
    raw exception.
    """
    try:
        img = Image.open(source)
        if max_pixels is not None and img.width * img.height > max_pixels:
            raise ImageError(
                f"{name}: image has {img.width}x{img.height} = {img.width * img.height} pixels, "
                f"more than the limit of {max_pixels}"
            )
        img.load()
        img = ImageOps.exif_transpose(img)
        return _pil_to_rgb_array(img) if as_array else img
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not a decodable image (supported: PNG, JPEG, WebP, BMP, TIFF)",
            hint="is the file corrupt or of another type?",
        ) from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name}: refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{name}: corrupt or truncated image ({err})") from None
    except Exception as err:  # noqa: BLE001 - any other decoder failure is a corrupt file too
        raise ImageError(f"{name}: corrupt image (the decoder failed: {type(err).__name__}: {err})") from None


def open_image(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode an image file as PIL, with EXIF orientation applied.

    ``max_pixels`` refuses images whose header declares more pixels, before decoding them.
    """
    return _decode_file(path, max_pixels, as_array=False)


def _decode_file(path: str | Path, max_pixels: int | None, as_array: bool = True) -> Any:
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image not found: {p}")
    if p.is_dir():
        raise ImageError(f"expected an image file, got a directory: {p}")
    with open(p, "rb") as f:
        return _decode(f, str(p), max_pixels, as_array)


def load_image(path: str | Path, max_pixels: int | None = None) -> torch.Tensor:
    """Load one image file as a ``3 x H x W`` float32 RGB tensor in ``[0, 1]``."""
    arr = _decode_file(path, max_pixels)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def decode_image_bytes(data: bytes, name: str = "<upload>", max_pixels: int | None = None) -> torch.Tensor:
    """Decode image bytes (e.g. an HTTP upload) like :func:`load_image`."""
    import io

    arr = _decode(io.BytesIO(data), name, max_pixels)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def load_images(paths: list[str | Path]) -> torch.Tensor:
    """Load several same-sized images as one ``N x 3 x H x W`` batch."""
    if not paths:
        raise ImageError("no image paths given")
    imgs = [load_image(p) for p in paths]
    shapes = {tuple(t.shape) for t in imgs}
    if len(shapes) > 1:
        raise ImageError(
            f"images differ in size ({sorted(shapes)[:3]}...); cannot stack into one batch",
            hint="resize or crop them to one size first",
        )
    return torch.stack(imgs)


def _as_chw(x: torch.Tensor, what: str = "image") -> torch.Tensor:
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ImageError(f"{what}: expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ImageError(f"{what}: expected shape 3 x H x W (RGB), got {tuple(x.shape)}")
    return x


def to_pil(x: torch.Tensor) -> Image.Image:
    """``3 x H x W`` (or ``1 x 3 x H x W``) float tensor in [0, 1] -> PIL RGB image."""
    arr = to_uint8(_as_chw(x)).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB")


def from_pil(img: Image.Image) -> torch.Tensor:
    """PIL image of any mode -> ``3 x H x W`` float32 tensor in [0, 1]."""
    arr = _pil_to_rgb_array(img)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def save_image(x: torch.Tensor, path: str | Path) -> Path:
    """Save a ``3 x H x W`` float tensor in [0, 1] as an 8-bit PNG (parents created)."""
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise ImageError(f"{p}: save_image writes PNG only; use a .png file name")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    to_pil(x).save(tmp, format="PNG")
    tmp.replace(p)
    return p


def encode_png(x: torch.Tensor) -> bytes:
    """Encode a ``3 x H x W`` float tensor in [0, 1] as PNG bytes."""
    import io

    buf = io.BytesIO()
    to_pil(x).save(buf, format="PNG")
    return buf.getvalue()


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix, case-insensitive), sorted by name."""
    d = Path(folder)
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# value conversions


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] -> uint8 in [0, 255], rounding half to even, clamped."""
    return (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float32 in [0, 1]."""
    if x.dtype != torch.uint8:
        raise ImageError(f"from_uint8 expects a uint8 tensor, got {x.dtype}")
    return x.float() / 255.0


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round a float image to the nearest 8-bit level (what saving as PNG does)."""
    return from_uint8(to_uint8(x))


# ITU-R BT.601, "studio swing" as MATLAB's rgb2ycbcr: inputs in [0, 1], outputs in [0, 255].
_YCBCR_MATRIX = torch.tensor(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=torch.float64,
)
_YCBCR_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64)


def _check_rgb(x: torch.Tensor, what: str) -> None:
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ImageError(f"{what}: expected RGB of shape [N x] 3 x H x W, got {tuple(x.shape)}")


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> YCbCr in [0, 1] (BT.601, MATLAB ``rgb2ycbcr``, then divided by 255).

    Y lies in [16/255, 235/255], Cb and Cr in [16/255, 240/255].
    """
    _check_rgb(x, "rgb_to_ycbcr")
    m = _YCBCR_MATRIX.to(x.device, torch.float32)
    off = _YCBCR_OFFSET.to(x.device, torch.float32).view(3, 1, 1)
    y = torch.einsum("ij,...jhw->...ihw", m, x.float()) + off
    return y / 255.0


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (not clamped)."""
    _check_rgb(x, "ycbcr_to_rgb")
    m_inv = torch.linalg.inv(_YCBCR_MATRIX).to(x.device, torch.float32)
    off = _YCBCR_OFFSET.to(x.device, torch.float32).view(3, 1, 1)
    return torch.einsum("ij,...jhw->...ihw", m_inv, x.float() * 255.0 - off)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Luma Y of BT.601 (MATLAB convention) in [0, 1]; keeps a channel dim of size 1."""
    return rgb_to_ycbcr(x)[..., :1, :, :]


# ---------------------------------------------------------------------------------------------
# crops


def crop_border(x: torch.Tensor, n: int) -> torch.Tensor:
    """Remove ``n`` pixels from each side (the SR evaluation protocol's ``crop_border``)."""
    if n < 0:
        raise ImageError(f"crop_border: n must be >= 0, got {n}")
    if n == 0:
        return x
    h, w = x.shape[-2:]
    if h <= 2 * n or w <= 2 * n:
        raise ImageError(f"crop_border: image {h}x{w} is too small to crop {n} pixels per side")
    return x[..., n : h - n, n : w - n]


def mod_crop(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop bottom/right so height and width are multiples of ``scale``."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def center_crop(x: torch.Tensor, height: int, width: int | None = None) -> torch.Tensor:
    """Crop the central ``height x width`` region."""
    width = height if width is None else width
    h, w = x.shape[-2:]
    if height > h or width > w:
        raise ImageError(f"center_crop: {height}x{width} is larger than the image {h}x{w}")
    top, left = (h - height) // 2, (w - width) // 2
    return x[..., top : top + height, left : left + width]


def crop(x: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """Crop ``height x width`` at (``top``, ``left``), checking bounds."""
    h, w = x.shape[-2:]
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ImageError(f"crop: box ({top}, {left}, {height}, {width}) is outside the image {h}x{w}")
    return x[..., top : top + height, left : left + width]


# ---------------------------------------------------------------------------------------------
# bicubic resizing


def _cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (a = -0.5 as MATLAB and Pillow)."""
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    w1 = (a + 2) * ax3 - (a + 3) * ax2 + 1
    w2 = a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a
    return torch.where(ax <= 1, w1, torch.where(ax < 2, w2, torch.zeros_like(ax)))


def _matlab_weights(in_len: int, out_len: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and (mirrored) source indices for one axis, MATLAB ``imresize`` style."""
    kernel_width = 4.0
    antialias = scale < 1
    if antialias:
        kernel_width /= scale
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = torch.floor(u - kernel_width / 2)
    p = int(math.ceil(kernel_width)) + 2
    idx = left.view(-1, 1) + torch.arange(p, dtype=torch.float64).view(1, -1)
    dist = u.view(-1, 1) - idx
    w = scale * _cubic(dist * scale) if antialias else _cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    # mirror indices outside [1, in_len] (MATLAB's symmetric padding)
    idx0 = idx - 1
    period = 2 * in_len
    idx0 = torch.remainder(idx0, period)
    idx0 = torch.where(idx0 >= in_len, period - 1 - idx0, idx0)
    return w.float(), idx0.long()


def _resize_axis_matlab(x: torch.Tensor, out_len: int, scale: float, dim: int) -> torch.Tensor:
    in_len = x.shape[dim]
    w, idx = _matlab_weights(in_len, out_len, scale)
    x = x.movedim(dim, -1)
    gathered = x[..., idx]  # ... x out_len x p
    out = (gathered * w.to(x.device)).sum(-1)
    return out.movedim(-1, dim)


def _target_size(h: int, w: int, scale: float | None, size: tuple[int, int] | None) -> tuple[int, int, float, float]:
    if (scale is None) == (size is None):
        raise ImageError("resize: give exactly one of scale or size")
    if size is not None:
        oh, ow = size
        return oh, ow, oh / h, ow / w
    assert scale is not None
    if scale <= 0:
        raise ImageError(f"resize: scale must be positive, got {scale}")
    return int(math.ceil(h * scale)), int(math.ceil(w * scale)), scale, scale


def resize_bicubic(
    x: torch.Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    method: ResizeMethod = "matlab",
) -> torch.Tensor:
    """Bicubic resize of ``[N x] 3 x H x W`` by ``scale`` or to ``size=(H, W)``.

    ``method="matlab"`` (default) follows MATLAB ``imresize`` (float result, not clamped);
    ``method="pil"`` uses Pillow on 8-bit images (result quantised to 8 bits).
    """
    _check_rgb(x, "resize_bicubic")
    h, w = x.shape[-2:]
    oh, ow, sh, sw = _target_size(h, w, scale, size)
    if method == "matlab":
        y = x.float()
        # MATLAB resizes the dimension with the smaller scale first
        if sh <= sw:
            y = _resize_axis_matlab(y, oh, sh, -2)
            y = _resize_axis_matlab(y, ow, sw, -1)
        else:
            y = _resize_axis_matlab(y, ow, sw, -1)
            y = _resize_axis_matlab(y, oh, sh, -2)
        return y
    if method == "pil":
        batch = x if x.dim() == 4 else x.unsqueeze(0)
        outs = [from_pil(to_pil(img).resize((ow, oh), Image.Resampling.BICUBIC)) for img in batch]
        out = torch.stack(outs).to(x.device)
        return out if x.dim() == 4 else out[0]
    raise ImageError(f"resize_bicubic: unknown method {method!r} (use 'matlab' or 'pil')")


def downscale_bicubic(x: torch.Tensor, factor: int = 4, method: ResizeMethod = "matlab") -> torch.Tensor:
    """Make a low-resolution image: antialiased bicubic downscaling by an integer ``factor``.

    The image is first mod-cropped to a multiple of ``factor``; the result is clamped to
    [0, 1] and rounded to 8 bits, as an LR image stored on disk would be.
    """
    if factor < 1:
        raise ImageError(f"downscale_bicubic: factor must be >= 1, got {factor}")
    x = mod_crop(x, factor)
    h, w = x.shape[-2:]
    y = resize_bicubic(x, size=(h // factor, w // factor), method=method)
    return quantize(y)


def upscale_bicubic(x: torch.Tensor, factor: int = 4, method: ResizeMethod = "matlab") -> torch.Tensor:
    """Bicubic upscaling by an integer ``factor`` (the classic SR baseline), clamped to [0, 1].

    ``method="matlab"`` is :func:`copymark.resample.upscale_bicubic`, the same computation as the
    SRResNet's ``image_skip``, so a "bicubic" baseline row and the net's skip are one bicubic.
    """
    if method == "matlab":
        _check_rgb(x, "upscale_bicubic")
        if factor < 1:
            raise ImageError(f"upscale_bicubic: factor must be >= 1, got {factor}")
        from copymark.resample import upscale_bicubic as _upscale

        return _upscale(x.float(), factor).clamp(0, 1)
    h, w = x.shape[-2:]
    return resize_bicubic(x, size=(h * factor, w * factor), method=method).clamp(0, 1)
