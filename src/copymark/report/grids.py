"""Image grids for reports: labelled comparison rows, zoomed crops, visibility rows.

Everything here takes and returns images in the project convention (``3 x H x W`` float32
RGB tensors in ``[0, 1]``, see :mod:`copymark.images`); PIL is used only to draw text and
boxes. The functions are plain and free of I/O except :func:`load_row`, which reads one
image per column from an extraction run folder (``outputs/<set>/<column>/<stem>.png``).

- :func:`grid`: any images in ``ncols`` columns, each with a label above it (reused by the
  stego/watermark report).
- :func:`visibility_row`: cover | stego | amplified difference | extras, to show how visible
  a hidden change is.
- :func:`comparison_grid`: the extraction grid, one row per image, columns input | victim |
  surrogate | ground truth (only the columns whose folders exist), column labels on top and
  the image name above each row.
- :func:`highest_variance_window`, :func:`draw_box`, :func:`zoom_panel`: the super-resolution
  zoom: the same window cut from every column and enlarged with nearest neighbour (no
  smoothing, so the pixels are the model's own), with the box drawn on the full images.

Display-only downscaling of large cells (``max_side``) uses Pillow's Lanczos filter; it never
touches the numbers in the tables, which ``copymark evaluate`` computed from the files.

Each tensor-returning function has a ``*_image`` twin returning a PIL image (what the HTML
report encodes), and inputs may be tensors or PIL images. Pixel work is done in NumPy/PIL:
tiny per-image torch ops are needlessly slow when many processes share few cores.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from copymark.errors import ImageError
from copymark.images import from_pil, load_image

ImageLike = torch.Tensor | Image.Image

COLUMNS: tuple[str, ...] = ("input", "victim", "surrogate", "gt")
COLUMN_LABELS: dict[str, str] = {
    "input": "input",
    "victim": "victim",
    "surrogate": "surrogate",
    "gt": "ground truth",
}

Box = tuple[int, int, int, int]  # top, left, height, width

_BG = (255, 255, 255)
_TEXT = (34, 34, 34)
_MUTED = (110, 110, 110)
_MISSING = (225, 225, 225)
BOX_COLOR = (1.0, 0.16, 0.1)


# ---------------------------------------------------------------------------------------------
# small helpers


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font (no system font needed)."""
    return ImageFont.load_default(size=size)


def _as_uint8(x: ImageLike, what: str) -> np.ndarray:
    """``H x W x 3`` uint8 from a ``[1 x] 3 x H x W`` tensor in [0, 1] or a PIL image.

    Same conversion as :func:`copymark.images.to_uint8` (clamp, scale by 255, round half to
    even), done in NumPy.
    """
    if isinstance(x, Image.Image):
        return np.asarray(x.convert("RGB"))
    if not isinstance(x, torch.Tensor):
        raise ImageError(f"{what}: expected a tensor or PIL image, got {type(x).__name__}")
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ImageError(f"{what}: expected a 3 x H x W RGB image, got shape {tuple(x.shape)}")
    a = x.detach().cpu().float().numpy().transpose(1, 2, 0)
    return np.ascontiguousarray(np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8))


def _as_pil(x: ImageLike, what: str) -> Image.Image:
    return x.convert("RGB") if isinstance(x, Image.Image) else Image.fromarray(_as_uint8(x, what), mode="RGB")


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return int(right - left)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` shortened with an ellipsis so that it fits in ``width`` pixels."""
    if _text_width(draw, text, font) <= width:
        return text
    while text and _text_width(draw, text + "…", font) > width:
        text = text[:-1]
    return text + "…" if text else ""


def _font_size(cell_w: int) -> int:
    return int(max(11, min(18, cell_w // 10)))


def _fit_cell(img: Image.Image, max_side: int | None, min_side: int | None = None) -> Image.Image:
    """Display size: enlarge small images by an integer factor (nearest), shrink large ones (Lanczos)."""
    if min_side is not None and max(img.size) < min_side:
        f = -(-min_side // max(img.size))
        if max_side is not None:
            f = max(1, min(f, max_side // max(img.size)))
        return img.resize((img.width * f, img.height * f), Image.Resampling.NEAREST)
    if max_side is None or max(img.size) <= max_side:
        return img
    s = max_side / max(img.size)
    size = (max(1, round(img.width * s)), max(1, round(img.height * s)))
    return img.resize(size, Image.Resampling.LANCZOS)


def _placeholder(w: int, h: int, text: str = "missing") -> Image.Image:
    img = Image.new("RGB", (w, h), _MISSING)
    d = ImageDraw.Draw(img)
    font = _font(_font_size(w))
    t = _fit_text(d, text, font, w - 4)
    tw = _text_width(d, t, font)
    d.text(((w - tw) // 2, max(0, h // 2 - _font_size(w) // 2)), t, fill=_MUTED, font=font)
    return img


# ---------------------------------------------------------------------------------------------
# generic grids


def grid_image(
    images: Sequence[ImageLike | None],
    labels: Sequence[str] | None = None,
    ncols: int = 4,
    pad: int = 6,
    max_side: int | None = None,
    min_side: int | None = None,
) -> Image.Image:
    """:func:`grid` as a PIL image."""
    if not images:
        raise ImageError("grid: no images given")
    if ncols < 1:
        raise ImageError(f"grid: ncols must be >= 1, got {ncols}")
    if labels is not None and len(labels) != len(images):
        raise ImageError(f"grid: {len(labels)} labels for {len(images)} images")
    pils = [None if im is None else _fit_cell(_as_pil(im, "grid"), max_side, min_side) for im in images]
    present = [p for p in pils if p is not None]
    cw = max((p.width for p in present), default=64)
    ch = max((p.height for p in present), default=64)
    fsize = _font_size(cw)
    font = _font(fsize)
    label_h = (fsize + 8) if labels is not None else 0
    ncols = min(ncols, len(pils))
    nrows = (len(pils) + ncols - 1) // ncols
    width = pad + ncols * (cw + pad)
    height = pad + nrows * (label_h + ch + pad)
    canvas = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(canvas)
    for i, p in enumerate(pils):
        r, c = divmod(i, ncols)
        x0 = pad + c * (cw + pad)
        y0 = pad + r * (label_h + ch + pad)
        if labels is not None:
            t = _fit_text(draw, str(labels[i]), font, cw)
            draw.text((x0 + (cw - _text_width(draw, t, font)) // 2, y0 + 2), t, fill=_TEXT, font=font)
        cell = p if p is not None else _placeholder(cw, ch)
        canvas.paste(cell, (x0 + (cw - cell.width) // 2, y0 + label_h + (ch - cell.height) // 2))
    return canvas


def grid(
    images: Sequence[ImageLike | None],
    labels: Sequence[str] | None = None,
    ncols: int = 4,
    pad: int = 6,
    max_side: int | None = None,
    min_side: int | None = None,
) -> torch.Tensor:
    """Lay out images in ``ncols`` columns with a label above each; returns ``3 x H x W``.

    Cells are as large as the largest image after optional display resizing (images larger
    than ``max_side`` shrunk with Lanczos, smaller than ``min_side`` enlarged by an integer
    factor with nearest neighbour); smaller images are centred. ``None`` entries become grey
    "missing" placeholders. Labels longer than a cell are shortened with an ellipsis.
    """
    return from_pil(grid_image(images, labels, ncols, pad, max_side, min_side))


def visibility_row_image(
    cover: ImageLike,
    stego: ImageLike,
    extras: Sequence[tuple[str, ImageLike]] = (),
    gain: float = 10.0,
    labels: tuple[str, str] = ("cover", "stego"),
    max_side: int | None = None,
    min_side: int | None = None,
) -> Image.Image:
    """:func:`visibility_row` as a PIL image."""
    c, s = _as_uint8(cover, "visibility_row cover"), _as_uint8(stego, "visibility_row stego")
    if c.shape != s.shape:
        raise ImageError(f"visibility_row: cover {c.shape[:2]} and stego {s.shape[:2]} differ in size")
    if gain <= 0:
        raise ImageError(f"visibility_row: gain must be positive, got {gain}")
    diff = np.abs(s.astype(np.float64) - c.astype(np.float64)) / 255.0 * gain
    diff_img = Image.fromarray(np.round(np.clip(diff, 0, 1) * 255.0).astype(np.uint8), mode="RGB")
    images: list[ImageLike] = [Image.fromarray(c), Image.fromarray(s), diff_img, *(im for _, im in extras)]
    names = [labels[0], labels[1], f"|{labels[1]} - {labels[0]}| x{gain:g}", *(name for name, _ in extras)]
    return grid_image(images, names, ncols=len(images), max_side=max_side, min_side=min_side)


def visibility_row(
    cover: ImageLike,
    stego: ImageLike,
    extras: Sequence[tuple[str, ImageLike]] = (),
    gain: float = 10.0,
    labels: tuple[str, str] = ("cover", "stego"),
    max_side: int | None = None,
    min_side: int | None = None,
) -> torch.Tensor:
    """One labelled row: cover | stego | ``|stego - cover| x gain`` | extras (e.g. secret, recovered).

    The difference (of the 8-bit images) is amplified by ``gain`` and clipped to [0, 1], so a
    change of 1/gain or more shows as full brightness: it makes an invisible embedding
    visible to the reader.
    """
    return from_pil(visibility_row_image(cover, stego, extras, gain, labels, max_side, min_side))


# ---------------------------------------------------------------------------------------------
# extraction run folders


def present_columns(set_dir: str | Path) -> list[str]:
    """The columns of :data:`COLUMNS` whose folder exists under ``outputs/<set>/``."""
    d = Path(set_dir)
    return [c for c in COLUMNS if (d / c).is_dir()]


def list_stems(set_dir: str | Path, columns: Sequence[str] | None = None) -> list[str]:
    """Image names (file stems, sorted) found in any of the column folders of a set."""
    d = Path(set_dir)
    cols = list(columns) if columns is not None else present_columns(d)
    stems: set[str] = set()
    for c in cols:
        stems.update(p.stem for p in (d / c).iterdir() if p.is_file() and p.suffix.lower() == ".png")
    return sorted(stems)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel for nearest-neighbour resizing (pixel centres)."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def upscale_nearest(x: ImageLike, size: tuple[int, int]) -> torch.Tensor:
    """Enlarge ``3 x h x w`` to ``size=(H, W)`` with nearest neighbour (pixels shown as they are).

    For integer factors every source pixel becomes an exact ``k x k`` block.
    """
    a = _as_uint8(x, "upscale_nearest")
    out = a[_nearest_index(a.shape[0], size[0])][:, _nearest_index(a.shape[1], size[1])]
    return from_pil(Image.fromarray(np.ascontiguousarray(out), mode="RGB"))


def load_row(set_dir: str | Path, stem: str, columns: Sequence[str], task: str = "style") -> list[torch.Tensor | None]:
    """One image per column for ``stem`` (``None`` where the file is missing).

    For super-resolution (``task == "sr"``) the low-resolution input is enlarged by nearest
    neighbour to the size of the outputs, so every column is shown at the same size.
    """
    d = Path(set_dir)
    row: list[torch.Tensor | None] = []
    for c in columns:
        p = d / c / f"{stem}.png"
        row.append(load_image(p) if p.is_file() else None)
    if task == "sr" and "input" in columns:
        i = list(columns).index("input")
        ref = next((im for c, im in zip(columns, row) if c != "input" and im is not None), None)
        inp = row[i]
        if inp is not None and ref is not None and tuple(inp.shape[-2:]) != tuple(ref.shape[-2:]):
            row[i] = upscale_nearest(inp, (int(ref.shape[-2]), int(ref.shape[-1])))
    return row


def comparison_image(
    rows: Sequence[Sequence[ImageLike | None]],
    column_labels: Sequence[str],
    row_labels: Sequence[str] | None = None,
    pad: int = 6,
    max_side: int | None = 256,
    min_side: int | None = 128,
) -> Image.Image:
    """:func:`comparison_grid` as a PIL image."""
    if not rows:
        raise ImageError("comparison_grid: no rows given")
    ncols = len(column_labels)
    if any(len(r) != ncols for r in rows):
        raise ImageError(f"comparison_grid: every row must have {ncols} images (one per column label)")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ImageError(f"comparison_grid: {len(row_labels)} row labels for {len(rows)} rows")
    pils = [
        [None if im is None else _fit_cell(_as_pil(im, "comparison_grid"), max_side, min_side) for im in r]
        for r in rows
    ]
    present = [p for r in pils for p in r if p is not None]
    cw = max((p.width for p in present), default=64)
    ch = max((p.height for p in present), default=64)
    head_size, row_size = _font_size(cw) + 1, max(11, _font_size(cw) - 2)
    head_font, row_font = _font(head_size), _font(row_size)
    head_h = head_size + 10
    row_h = (row_size + 6) if row_labels is not None else 0
    width = pad + ncols * (cw + pad)
    height = head_h + len(rows) * (row_h + ch + pad) + pad
    canvas = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(canvas)
    for j, lab in enumerate(column_labels):
        x0 = pad + j * (cw + pad)
        t = _fit_text(draw, str(lab), head_font, cw)
        draw.text((x0 + (cw - _text_width(draw, t, head_font)) // 2, 4), t, fill=_TEXT, font=head_font)
    draw.line([(pad, head_h - 3), (width - pad, head_h - 3)], fill=(200, 200, 200), width=1)
    for i, r in enumerate(pils):
        y0 = head_h + i * (row_h + ch + pad)
        if row_labels is not None:
            t = _fit_text(draw, str(row_labels[i]), row_font, width - 2 * pad)
            draw.text((pad, y0 + 2), t, fill=_MUTED, font=row_font)
        for j, p in enumerate(r):
            x0 = pad + j * (cw + pad)
            cell = p if p is not None else _placeholder(cw, ch)
            canvas.paste(cell, (x0 + (cw - cell.width) // 2, y0 + row_h + (ch - cell.height) // 2))
    return canvas


def comparison_grid(
    rows: Sequence[Sequence[ImageLike | None]],
    column_labels: Sequence[str],
    row_labels: Sequence[str] | None = None,
    pad: int = 6,
    max_side: int | None = 256,
    min_side: int | None = 128,
) -> torch.Tensor:
    """Rows of images under one header of column labels; a row's name is written above it.

    ``rows[i][j]`` is the image of row ``i``, column ``j`` (``None``: a "missing" placeholder).
    Display resizing as in :func:`grid`: larger than ``max_side`` shrunk, smaller than
    ``min_side`` enlarged by an integer factor with nearest neighbour. Returns ``3 x H x W``.
    """
    return from_pil(comparison_image(rows, column_labels, row_labels, pad, max_side, min_side))


# ---------------------------------------------------------------------------------------------
# super-resolution zoom


def _luma(a: np.ndarray) -> np.ndarray:
    """BT.601 luma (MATLAB ``rgb2ycbcr`` Y, in [16, 235]) of an 8-bit RGB array, float64."""
    return (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255.0 + 16.0


def highest_variance_window(x: ImageLike, frac: float = 0.25, steps: int = 16) -> Box:
    """The ``frac``-sized window (each side ``frac`` of the image's) with the most luma variance.

    Textured regions are where super-resolution models differ most, so that is where the zoom
    looks. Windows are scanned on a grid of about ``steps`` positions per axis (window sums
    from an integral image, so exact); ties go to the first (top-most, then left-most).
    Returns ``(top, left, height, width)``.
    """
    if not 0 < frac <= 1:
        raise ImageError(f"highest_variance_window: frac must be in (0, 1], got {frac}")
    y = _luma(_as_uint8(x, "highest_variance_window").astype(np.float64))
    h, w = y.shape
    wh, ww = max(1, min(h, round(h * frac))), max(1, min(w, round(w * frac)))
    sh, sw = max(1, (h - wh) // steps), max(1, (w - ww) // steps)
    tops, lefts = np.arange(0, h - wh + 1, sh), np.arange(0, w - ww + 1, sw)

    def window_sums(v: np.ndarray) -> np.ndarray:
        ii = np.zeros((h + 1, w + 1))
        ii[1:, 1:] = v.cumsum(0).cumsum(1)
        t, l = tops[:, None], lefts[None, :]
        return ii[t + wh, l + ww] - ii[t, l + ww] - ii[t + wh, l] + ii[t, l]

    n = wh * ww
    var = window_sums(y * y) / n - (window_sums(y) / n) ** 2
    r, c = np.unravel_index(int(np.argmax(var)), var.shape)
    return (int(tops[r]), int(lefts[c]), wh, ww)


def _draw_box_pil(img: Image.Image, box: Box, color: tuple[float, float, float], width: int | None) -> Image.Image:
    top, left, bh, bw = box
    w, h = img.size
    if top < 0 or left < 0 or top + bh > h or left + bw > w or bh < 1 or bw < 1:
        raise ImageError(f"draw_box: box {box} is outside the image {h}x{w}")
    lw = width if width is not None else max(1, round(min(h, w) / 128))
    out = img.copy()
    ImageDraw.Draw(out).rectangle(
        [left, top, left + bw - 1, top + bh - 1], outline=tuple(round(c * 255) for c in color), width=lw
    )
    return out


def draw_box(
    x: ImageLike, box: Box, color: tuple[float, float, float] = BOX_COLOR, width: int | None = None
) -> torch.Tensor:
    """A copy of ``x`` with the rectangle ``box = (top, left, height, width)`` outlined."""
    return from_pil(_draw_box_pil(_as_pil(x, "draw_box"), box, color, width))


def _scaled_box(box: Box, ref_hw: tuple[int, int], hw: tuple[int, int]) -> Box:
    """``box`` given on an image of size ``ref_hw``, mapped to one of size ``hw``, clamped."""
    top, left, bh, bw = box
    sy, sx = hw[0] / ref_hw[0], hw[1] / ref_hw[1]
    t, l = int(round(top * sy)), int(round(left * sx))
    h, w = max(1, int(round(bh * sy))), max(1, int(round(bw * sx)))
    t, l = min(max(0, t), hw[0] - 1), min(max(0, l), hw[1] - 1)
    return (t, l, min(h, hw[0] - t), min(w, hw[1] - l))


def zoom_image(
    columns: Sequence[tuple[str, ImageLike | None]],
    box: Box | None = None,
    frac: float = 0.25,
    max_side: int | None = 256,
    min_side: int | None = 128,
) -> tuple[Image.Image, Box, int]:
    """:func:`zoom_panel` with the panel as a PIL image."""
    present = [(lab, _as_pil(im, f"zoom_panel {lab}")) for lab, im in columns if im is not None]
    if not present:
        raise ImageError("zoom_panel: no images given")
    by_label = dict(present)
    ref = by_label.get(COLUMN_LABELS["gt"], by_label.get(COLUMN_LABELS["victim"], present[0][1]))
    ref_hw = (ref.height, ref.width)
    if box is None:
        box = highest_variance_window(ref, frac=frac)
    shown = _fit_cell(Image.new("RGB", ref.size), max_side, min_side).size  # (w, h) on screen
    zoom = max(1, min(shown[1] // box[2], shown[0] // box[3]))
    cells: list[Image.Image | None] = []
    crops: list[Image.Image | None] = []
    labels_top: list[str] = []
    labels_bottom: list[str] = []
    for lab, _ in columns:
        labels_top.append(lab)
        labels_bottom.append(f"{lab}, zoom x{zoom}")
        im = by_label.get(lab)
        if im is None:
            cells.append(None)
            crops.append(None)
            continue
        b = _scaled_box(box, ref_hw, (im.height, im.width))
        boxed = _draw_box_pil(im, b, BOX_COLOR, None)
        filt = Image.Resampling.NEAREST if shown[0] >= boxed.width else Image.Resampling.LANCZOS
        cells.append(boxed.resize(shown, filt))
        cut = im.crop((b[1], b[0], b[1] + b[3], b[0] + b[2]))
        crops.append(cut.resize((cut.width * zoom, cut.height * zoom), Image.Resampling.NEAREST))
    panel = grid_image(cells + crops, labels_top + labels_bottom, ncols=len(columns))
    return panel, box, zoom


def zoom_panel(
    columns: Sequence[tuple[str, ImageLike | None]],
    box: Box | None = None,
    frac: float = 0.25,
    max_side: int | None = 256,
    min_side: int | None = 128,
) -> tuple[torch.Tensor, Box, int]:
    """Full images with a box (top row) and that box enlarged by nearest neighbour (bottom row).

    ``columns`` is ``[(label, image), ...]`` with distinct labels (images of one size, e.g.
    the LR input already enlarged with :func:`upscale_nearest`; ``None`` for a missing
    image). The box defaults to :func:`highest_variance_window` of the ground truth (or,
    without it, the victim, or the first image). The full images are resized for display as
    in :func:`grid` (``max_side``, ``min_side``); every crop is enlarged by the same integer
    factor ``zoom``, the largest that keeps it no larger than the displayed full image, and is
    never resized again, so its pixels are shown exactly. Returns the panel, the box used and
    ``zoom``.
    """
    panel, box, zoom = zoom_image(columns, box, frac, max_side, min_side)
    return from_pil(panel), box, zoom
