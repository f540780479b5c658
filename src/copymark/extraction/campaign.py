"""An extraction campaign: pick query images from the attacker's photos, query, store.

Candidates: every photo of ``data_dir`` (recursively) contributes ``k`` random ``size x size``
crops at native resolution (photos smaller than ``size`` are first upscaled, shorter side to
``size``); ``k`` is chosen so the pool holds about ``pool_factor x budget`` candidates, at least
one per photo. Crops make one photo yield many training pairs, which matters when the attacker
owns few, large photos (the demo), and change nothing for photos already of query size
(Tiny-ImageNet at 64 px gives one candidate each).

Strategies order this pool; the campaign queries the first ``budget`` of the order:

* ``random``: a seeded shuffle (candidates sorted by a seeded hash of their source).
* ``diverse``: greedy k-center (farthest-point) selection in a cheap feature space -- an 8x8
  colour thumbnail, per-channel 8-bin histograms and gradient-energy statistics, standardised
  and randomly projected to 48 dimensions. Each pick is the candidate farthest from all
  earlier picks, so a small budget covers colours, textures and layouts instead of repeating
  near-duplicates (neighbouring crops of one photo). The order is a prefix order: the first
  ``m`` picks are the same for every budget >= m, so learning curves over budgets are nested
  and a resumed campaign picks the same images.

Budget: ``budget`` is the total number of answers for this victim in this store; a rerun with
the same arguments resumes (already answered inputs are skipped, never re-queried) and stops
when the store holds ``budget`` answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from copymark.client.http import ApiClient, RetryPolicy
from copymark.client.queries import QueryReport, query_all
from copymark.client.store import QueryStore, sha256_hex
from copymark.errors import ConfigError, DataError

Strategy = Literal["random", "diverse"]
STRATEGIES: tuple[str, ...] = ("random", "diverse")


@dataclass(frozen=True)
class Candidate:
    path: Path
    rel: str
    top: int
    left: int
    resize_to: tuple[int, int] | None  # (w, h) when the photo is upscaled before cropping

    @property
    def source(self) -> str:
        return f"{self.rel}#{self.top},{self.left}" + (
            f"@{self.resize_to[0]}x{self.resize_to[1]}" if self.resize_to else ""
        )


# the suffixes of copymark.images.IMAGE_SUFFIXES; the campaign reads photos with Pillow
# directly so that the attacker's client never imports torch (it starts in about a second)
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def list_photos(root: Path) -> list[Path]:
    """Image files under ``root`` (recursively, hidden ones skipped), sorted by relative path."""
    if not root.is_dir():
        raise DataError(f"attacker data folder not found: {root}", hint="pass a folder of photos with --data")
    files = sorted(
        (
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix.lower() in PHOTO_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise DataError(f"attacker data folder {root} holds no images ({', '.join(PHOTO_SUFFIXES)})")
    return files


def _open_rgb(path: Path) -> Image.Image:
    """Decode a photo as RGB with its EXIF orientation applied (DataError if unreadable)."""
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            img = ImageOps.exif_transpose(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: not a readable image ({err})", hint="remove or fix the file") from None
    return img.convert("RGB") if img.mode != "RGB" else img


def _fit(img: Image.Image, size: int) -> tuple[Image.Image, tuple[int, int] | None]:
    w, h = img.size
    if min(w, h) >= size:
        return img, None
    s = size / min(w, h)
    new = (max(size, round(w * s)), max(size, round(h * s)))
    return img.resize(new, Image.Resampling.BICUBIC), new


def crop_png(c: Candidate, size: int) -> bytes:
    """The PNG bytes of one candidate crop (deterministic: same candidate, same bytes)."""
    import io

    img = _open_rgb(c.path)
    if c.resize_to is not None:
        img = img.resize(c.resize_to, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.crop((c.left, c.top, c.left + size, c.top + size)).save(buf, format="PNG")
    return buf.getvalue()


def _features(arr: np.ndarray) -> np.ndarray:
    """Cheap descriptor of one ``size x size x 3`` uint8 crop."""
    x = arr.astype(np.float32) / 255.0
    h, w, _ = x.shape
    thumb = np.asarray(Image.fromarray(arr).resize((8, 8), Image.Resampling.BOX), dtype=np.float32).ravel() / 255.0
    hist = np.concatenate([np.histogram(x[..., c], bins=8, range=(0, 1))[0] / (h * w) for c in range(3)])
    g = x.mean(axis=2)
    gx, gy = np.abs(np.diff(g, axis=1)), np.abs(np.diff(g, axis=0))
    grad = np.array([gx.mean(), gy.mean(), gx.std(), gy.std(), g.std()], dtype=np.float32) * 4
    return np.concatenate([thumb, hist, grad]).astype(np.float32)


def candidate_pool(
    data_dir: str | Path, size: int, budget: int, seed: int, pool_factor: float = 4.0, with_features: bool = False
) -> tuple[list[Candidate], np.ndarray | None]:
    """All candidate crops of the attacker's photos (and their features when asked)."""
    root = Path(data_dir)
    files = list_photos(root)
    k = max(1, math.ceil(pool_factor * budget / len(files)))
    cands: list[Candidate] = []
    feats: list[np.ndarray] = []
    for idx, p in enumerate(files):
        rng = np.random.default_rng([seed, idx])  # per photo: its first j crops are the same for any k >= j
        img, resized = _fit(_open_rgb(p), size)
        w, h = img.size
        n_pos = (h - size + 1) * (w - size + 1)
        boxes: list[tuple[int, int]] = []
        seen: set[tuple[int, int]] = set()
        for _ in range(k if n_pos > 1 else 1):
            box = (int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1)))
            if box not in seen:
                seen.add(box)
                boxes.append(box)
        arr = np.asarray(img) if with_features else None
        rel = p.relative_to(root).as_posix()
        for top, left in boxes:
            cands.append(Candidate(p, rel, top, left, resized))
            if arr is not None:
                feats.append(_features(arr[top : top + size, left : left + size]))
    return cands, (np.stack(feats) if with_features else None)


def kcenter_order(feats: np.ndarray, n: int, seed: int, dims: int = 48) -> list[int]:
    """Greedy farthest-point order of the first ``n`` picks (standardised, randomly projected)."""
    rng = np.random.default_rng(seed)
    f = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    proj = rng.standard_normal((f.shape[1], min(dims, f.shape[1]))).astype(np.float32) / math.sqrt(dims)
    z = f @ proj
    n = min(n, len(z))
    first = int(rng.integers(len(z)))
    order = [first]
    dist = ((z - z[first]) ** 2).sum(1)
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        order.append(nxt)
        dist = np.minimum(dist, ((z - z[nxt]) ** 2).sum(1))
    return order


def select_order(
    data_dir: str | Path,
    size: int,
    budget: int,
    strategy: str,
    seed: int,
    pool_factor: float = 4.0,
    n: int | None = None,
) -> list[Candidate]:
    """Candidates in the order the strategy would query them: the first ``n`` (default: all).

    The pool depends on ``budget`` (its size is about ``pool_factor x budget``), so a resumed
    campaign must pass the same budget to see the same order.
    """
    match strategy:
        case "random":
            cands, _ = candidate_pool(data_dir, size, budget, seed, pool_factor)

            # order by a seeded hash of each candidate, so pools of different budgets (which nest)
            # list their common candidates in the same relative order
            def key(c: Candidate) -> bytes:
                return hashlib.sha256(f"{seed}|{c.source}".encode()).digest()

            return sorted(cands, key=key)[:n]
        case "diverse":
            cands, feats = candidate_pool(data_dir, size, budget, seed, pool_factor, with_features=True)
            assert feats is not None
            order = kcenter_order(feats, len(cands) if n is None else min(n, len(cands)), seed + 1)
            return [cands[i] for i in order]
    raise ConfigError(f"unknown query-selection strategy {strategy!r}", hint=f"use one of: {', '.join(STRATEGIES)}")


@dataclass
class CampaignResult:
    victim_url: str
    victim_id: str
    task: str
    scale: int
    strategy: str
    budget: int
    answered_total: int  # answers for this victim in the store after the campaign
    report: QueryReport
    seconds: float
    store_dir: str
    already_answered: int = 0  # answers the store held for this victim before this run
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        return d


def run_campaign(
    victim_url: str,
    api_key: str,
    data_dir: str | Path,
    budget: int,
    store_dir: str | Path,
    strategy: str = "random",
    size: int = 128,
    seed: int = 0,
    concurrency: int = 4,
    retry: RetryPolicy | None = None,
    pool_factor: float = 4.0,
    progress: bool = True,
    plan_budget: int | None = None,
) -> CampaignResult:
    """Query the victim at ``victim_url`` with up to ``budget`` crops of ``data_dir``; see the module doc.

    ``plan_budget`` (default ``budget``) is the budget the selection order is planned for: a
    learning curve plans for its full budget and spends it in steps, so each smaller campaign is
    a prefix of the full one (the diverse order depends on the pool, which depends on the budget).
    """
    if plan_budget is not None and plan_budget < budget:
        raise ConfigError(f"plan_budget ({plan_budget}) must be at least the budget ({budget})")
    if budget < 0:
        raise ConfigError(f"budget must be >= 0, got {budget}")
    if size < 8:
        raise ConfigError(f"size must be at least 8 pixels, got {size}")
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown query-selection strategy {strategy!r}", hint=f"use one of: {', '.join(STRATEGIES)}")
    return asyncio.run(
        _campaign(
            victim_url,
            api_key,
            Path(data_dir),
            budget,
            Path(store_dir),
            strategy,
            size,
            seed,
            concurrency,
            retry or RetryPolicy(),
            pool_factor,
            progress,
            plan_budget or budget,
        )
    )


async def _campaign(
    victim_url: str,
    api_key: str,
    data_dir: Path,
    budget: int,
    store_dir: Path,
    strategy: str,
    size: int,
    seed: int,
    concurrency: int,
    retry: RetryPolicy,
    pool_factor: float,
    progress: bool,
    plan_budget: int,
) -> CampaignResult:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    t0 = time.perf_counter()
    if not data_dir.is_dir():
        raise DataError(f"attacker data folder not found: {data_dir}")
    store = QueryStore(store_dir)
    try:
        async with ApiClient(victim_url, api_key, concurrency=concurrency, retry=retry, seed=seed) as client:
            info = await client.info()
            victim_id = str(info.get("victim_id") or victim_url)
            done = store.answered(victim_id)
            remaining = max(0, budget - len(done))
            client.local_budget = remaining
            items: list[tuple[bytes, str]] = []
            if remaining > 0:
                # the first `budget` picks, plus room for answers this store got from other orders
                for c in select_order(data_dir, size, plan_budget, strategy, seed, pool_factor, n=budget + len(done)):
                    png = crop_png(c, size)
                    if sha256_hex(png) in done:
                        continue
                    items.append((png, c.source))
                    if len(items) >= remaining:
                        break
            store.set_meta(
                "campaign",
                json.dumps(
                    {
                        "victim_url": victim_url,
                        "victim_id": victim_id,
                        "strategy": strategy,
                        "size": size,
                        "seed": seed,
                        "budget": budget,
                        "plan_budget": plan_budget,
                        "data_dir": str(data_dir),
                        "task": info.get("task"),
                        "scale": info.get("scale"),
                    }
                ),
            )
            if progress and items:
                with Progress(
                    TextColumn("[bold]extract[/] {task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    TimeRemainingColumn(),
                    transient=False,
                ) as bar:
                    tid = bar.add_task(f"{strategy} (victim {victim_id[:8]})", total=len(items))
                    report = await query_all(client, store, victim_id, items, on_progress=lambda _k: bar.advance(tid))
            else:
                report = await query_all(client, store, victim_id, items)
        counts = store.counts(victim_id)
        return CampaignResult(
            victim_url,
            victim_id,
            str(info.get("task")),
            int(info.get("scale") or 1),
            strategy,
            budget,
            counts["answered"],
            report,
            time.perf_counter() - t0,
            str(store_dir),
            len(done),
            counts,
        )
    finally:
        store.close()
