"""Image grids: exact placement of pixels, nearest-neighbour zoom, variance window, boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from copymark.errors import ImageError
from copymark.images import from_uint8, to_uint8
from copymark.report import grids


def t(arr: np.ndarray) -> torch.Tensor:
    return from_uint8(torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1))


def a(x: torch.Tensor) -> np.ndarray:
    return to_uint8(x).permute(1, 2, 0).numpy()


def contains_exactly(big: np.ndarray, small: np.ndarray) -> tuple[int, int] | None:
    """Top-left (y, x) where ``small`` appears pixel-for-pixel in ``big``, else None."""
    r = cv2.matchTemplate(big.astype(np.float32), small.astype(np.float32), cv2.TM_SQDIFF)
    lo, _, loc, _ = cv2.minMaxLoc(r)
    if lo > 0.5 * small.size:  # float32 sums cancel imprecisely; the exact check below decides
        return None
    y, x = loc[1], loc[0]
    return (y, x) if np.array_equal(big[y : y + small.shape[0], x : x + small.shape[1]], small) else None


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    out = []
    for name in ("astronaut", "coffee", "chelsea"):
        img = getattr(skimage.data, name)()
        out.append(cv2.resize(img, (48, 40), interpolation=cv2.INTER_AREA))
    return out


def test_grid_places_every_image_and_wraps(photos):
    imgs = [t(p) for p in photos]
    g1 = a(grids.grid(imgs, ["a", "b", "c"], ncols=3))
    g2 = a(grids.grid(imgs, ["a", "b", "c"], ncols=2))
    assert g1.shape[1] > g2.shape[1] and g2.shape[0] > g1.shape[0]
    for g in (g1, g2):
        spots = [contains_exactly(g, p) for p in photos]
        assert all(s is not None for s in spots)
    assert contains_exactly(g1, np.ascontiguousarray(photos[0][::-1])) is None  # the check can fail
    # ncols=2: third image starts a second row, left-aligned with the first
    s = [contains_exactly(g2, p) for p in photos]
    assert s[2][1] == s[0][1] and s[2][0] > s[0][0]


def test_grid_placeholder_and_errors(photos):
    g = a(grids.grid([t(photos[0]), None], ["x", "missing one"], ncols=2))
    assert contains_exactly(g, photos[0]) is not None
    assert (g == 225).all(axis=2).sum() > 40 * 48 // 2  # the grey placeholder cell
    with pytest.raises(ImageError):
        grids.grid([], None)
    with pytest.raises(ImageError):
        grids.grid([t(photos[0])], ["a", "b"])


def test_min_side_enlarges_by_nearest(photos):
    g = a(grids.grid([t(photos[0])], ["a"], ncols=1, min_side=96))
    up = np.repeat(np.repeat(photos[0], 2, axis=0), 2, axis=1)  # 48 -> 96 is an exact x2
    assert contains_exactly(g, up) is not None


def test_upscale_nearest_is_pixel_repetition(photos):
    lr = photos[0][:10, :12]
    up = a(grids.upscale_nearest(t(lr), (40, 48)))
    np.testing.assert_array_equal(up, np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1))


def test_highest_variance_window_matches_brute_force():
    rng = np.random.default_rng(0)
    img = np.full((64, 80, 3), 120, np.uint8)
    photo = cv2.resize(skimage.data.astronaut(), (20, 16), interpolation=cv2.INTER_AREA)
    img[36:52, 48:68] = photo  # the only texture in a flat image
    img = np.clip(img.astype(int) + rng.integers(-2, 3, img.shape), 0, 255).astype(np.uint8)
    top, left, h, w = grids.highest_variance_window(t(img), frac=0.25, steps=64)
    assert (h, w) == (16, 20)
    y = (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0 + 16
    best = max(
        ((y[r : r + h, c : c + w].var(), r, c) for r in range(0, 64 - h + 1) for c in range(0, 80 - w + 1)),
        key=lambda v: v[0],
    )
    assert (top, left) == (best[1], best[2])
    assert abs(top - 36) <= 4 and abs(left - 48) <= 4


def test_draw_box_outlines_only():
    img = np.full((32, 32, 3), 50, np.uint8)
    out = a(grids.draw_box(t(img), (4, 6, 10, 12), width=1))
    red = np.all(out == [255, 41, 26], axis=2)
    assert red[4, 6:18].all() and red[13, 6:18].all() and red[4:14, 6].all() and red[4:14, 17].all()
    assert red.sum() == 2 * 12 + 2 * 8
    with pytest.raises(ImageError):
        grids.draw_box(t(img), (30, 0, 5, 5))


def test_zoom_panel_shows_exact_nearest_crops(photos):
    gt = cv2.resize(skimage.data.chelsea(), (96, 96), interpolation=cv2.INTER_AREA)
    lr = cv2.resize(gt, (24, 24), interpolation=cv2.INTER_AREA)
    victim = cv2.resize(lr, (96, 96), interpolation=cv2.INTER_CUBIC)
    cols = [("input", grids.upscale_nearest(t(lr), (96, 96))), ("victim", t(victim)), ("ground truth", t(gt))]
    panel, box, zoom = grids.zoom_panel(cols, max_side=256, min_side=128)
    assert box == grids.highest_variance_window(t(gt))
    top, left, h, w = box
    assert (h, w) == (24, 24)
    # full images shown at 192 px (x2), so crops are enlarged x8 (24 * 8 = 192)
    assert zoom == 8
    p = a(panel)
    for arr in (victim, gt):
        crop = arr[top : top + h, left : left + w]
        assert contains_exactly(p, np.repeat(np.repeat(crop, zoom, axis=0), zoom, axis=1)) is not None


def test_visibility_row_amplifies_difference(photos):
    cover = photos[0]
    rng = np.random.default_rng(1)
    stego = np.clip(cover.astype(int) + rng.integers(-3, 4, cover.shape), 0, 255).astype(np.uint8)
    row = a(grids.visibility_row(t(cover), t(stego), extras=[("secret", t(photos[1]))], gain=20))
    expected = a((((t(stego) - t(cover)).abs()) * 20).clamp(0, 1))
    for img in (cover, stego, expected, photos[1]):
        assert contains_exactly(row, img) is not None
    with pytest.raises(ImageError):
        grids.visibility_row(t(cover), t(photos[1][:20]))


def test_comparison_grid_and_run_rows(sr_run):
    set_dir = sr_run / "outputs" / "test"
    cols = grids.present_columns(set_dir)
    assert cols == ["input", "victim", "surrogate", "gt"]
    stems = grids.list_stems(set_dir, cols)
    assert len(stems) == 6
    row = grids.load_row(set_dir, stems[0], cols, task="sr")
    assert all(tuple(x.shape) == (3, 96, 96) for x in row)  # LR input enlarged to the output size
    g = a(grids.comparison_grid([row], [grids.COLUMN_LABELS[c] for c in cols], row_labels=[stems[0]], min_side=None))
    for x in row:
        assert contains_exactly(g, a(x)) is not None
    with pytest.raises(ImageError):
        grids.comparison_grid([row[:2]], ["a", "b", "c"])
