"""An extraction campaign: pick query images from the attacker's photos, query, store.

Candidates: every photo of ``data_dir`` (recursively) contributes ``k`` random ``size x size``
crops at native resolution (photos smaller than ``size`` are refused, or with ``allow_upscale``
first upscaled, shorter side to ``size``); ``k`` is chosen so the pool holds about ``pool_factor x budget`` candidates, at least
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

The campaign is a :class:`CampaignConfig` (the API key apart: a secret is never recorded).
Everything is checked before the store folder is created or touched. A reused store is
verified file by file against the hashes: a damaged input is rewritten from the photos (the
same crop gives the same bytes), a damaged answer is queried again, counted in the budget like
any missing answer (a free Idempotency-Key replay while the server keeps the reply); what
cannot be repaired (an input whose photo is gone) is listed in the result, so ``copymark
extract`` ends with an error naming it instead of leaving a damaged store behind an rc of 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field, field_validator, model_validator

from copymark.client.http import ApiClient, RetryPolicy
from copymark.client.queries import QueryReport, query_all
from copymark.client.store import QueryStore, sha256_hex
from copymark.config import StrictModel
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


class CampaignConfig(StrictModel):
    """Everything a campaign needs except the API key (a secret, never recorded).

    ``budget`` is the total number of answers to hold for this victim in ``store_dir``;
    ``plan_budget`` (default ``budget``) the budget the selection order is planned for (a
    learning curve plans for its full budget and spends it in steps, so each smaller campaign
    is a prefix of the full one). ``allow_upscale``: query crops of photos smaller than
    ``size`` (upscaled first) instead of refusing them.
    """

    victim_url: str = Field(min_length=1, description="base URL of the victim API, e.g. http://127.0.0.1:8000")
    data_dir: Path = Field(description="folder of the attacker's own photos (searched recursively)")
    budget: int = Field(ge=0, description="total answers to hold for this victim in the store")
    store_dir: Path = Field(description="query store folder (created; reruns resume it)")
    strategy: Strategy = "random"
    size: int = Field(default=128, ge=8, description="query image side in pixels (square crops)")
    seed: int = 0
    concurrency: int = Field(default=4, ge=1, description="requests in flight at once")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    pool_factor: float = Field(default=4.0, gt=0, description="candidate pool size / budget")
    plan_budget: int | None = Field(default=None, ge=0)
    allow_upscale: bool = False

    @field_validator("victim_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _plan_covers_budget(self) -> CampaignConfig:
        if self.plan_budget is not None and self.plan_budget < self.budget:
            raise ValueError(f"plan_budget ({self.plan_budget}) must be at least the budget ({self.budget})")
        return self

    @property
    def planned_budget(self) -> int:
        return self.plan_budget if self.plan_budget is not None else self.budget

    def recorded(self) -> dict[str, object]:
        """What the store's ``campaign`` meta records of this config (paths as given)."""
        return {
            "victim_url": self.victim_url,
            "strategy": self.strategy,
            "size": self.size,
            "seed": self.seed,
            "budget": self.budget,
            "plan_budget": self.planned_budget,
            "pool_factor": self.pool_factor,
            "data_dir": str(self.data_dir),
            "allow_upscale": self.allow_upscale,
        }


def photo_sizes(files: list[Path]) -> list[tuple[int, int]]:
    """``(width, height)`` of each photo from its header (no decoding); DataError if unreadable."""
    from PIL import UnidentifiedImageError

    sizes = []
    for p in files:
        try:
            with Image.open(p) as im:
                sizes.append(im.size)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"{p}: not a readable image ({err})", hint="remove or fix the file") from None
    return sizes


def check_campaign(config: CampaignConfig) -> list[Path]:
    """Everything that can be checked without the server and without touching the store: the
    photos (present, readable, large enough for ``size``) and the store folder. Returns the photos.

    Photos smaller than ``size`` are refused unless ``allow_upscale``: their crops would be
    upscaled, blurry images unlike anything the victim is used on, and training on the victim's
    answers to them teaches the surrogate that blur (for a super-resolution victim the query
    is then not even a real low-resolution photo).
    """
    files = list_photos(config.data_dir)
    small = [(p, w, h) for p, (w, h) in zip(files, photo_sizes(files)) if min(w, h) < config.size]
    if small and not config.allow_upscale:
        p, w, h = min(small, key=lambda t: min(t[1], t[2]))
        smallest = min(min(w, h) for _, w, h in small)
        raise ConfigError(
            f"--size {config.size}: {len(small)} of {len(files)} photos in {config.data_dir} are smaller "
            f"(smallest: {p.name}, {w}x{h}); their crops would be upscaled, blurry queries",
            hint=f"use --size {smallest} or less, remove the small photos, or pass --allow-upscale to query "
            "upscaled crops anyway",
        )
    st = config.store_dir
    if st.exists() and not st.is_dir():
        raise DataError(f"query store {st} exists and is not a folder", hint="point --store at a folder")
    if st.is_dir() and not (st / "index.sqlite").is_file() and any(st.iterdir()):
        raise DataError(
            f"{st} is not empty and not a query store (no index.sqlite): refusing to write into it",
            hint="point --store at a new or empty folder, or at the store of an earlier `copymark extract`",
        )
    return files


def candidate_from_source(data_dir: Path, source: str) -> Candidate | None:
    """The candidate a row's ``source`` (``rel#top,left[@WxH]``) names, or None if malformed."""
    rel, sep, where = source.rpartition("#")
    if not sep or not rel:
        return None
    pos, _, resize = where.partition("@")
    try:
        top, left = (int(v) for v in pos.split(","))
        resize_to = tuple(int(v) for v in resize.split("x")) if resize else None
    except ValueError:
        return None
    if resize_to is not None and len(resize_to) != 2:
        return None
    return Candidate(data_dir / rel, rel, top, left, resize_to)  # type: ignore[arg-type]


@dataclass
class StoreRepair:
    """What a campaign found damaged in the store it reused, and what it did about it."""

    inputs_restored: int = 0  # input files rewritten from the attacker's photos (same crop, same hash)
    answers_requeried: int = 0  # answered rows with a damaged answer, queried again in this run
    unrepaired: list[str] = field(default_factory=list)  # damaged files left (input not re-made)


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
    already_answered: int = 0  # intact answers the store held for this victim before this run
    counts: dict[str, int] = field(default_factory=dict)
    repair: StoreRepair = field(default_factory=StoreRepair)
    candidates_exhausted: bool = False  # the photos gave fewer distinct crops than the budget asked for

    def to_json(self) -> dict[str, object]:
        return asdict(replace(self, report=replace(self.report, stop_error=None)))


def run_campaign(config: CampaignConfig, api_key: str, *, progress: bool = True) -> CampaignResult:
    """Run the campaign ``config`` with ``api_key``; see the module docstring.

    Everything is checked (:func:`check_campaign`, then the server's ``/v1/info``) before the
    store folder is created or touched. A reused store is verified first: damaged input files
    are rewritten from the photos when the row's crop can be re-made (same bytes, same hash),
    answered rows with a damaged answer are queried again (a free replay while the server keeps
    the reply); anything left damaged is listed in ``result.repair.unrepaired``.
    """
    files = check_campaign(config)
    return asyncio.run(_campaign(config, api_key, files, progress))


def _verify_reused_store(
    store: QueryStore, config: CampaignConfig, victim_id: str
) -> tuple[StoreRepair, list[tuple[bytes, str]]]:
    """Hash-check this victim's rows; restore damaged inputs from the photos; requeue damaged
    answers. Returns what was done and the requeued ``(input png, source)`` to query again."""
    rep = store.integrity_check(victim_id=victim_id)
    sqlite = [p for p in rep.problems if p.startswith("sqlite:")]
    if sqlite:
        raise DataError(
            f"query store {config.store_dir}: the SQLite index is damaged ({sqlite[0]})",
            hint="restore the store folder from a backup, or start a new store",
        )
    repair = StoreRepair()
    sources = {r["input_sha"]: str(r["source"] or "") for r in store.rows(victim_id)}
    for d in rep.damaged:
        if d.what != "input":
            continue
        c = candidate_from_source(config.data_dir, sources.get(d.input_sha, ""))
        if c is None or not c.path.is_file():
            continue
        try:
            png = crop_png(c, config.size)
        except DataError:
            continue
        if sha256_hex(png) == d.input_sha:
            store.restore_input(png)
            repair.inputs_restored += 1
    left = store.requeue_damaged(victim_id)
    bad_inputs = {x.input_sha for x in left if x.what == "input"}
    requeued = [
        (store.input_path(x.input_sha).read_bytes(), sources.get(x.input_sha, ""))
        for x in left
        if x.what == "answer" and x.input_sha not in bad_inputs
    ]
    repair.answers_requeried = len(requeued)
    repair.unrepaired = [x.describe() for x in left if x.input_sha in bad_inputs]
    return repair, requeued


async def _campaign(config: CampaignConfig, api_key: str, files: list[Path], progress: bool) -> CampaignResult:
    t0 = time.perf_counter()
    store: QueryStore | None = None
    try:
        async with ApiClient(
            config.victim_url, api_key, concurrency=config.concurrency, retry=config.retry, seed=config.seed
        ) as client:
            info = await client.info()  # the victim is reachable before the store is created or touched
            victim_id = str(info.get("victim_id") or config.victim_url)
            repair = StoreRepair()
            done: set[str] = set()
            requeued: list[tuple[bytes, str]] = []  # answered rows whose damaged answer is queried again
            if (config.store_dir / "index.sqlite").is_file():
                store = QueryStore(config.store_dir)
                repair, requeued = _verify_reused_store(store, config, victim_id)
                done = store.answered(victim_id)
            items, exhausted = _plan_items(config, done, requeued)
            if store is None:
                store = QueryStore(config.store_dir)
            store.set_campaign(victim_id, {**config.recorded(), "task": info.get("task"), "scale": info.get("scale")})
            client.local_budget = max(0, config.budget - len(done))
            report = await _query(client, store, victim_id, items, config.strategy, progress)
        counts = store.counts(victim_id)
        return CampaignResult(
            config.victim_url,
            victim_id,
            str(info.get("task")),
            int(info.get("scale") or 1),
            config.strategy,
            config.budget,
            counts["answered"],
            report,
            time.perf_counter() - t0,
            str(config.store_dir),
            len(done),
            counts,
            repair,
            exhausted,
        )
    finally:
        if store is not None:
            store.close()


def _plan_items(
    config: CampaignConfig, done: set[str], requeued: list[tuple[bytes, str]]
) -> tuple[list[tuple[bytes, str]], bool]:
    """The inputs to query: requeued damaged rows first, then the strategy's order, skipping what
    the store holds and crops whose bytes repeat, up to ``budget`` answers in all. Also returns
    whether the candidate pool ran out first (the photos give fewer distinct crops)."""
    remaining = max(0, config.budget - len(done))
    items = requeued[:remaining]
    taken = {sha256_hex(png) for png, _ in items}
    # the first `budget` picks, plus room for answers this store got from other orders; more
    # when crops repeat (flat regions give identical bytes): the order is a prefix order, so a
    # longer one starts with the same picks
    n, start = config.budget + len(done), 0
    while len(items) < remaining:
        order = select_order(
            config.data_dir,
            config.size,
            config.planned_budget,
            config.strategy,
            config.seed,
            config.pool_factor,
            n=n,
        )
        for c in order[start:]:
            png = crop_png(c, config.size)
            sha = sha256_hex(png)
            if sha in done or sha in taken:
                continue
            items.append((png, c.source))
            taken.add(sha)
            if len(items) >= remaining:
                break
        if len(items) < remaining and len(order) < n:
            return items, True  # every candidate of the pool taken
        n, start = 2 * n, len(order)
    return items, False


async def _query(
    client: ApiClient,
    store: QueryStore,
    victim_id: str,
    items: list[tuple[bytes, str]],
    strategy: str,
    progress: bool,
) -> QueryReport:
    if not (progress and items):
        return await query_all(client, store, victim_id, items)
    from copymark.progress import Progress

    # a bar on a terminal, plain periodic lines when output is redirected (a log shows progress)
    with Progress(f"extract {strategy} (victim {victim_id[:8]})", len(items)) as bar:
        return await query_all(client, store, victim_id, items, on_progress=lambda _k: bar.advance())
