"""Evaluate an extraction: tables A, B and C (the extraction study's protocol).

* **A** victim vs ground truth: how good the victim is (the owner's baseline).
* **B** surrogate vs victim: how close the copy is (the only table the attacker can compute).
* **C** surrogate vs ground truth: how good the copy is.

The victim is reached only through its HTTP API; the surrogate runs in-process
(:func:`copymark.translate.load_translation_model`).

**Victim answers are evidence, keyed by who answered what.** Every answer is kept in a query
store (:class:`copymark.client.store.QueryStore`) under (the input's SHA-256, the victim's id
from ``/v1/info``), fetched through :func:`copymark.client.queries.query_all` (shared client,
pacing, retries, ``Idempotency-Key`` replays) and read back with ``answer_for``, which checks
the file against its hash. So an answer of one victim is never taken for another's, an answer
already paid for is never paid again (a second evaluation, a rerun after a crash or a refused
key, another surrogate on the same test set), and a damaged answer is an error, not a number.
Where the answers live (``answers``): by default ``STORE/evaluation/`` when the extraction's
store is known (``store``, or found from the surrogate's training record), so that every
evaluation against that victim shares them, otherwise ``RUN_DIR/answers/``. They are kept
apart from the extraction's own rows so that test images never become training pairs and
never count against the campaign's budget; answers the extraction store already holds for a
test input are reused from it (read only).

**A run folder holds one evaluation.** Its config.json records what decides the numbers (the
victim's id, task and scale; the surrogate's path and hash; each set's folders and a digest of
its files; the metric options), and :func:`copymark.runs.create_or_reuse_run` reopens an
existing folder only for the same config, naming the keys that differ otherwise. Everything
(options, folders, image sizes against the victim's scale and the server's limits, the
surrogate's output size, the store's victim) is checked before the run folder is created or
any query is paid.

Metrics:

* per image (paired): PSNR/SSIM on RGB, and for super-resolution also on the Y channel
  (BT.601) with a border crop equal to the scale (the SR protocol); all on 8-bit values,
  summarised by the one convention of :mod:`copymark.metrics.summary` (mean, std, n, n_inf,
  bootstrap 95% CI; infinite values and n = 1 handled one way).
* per set (distribution): SWD always (no pretrained net); FID and KID together when a feature
  net (Inception weights) is given, never one silently in place of the other. For style tasks
  the ground truth is usually a folder of target-style images *not* paired with the inputs;
  then A and C hold only set-level metrics, and a set too small for them (fewer than
  :data:`MIN_SET_IMAGES` images) is flagged in ``notes``.

Baselines, named for what they are: ``identity_vs_victim`` (style: the input itself) or
``bicubic_vs_victim`` (SR: :func:`copymark.images.upscale_bicubic`, MATLAB's bicubic, the one
the SR literature's bicubic figures use) to read table B against, with the per-image paired
gain of B over them; ``untrained_vs_victim`` (a freshly initialised net of the surrogate's
architecture, when it can be rebuilt); and ``identity_vs_gt`` / ``bicubic_vs_gt`` (the same
trivial map against the ground truth) to read tables A and C against, with the paired gains of
A and C over it.

Images are written to ``outputs/<set>/{input,victim,surrogate,gt}`` (and ``style/`` for an
unpaired target-style set) for the report.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, SecretStr, model_validator

from copymark import images as I
from copymark.client.http import BudgetExhausted
from copymark.client.queries import QueryReport
from copymark.config import StrictModel
from copymark.errors import ConfigError, CopymarkError, DataError

Task = Literal["style", "sr"]
Net = Callable[[torch.Tensor], torch.Tensor]

MIN_SET_IMAGES = 20  # below this a set-level metric (SWD, KID, FID) is anecdotal: the report says so
SSIM_MIN_SIDE = 11  # the SSIM window; smaller compared images cannot be scored
QUERY_CHUNK = 64  # inputs encoded and queried at a time (bounds the PNG bytes held in memory)
ANSWER_SOURCE = "evaluate"


# ---------------------------------------------------------------------------------------------
# the typed config


class EvaluateConfig(StrictModel):
    """Everything one evaluation needs (``copymark evaluate`` builds it from its options).

    ``api_key``, ``store``, ``answers``, ``concurrency``, ``timeout_s``, ``max_retries`` and
    ``progress`` say how answers are fetched, not what the numbers are: they are not part of
    the run folder's recorded config (the key is never written anywhere).
    """

    victim_url: str = Field(min_length=1, description="base URL of the victim API")
    api_key: SecretStr = Field(description="the evaluator's API key")
    surrogate: Path = Field(description="checkpoint folder, training run folder or TorchScript .pt")
    test: Path = Field(description="test inputs (SR: LR images, or a folder with HR/ and LR_x<scale>/)")
    gt: Path | None = Field(None, description="ground truth: paired by stem, or an unpaired target-style set")
    gt_pairing: Literal["auto", "paired", "set"] = Field(
        "auto",
        description="how --gt relates to the inputs: paired (one ground truth per input, same file stem), set "
        "(an unpaired target-style set), auto (super-resolution: paired; style: set)",
    )
    benchmark: Path | None = None
    benchmark_gt: Path | None = None
    run_dir: Path
    store: Path | None = Field(None, description="the extraction's query store (read only); default: found")
    answers: Path | None = Field(None, description="query store of the evaluation's victim answers")
    inception_weights: Path | None = Field(None, description="FID Inception weights: FID and KID")
    device: str = "cpu"
    n_boot: int = Field(2000, ge=100, le=1_000_000)
    seed: int = 0
    concurrency: int = Field(4, ge=1, le=256)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(8, ge=0, le=1000)
    progress: bool = True

    @model_validator(mode="after")
    def _benchmark_gt_needs_benchmark(self) -> EvaluateConfig:
        if self.benchmark_gt is not None and self.benchmark is None:
            raise ValueError("benchmark_gt (--benchmark-gt) needs benchmark (--benchmark)")
        return self


# ---------------------------------------------------------------------------------------------
# sets to evaluate


@dataclass
class EvalSet:
    """Inputs (by stem) and optional ground truth: paired by stem, or an unpaired reference set."""

    name: str
    inputs: dict[str, Path]
    gt: dict[str, Path] = field(default_factory=dict)
    input_dir: Path | None = None
    gt_dir: Path | None = None
    pairing: Literal["paired", "set"] = "set"

    @property
    def paired(self) -> bool:
        return bool(self.gt) and self.pairing == "paired"


def _folder_images(d: Path, what: str) -> dict[str, Path]:
    if not d.exists():
        raise DataError(f"{what} folder not found: {d}", hint="check the path")
    if not d.is_dir():
        raise DataError(f"{what} must be a folder of images: {d}")
    files = I.list_images(d)
    if not files:
        raise DataError(f"{what} folder has no images (png/jpg/webp/bmp/tif): {d}")
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise DataError(f"{what} folder {d} has two files with stem {f.stem!r}", hint="rename one")
        out[f.stem] = f
    return out


def make_set(name: str, inputs: Path, gt: Path | None, task: Task, scale: int, pairing: str = "auto") -> EvalSet:
    """Build an :class:`EvalSet`. For SR, ``inputs`` may be a benchmark folder with ``HR/`` and
    ``LR_x<scale>/`` (the Set5/Set14 layout); otherwise inputs and gt are plain folders.

    ``pairing`` says what the ground truth is, never guessed from file names (style examples
    named 000.png.. beside test photos named 000.png.. are not their ground truth): ``paired``
    (every input has a ground truth of the same stem), ``set`` (an unpaired target-style set;
    not for super-resolution) or ``auto`` (super-resolution: paired; style: set)."""
    if pairing not in ("auto", "paired", "set"):
        raise ConfigError(f"gt pairing {pairing!r}", hint="use auto, paired or set")
    if task == "sr" and pairing == "set":
        raise ConfigError(
            "--gt-pairing set: super-resolution ground truth is the HR image of each input",
            hint="use --gt-pairing paired (or auto) with HR images named like the LR inputs",
        )
    resolved: Literal["paired", "set"] = "paired" if (task == "sr" or pairing == "paired") else "set"
    inputs = Path(inputs)
    if task == "sr" and gt is None and (inputs / "HR").is_dir():
        lr = inputs / f"LR_x{scale}"
        if not lr.is_dir():
            raise DataError(f"{inputs} has HR/ but no LR_x{scale}/", hint=f"add LR_x{scale} or pass LR and --gt HR")
        gt, inputs = inputs / "HR", lr
    s = EvalSet(name, _folder_images(inputs, f"{name} input"), input_dir=inputs, pairing=resolved)
    if gt is not None:
        s.gt = _folder_images(Path(gt), f"{name} ground-truth")
        s.gt_dir = Path(gt)
        if resolved == "paired":
            missing = sorted(set(s.inputs) - set(s.gt))
            if missing:
                raise DataError(
                    f"{name}: {len(missing)} inputs have no ground truth with the same stem in {gt}: {missing[:5]}",
                    hint="paired ground truth is matched by file stem"
                    + ("" if task == "sr" else "; a folder of target-style examples is --gt-pairing set"),
                )
    return s


def check_sizes(s: EvalSet, task: Task, scale: int, max_pixels: int | None) -> None:
    """Every image's header against the victim and the metrics, before anything is paid:
    readable, within the server's pixel limit, large enough for SSIM after the border crop,
    and (paired ground truth) exactly the size of the victim's answer."""
    from copymark.data import image_size

    crop = scale if task == "sr" else 0
    for stem, p in s.inputs.items():
        h, w = image_size(p)
        if max_pixels is not None and h * w > max_pixels:
            raise DataError(
                f"{s.name} input {p} has {w}x{h} = {w * h} pixels; the victim's server accepts at most {max_pixels}",
                hint="crop or downscale it, or ask the owner for a larger limit",
            )
        oh, ow = h * scale, w * scale
        if min(oh, ow) - 2 * crop < SSIM_MIN_SIDE:
            raise DataError(
                f"{s.name} input {p} ({w}x{h}) is too small: the victim's {ow}x{oh} answer"
                + (f" minus the {crop} px border crop" if crop else "")
                + f" leaves less than the {SSIM_MIN_SIDE} px SSIM window",
                hint="use larger test images",
            )
        if s.paired:
            gh, gw = image_size(s.gt[stem])
            if (gh, gw) != (oh, ow):
                raise DataError(
                    f"{s.name}/{stem}: ground truth {s.gt[stem]} is {gw}x{gh}, the victim's answer will be {ow}x{oh}",
                    hint="ground truth must be the size of the victim's output (HR for SR)",
                )


def _file_sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def set_digest(s: EvalSet) -> str:
    """SHA-256 over the set's files (name and content of every input and ground-truth image)."""
    h = hashlib.sha256()
    for role, files in (("input", s.inputs), ("gt", s.gt)):
        for stem in sorted(files):
            h.update(f"{role}/{stem}:{_file_sha256(files[stem])}\n".encode())
    return h.hexdigest()


def surrogate_digest(path: Path) -> str:
    """SHA-256 of the surrogate's net files (config + weights of the exported net, or the .pt)."""
    from copymark.translate import resolve_net_folder

    p = Path(path)
    files = [p] if p.is_file() else [f for f in sorted(resolve_net_folder(p).iterdir()) if f.is_file()]
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{_file_sha256(f)}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# one comparison (a table or a baseline)


class _Table:
    """Per-image paired metrics plus set-level distribution metrics for one comparison."""

    def __init__(self, title: str, task: Task, scale: int, features: Any, seed: int, set_level: bool = True):
        from copymark.metrics.sliced_wasserstein import SWD

        self.title, self.task, self.scale, self.seed = title, task, scale, seed
        self.values: dict[str, list[float]] = {}
        self.swd = SWD(seed=seed) if set_level else None
        self.features = features if set_level else None
        self.n_pred = self.n_ref = 0

    def add_pair(self, pred: torch.Tensor, ref: torch.Tensor) -> None:
        from copymark.metrics.fidelity import psnr, ssim

        p, r = pred.unsqueeze(0), ref.unsqueeze(0)
        vals = {"psnr_rgb": float(psnr(p, r)[0]), "ssim_rgb": float(ssim(p, r)[0])}
        if self.task == "sr":
            vals["psnr_y"] = float(psnr(p, r, y_channel=True, crop_border=self.scale)[0])
            vals["ssim_y"] = float(ssim(p, r, y_channel=True, crop_border=self.scale)[0])
        for k, v in vals.items():
            self.values.setdefault(k, []).append(v)

    def add_sets(self, pred: torch.Tensor | None, ref: torch.Tensor | None) -> None:
        if self.swd is None:
            return
        p = [pred] if pred is not None else None
        r = [ref] if ref is not None else None
        self.swd.update(p, r)
        if self.features is not None:
            self.features.update(p, r)
        self.n_pred += pred is not None
        self.n_ref += ref is not None

    def result(self, n_boot: int) -> dict[str, Any]:
        from copymark.metrics.summary import summarize

        metrics: dict[str, Any] = {k: summarize(v, n_boot, self.seed).to_dict() for k, v in self.values.items()}
        out: dict[str, Any] = {"title": self.title, "metrics": metrics}
        if self.swd is None or self.n_pred == 0:
            return out
        counts = {"n": self.n_pred, "n_ref": self.n_ref}
        try:
            s = self.swd.compute()
            metrics["swd"] = {"value": s.avg, "levels": s.levels, **counts}
        except CopymarkError as err:  # too few / too small images for the pyramid
            metrics["swd"] = {"value": None, **counts, "why": err.message}
        if self.features is not None:
            metrics.update(_fid_kid(self.features, counts))
        if min(self.n_pred, self.n_ref) < MIN_SET_IMAGES:
            out["note"] = (
                f"set-level metrics compare {self.n_pred} with {self.n_ref} images; SWD, KID and FID need tens "
                f"(at least {MIN_SET_IMAGES} here) to mean more than an anecdote"
            )
        return out


def _fid_kid(features: Any, counts: dict[str, int]) -> dict[str, Any]:
    """FID and KID of a filled FeatureDistances; KID is reported even when FID cannot be."""
    import numpy as np

    from copymark.metrics.distribution import kid_from_features

    try:
        f = features.compute()
        return {
            "fid": {"value": f.fid, **counts},
            "kid": {"mean": f.kid.mean, "std": f.kid.std, **counts, "subset_size": f.kid.subset_size},
        }
    except (CopymarkError, ValueError, np.linalg.LinAlgError) as err:
        why = getattr(err, "message", str(err))
    out: dict[str, Any] = {"fid": {"value": None, **counts, "why": why}}
    try:
        k = kid_from_features(
            np.concatenate(features.features["pred"]),
            np.concatenate(features.features["ref"]),
            features.kid_subset_size,
            features.kid_subsets,
            features.seed,
        )
        out["kid"] = {"mean": k.mean, "std": k.std, **counts, "subset_size": k.subset_size}
    except (CopymarkError, ValueError) as err:
        out["kid"] = {"mean": None, **counts, "why": getattr(err, "message", str(err))}
    return out


def _paired_gain(a: list[float], b: list[float], n_boot: int, seed: int) -> dict[str, Any] | None:
    """``a - b`` image by image, summarised. Two infinite values of the same sign (both outputs
    identical to the reference) differ by 0; one infinite value makes that difference infinite."""
    from copymark.metrics.summary import summarize

    if not a or len(a) != len(b):
        return None
    diffs = [0.0 if (math.isinf(x) and x == y) else x - y for x, y in zip(a, b)]
    return summarize(diffs, n_boot, seed).to_dict()


# ---------------------------------------------------------------------------------------------
# victim answers: a keyed query store, filled through query_all


@dataclass
class Inputs:
    """One evaluation's query images: ``(set, stem) -> (path, input sha256)``."""

    items: dict[tuple[str, str], tuple[Path, str]]

    @staticmethod
    def png(path: Path) -> bytes:
        """The exact bytes sent for an input: its 8-bit RGB pixels as PNG."""
        return I.encode_png(I.quantize(I.load_image(path)))

    @classmethod
    def of(cls, sets: list[EvalSet]) -> Inputs:
        from copymark.client.store import sha256_hex

        return cls({(s.name, stem): (p, sha256_hex(cls.png(p))) for s in sets for stem, p in sorted(s.inputs.items())})


@dataclass
class AnswerReport:
    """Where each victim answer of an evaluation came from."""

    inputs: int = 0  # distinct inputs (by hash)
    in_store: int = 0  # already in the answers store: not paid
    from_extraction: int = 0  # copied from the extraction's store: not paid again
    paid: int = 0  # new answers paid for now
    replayed: int = 0  # recovered as free Idempotency-Key replays

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _stop_error(report: QueryReport, received: int, total: int, store: Path) -> CopymarkError:
    """The error for an evaluation that stopped fetching answers: the client's own error (its
    hint says what the cause asks for: budget, key, rate limit, failing or unreachable server),
    with what is kept and how to resume added."""
    reason = report.stop_reason or "stopped"
    msg = f"evaluation stopped with {received} of {total} victim answers: {reason}"
    kept = (
        f"the {received} answers received are kept in {store} and are not paid again; rerun the same command to resume"
    )
    err = report.stop_error
    if isinstance(err, BudgetExhausted):
        return CopymarkError(msg, hint=f"ask the owner for a larger evaluator budget; {kept}")
    hint = err.hint if err is not None and err.hint else None
    return CopymarkError(msg, hint=f"{hint}; {kept}" if hint else kept)


@dataclass(frozen=True)
class VictimAccess:
    """How to reach the victim: its URL, a key, and the client's concurrency and retry policy."""

    url: str
    api_key: str = field(repr=False)
    concurrency: int = 4
    max_retries: int = 8
    timeout_s: float = 60.0
    seed: int = 0

    @classmethod
    def of(cls, cfg: EvaluateConfig) -> VictimAccess:
        return cls(
            cfg.victim_url, cfg.api_key.get_secret_value(), cfg.concurrency, cfg.max_retries, cfg.timeout_s, cfg.seed
        )


def fetch_answers(
    access: VictimAccess,
    victim_id: str,
    inputs: Inputs,
    answers_dir: Path,
    extraction_store: Path | None = None,
    progress: bool = True,
    log: Callable[[str], Any] | None = None,
) -> AnswerReport:
    """Make sure ``answers_dir`` holds ``victim_id``'s answer to every input, paying only for the
    missing ones (see the module docstring); raises with a cause-specific hint when it stops."""
    return asyncio.run(_fetch_answers(access, victim_id, inputs, answers_dir, extraction_store, progress, log))


async def _fetch_answers(
    access: VictimAccess,
    victim_id: str,
    inputs: Inputs,
    answers_dir: Path,
    extraction_store: Path | None,
    progress: bool,
    log: Callable[[str], Any] | None,
) -> AnswerReport:
    from copymark.client.http import ApiClient, RetryPolicy
    from copymark.client.queries import query_all
    from copymark.client.store import QueryStore
    from copymark.progress import Progress

    by_sha: dict[str, tuple[Path, str]] = {}
    for (set_name, stem), (p, sha) in inputs.items.items():
        by_sha.setdefault(sha, (p, f"{ANSWER_SOURCE}:{set_name}/{stem}"))
    rep = AnswerReport(inputs=len(by_sha))
    with QueryStore(answers_dir) as store:
        done = store.answered(victim_id)
        todo = [sha for sha in by_sha if sha not in done]
        rep.in_store = len(by_sha) - len(todo)
        if todo and extraction_store is not None:  # answers the extraction already paid for (read only)
            with QueryStore(extraction_store) as ext:
                for sha in list(todo):
                    data = ext.answer_for(sha, victim_id)
                    if data is None:
                        continue
                    p, source = by_sha[sha]
                    store.add_input(Inputs.png(p), victim_id, source)
                    store.record_answer(sha, victim_id, data, f"copied from {extraction_store}")
                    rep.from_extraction += 1
                    todo.remove(sha)
        if not todo:
            return rep
        retry = RetryPolicy(max_retries=access.max_retries, timeout_s=access.timeout_s)
        with Progress("evaluate: victim answers", len(todo), enabled=progress, log=log) as bar:
            async with ApiClient(
                access.url, access.api_key, concurrency=access.concurrency, retry=retry, seed=access.seed
            ) as client:
                for start in range(0, len(todo), QUERY_CHUNK):
                    chunk = todo[start : start + QUERY_CHUNK]
                    items = [(Inputs.png(by_sha[sha][0]), by_sha[sha][1]) for sha in chunk]
                    report = await query_all(client, store, victim_id, items, on_progress=lambda _k: bar.advance())
                    rep.paid += report.answered
                    rep.replayed += report.replayed
                    if report.stop_reason:
                        got = len(store.answered(victim_id) & set(by_sha))
                        raise _stop_error(report, got, len(by_sha), answers_dir)
                    if report.failed:
                        raise DataError(
                            f"the victim refused {report.failed} test input(s): " + "; ".join(report.failures[:3]),
                            hint="fix or remove those images; the answers received are kept and not paid again",
                        )
        missing = set(by_sha) - store.answered(victim_id)
        if missing:  # pragma: no cover - query_all stops with a reason or records a failure
            raise CopymarkError(f"{len(missing)} test inputs have no answer after querying", hint="rerun to resume")
    return rep


# ---------------------------------------------------------------------------------------------
# scoring one set


def _untrained_like(surrogate_path: Path | None, seed: int) -> Net | None:
    """A freshly initialised net of the surrogate's architecture (None if it cannot be rebuilt)."""
    if surrogate_path is None:
        return None
    from copymark.nets.build import build_net, load_net
    from copymark.translate import resolve_net_folder, wrap_module

    try:
        folder = resolve_net_folder(Path(surrogate_path))
        _, cfg = load_net(folder, "cpu")
    except (CopymarkError, OSError):
        return None
    torch.manual_seed(seed)
    net = build_net(cfg).eval()
    return wrap_module(net, source="untrained " + str(cfg.kind))


def _trivial(x: torch.Tensor, scale: int) -> torch.Tensor:
    """The trivial map of a task: the input itself (style) or its bicubic upscale (SR, MATLAB's bicubic)."""
    return I.quantize(I.upscale_bicubic(x, scale)) if scale > 1 else x


def baseline_names(task: Task) -> tuple[str, str]:
    """Keys of the trivial baseline against the victim and against the ground truth."""
    return ("bicubic_vs_victim", "bicubic_vs_gt") if task == "sr" else ("identity_vs_victim", "identity_vs_gt")


@dataclass
class Scorer:
    """What scoring a set needs besides the set: the task, the nets, the answers and the options."""

    task: Task
    scale: int
    victim_id: str
    answers_dir: Path
    surrogate: Net
    untrained: Net | None = None
    feature_net: Any = None
    n_boot: int = 2000
    seed: int = 0
    progress: bool = True
    log: Callable[[str], Any] | None = None

    def features(self) -> Any:
        if self.feature_net is None:
            return None
        from copymark.metrics.distribution import FeatureDistances

        return FeatureDistances(self.feature_net, fid=True, kid=True, seed=self.seed)

    def score(self, s: EvalSet, inputs: Inputs, out_root: Path) -> dict[str, Any]:
        """Tables A/B/C and the baselines of one set; writes its images under ``out_root/<set>/``."""
        from copymark.client.store import QueryStore
        from copymark.progress import Progress

        d = out_root / s.name
        for sub in ("input", "victim", "surrogate"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        paired, has_gt = s.paired, bool(s.gt)
        key_v, key_g = baseline_names(self.task)
        trivial_name = "bicubic upscaling" if self.task == "sr" else "the identity map (the input)"
        tab_b = _Table("surrogate vs victim", self.task, self.scale, self.features(), self.seed)
        tab_a = _Table("victim vs ground truth", self.task, self.scale, self.features(), self.seed) if has_gt else None
        tab_c = (
            _Table("surrogate vs ground truth", self.task, self.scale, self.features(), self.seed) if has_gt else None
        )
        base_v = _Table(f"{trivial_name} vs victim", self.task, self.scale, None, self.seed, set_level=False)
        base_u = (
            _Table("untrained surrogate vs victim", self.task, self.scale, None, self.seed, set_level=False)
            if self.untrained is not None
            else None
        )
        base_g = (
            _Table(f"{trivial_name} vs ground truth", self.task, self.scale, self.features(), self.seed)
            if has_gt
            else None
        )
        if paired:
            (d / "gt").mkdir(parents=True, exist_ok=True)
        with (
            QueryStore(self.answers_dir) as store,
            Progress(f"evaluate: scoring {s.name}", len(s.inputs), enabled=self.progress, log=self.log) as bar,
        ):
            for stem in sorted(s.inputs):
                path, sha = inputs.items[(s.name, stem)]
                x = I.quantize(I.load_image(path))
                data = store.answer_for(sha, self.victim_id)
                if data is None:
                    raise DataError(f"{s.name}/{stem}: no stored answer of victim {self.victim_id}", hint="rerun")
                v = I.decode_image_bytes(data, f"answer to {s.name}/{stem}")
                y = I.quantize(self.surrogate(x.unsqueeze(0))[0])
                if y.shape != v.shape:
                    raise DataError(
                        f"{s.name}/{stem}: surrogate output {tuple(y.shape)} differs from the victim's {tuple(v.shape)}",
                        hint="is the surrogate trained for this task and scale?",
                    )
                I.save_image(x, d / "input" / f"{stem}.png")
                I.save_image(v, d / "victim" / f"{stem}.png")
                I.save_image(y, d / "surrogate" / f"{stem}.png")
                t = _trivial(x, self.scale)
                tab_b.add_pair(y, v)
                tab_b.add_sets(y, v)
                base_v.add_pair(t, v)
                if base_u is not None and self.untrained is not None:
                    base_u.add_pair(I.quantize(self.untrained(x.unsqueeze(0))[0]), v)
                if tab_a is not None and tab_c is not None and base_g is not None:
                    if paired:
                        g = I.load_image(s.gt[stem])
                        I.save_image(g, d / "gt" / f"{stem}.png")
                        for tab, pred in ((tab_a, v), (tab_c, y), (base_g, t)):
                            tab.add_pair(pred, g)
                            tab.add_sets(pred, g)
                    else:
                        for tab, pred in ((tab_a, v), (tab_c, y), (base_g, t)):
                            tab.add_sets(pred, None)
                bar.advance()
        if has_gt and not paired and tab_a is not None and tab_c is not None and base_g is not None:
            (d / "style").mkdir(parents=True, exist_ok=True)
            for stem, p in sorted(s.gt.items()):  # the unpaired reference (target-style) set
                g = I.load_image(p)
                I.save_image(g, d / "style" / f"{stem}.png")  # shown in the report as the style examples
                for tab in (tab_a, tab_c, base_g):
                    tab.add_sets(None, g)
        return self._result(s, tab_a, tab_b, tab_c, base_v, base_u, base_g, key_v, key_g)

    def _result(
        self,
        s: EvalSet,
        tab_a: _Table | None,
        tab_b: _Table,
        tab_c: _Table | None,
        base_v: _Table,
        base_u: _Table | None,
        base_g: _Table | None,
        key_v: str,
        key_g: str,
    ) -> dict[str, Any]:
        tables = {"B": tab_b.result(self.n_boot)}
        if tab_a is not None and tab_c is not None:
            tables["A"] = tab_a.result(self.n_boot)
            tables["C"] = tab_c.result(self.n_boot)
        baselines: dict[str, Any] = {}
        for key, base in ((key_v, base_v), ("untrained_vs_victim", base_u)):
            if base is None:
                continue
            entry = base.result(self.n_boot)["metrics"]
            for m, e in entry.items():  # B minus the baseline, image by image (same images, same answers)
                gain = _paired_gain(tab_b.values.get(m, []), base.values.get(m, []), self.n_boot, self.seed)
                if gain is not None:
                    e["paired_gain"] = gain
            baselines[key] = entry
        if base_g is not None and tab_a is not None and tab_c is not None:
            res = base_g.result(self.n_boot)
            entry = res["metrics"]
            for m, e in entry.items():
                for name, tab in (("A", tab_a), ("C", tab_c)):
                    gain = _paired_gain(tab.values.get(m, []), base_g.values.get(m, []), self.n_boot, self.seed)
                    if gain is not None:
                        e[f"paired_gain_{name}"] = gain
            baselines[key_g] = entry
        by_note: dict[str, list[str]] = {}
        for k, t in sorted(tables.items()):
            if t.get("note"):
                by_note.setdefault(t["note"], []).append(k)
        notes = [f"table{'s' if len(ks) > 1 else ''} {', '.join(ks)}: {note}" for note, ks in by_note.items()]
        out: dict[str, Any] = {
            "n": len(s.inputs),
            "paired_gt": s.paired,
            "n_gt": len(s.gt),
            "tables": {k: tables[k] for k in ("A", "B", "C") if k in tables},
            "baselines": baselines,
        }
        if notes:
            out["notes"] = notes
        return out


def evaluate_set(s: EvalSet, inputs: Inputs, scorer: Scorer, out_root: Path) -> dict[str, Any]:
    """Tables A/B/C (+ baselines) for one set whose answers are already in the scorer's store."""
    return scorer.score(s, inputs, out_root)


def headline(result: dict[str, Any], task: Task) -> dict[str, Any]:
    """The numbers a reader looks at first: B's PSNR against the trivial baseline's (and A/C)."""
    key = "psnr_y" if task == "sr" else "psnr_rgb"
    key_v, key_g = baseline_names(task)

    def mean(d: dict[str, Any] | None) -> Any:
        return ((d or {}).get(key) or {}).get("mean")

    tabs, bases = result["tables"], result["baselines"]
    b = mean(tabs["B"]["metrics"])
    t = mean(bases.get(key_v))
    gain = b - t if isinstance(b, float) and isinstance(t, float) and math.isfinite(b) else None
    return {
        "metric": key,
        "baseline": key_v,
        "surrogate_vs_victim": b,
        "baseline_vs_victim": t,
        "untrained_vs_victim": mean(bases.get("untrained_vs_victim")),
        "gain_db": gain,
        "victim_vs_gt": mean((tabs.get("A") or {}).get("metrics")),
        "surrogate_vs_gt": mean((tabs.get("C") or {}).get("metrics")),
        "baseline_vs_gt": mean(bases.get(key_g)),
    }


# ---------------------------------------------------------------------------------------------
# the whole evaluation, into a run folder


async def _info(access: VictimAccess) -> dict[str, Any]:
    from copymark.client.http import ApiClient, RetryPolicy

    retry = RetryPolicy(max_retries=min(access.max_retries, 3), timeout_s=access.timeout_s)
    async with ApiClient(access.url, access.api_key, concurrency=1, retry=retry) as client:
        return await client.info()


def victim_info(access: VictimAccess) -> dict[str, Any]:
    """``GET /v1/info`` of the victim (free: no query is charged); it must name the victim's id."""
    info = asyncio.run(_info(access))
    if not info.get("victim_id"):
        raise DataError(
            f"{access.url}/v1/info names no victim_id", hint="is this a copymark victim API (`copymark serve`)?"
        )
    return info


def _check_paths(cfg: EvaluateConfig) -> None:
    """Paths that must exist before anything else is done (no network, nothing written)."""
    from copymark.report.provenance import is_store

    if not cfg.surrogate.exists():
        raise DataError(f"--surrogate {cfg.surrogate}: no such file or folder", hint="pass the surrogate's run folder")
    for opt, p in (("--test", cfg.test), ("--gt", cfg.gt), ("--benchmark", cfg.benchmark)):
        if p is not None and not p.is_dir():
            raise DataError(f"{opt} {p}: not a folder of images", hint="check the path")
    if cfg.benchmark_gt is not None and not cfg.benchmark_gt.is_dir():
        raise DataError(f"--benchmark-gt {cfg.benchmark_gt}: not a folder of images", hint="check the path")
    if cfg.store is not None and not is_store(cfg.store):
        raise DataError(
            f"--store {cfg.store}: not a query store (no index.sqlite)",
            hint="pass the store `copymark extract --store` wrote (or leave --store out)",
        )
    if cfg.answers is not None and cfg.answers.exists() and not is_store(cfg.answers):
        if not cfg.answers.is_dir() or any(cfg.answers.iterdir()):
            raise DataError(f"--answers {cfg.answers}: exists and is not a query store", hint="pass a new folder")
    if cfg.answers is not None and cfg.store is not None and cfg.answers.resolve() == cfg.store.resolve():
        raise ConfigError(
            "--answers must differ from --store: test answers in the extraction's store would become training pairs",
            hint="leave --answers out (the default is STORE/evaluation)",
        )
    if cfg.inception_weights is not None and not cfg.inception_weights.is_file():
        raise DataError(f"--inception-weights {cfg.inception_weights}: no such file")


def _provenance(cfg: EvaluateConfig, victim_id: str) -> tuple[dict[str, Any], Path | None]:
    """The training record and the extraction store of the surrogate, checked against the victim."""
    from copymark.report.provenance import find_training_store, store_provenance, training_record

    record = training_record(cfg.surrogate)
    training = None
    if record is not None:
        training = {k: v for k, v in record.items() if k != "input_shas"}
    store = cfg.store
    if store is None:
        found = find_training_store(record)
        if found is not None:
            store, trained_victim = found
            if trained_victim != victim_id:
                raise DataError(
                    f"the surrogate {cfg.surrogate} was trained on answers of victim {trained_victim} "
                    f"(store {store}), but {cfg.victim_url} serves victim {victim_id}",
                    hint="evaluate against the victim the surrogate was extracted from",
                )
    extraction = None
    if store is not None:
        extraction = store_provenance(store, victim_id)  # DataError when the store holds no queries of this victim
        if record is not None and record.get("input_shas"):
            from copymark.client.store import QueryStore

            with QueryStore(store) as st:
                outside = len(record["input_shas"] - st.answered(victim_id))
            if outside:
                raise DataError(
                    f"{outside} of the surrogate's {record['pairs']} training pairs are not answers of victim "
                    f"{victim_id} in {store}",
                    hint="pass the --store the surrogate was trained from (or leave --store out)",
                )
    prov: dict[str, Any] = {"training": training, "extraction": extraction}
    if extraction is None:
        prov["extraction_missing"] = "no extraction store given or found: pass --store to name the victim's queries"
    return prov, store


def _recorded(
    cfg: EvaluateConfig, info: dict[str, Any], sets: list[EvalSet], sur_sha: str, task: Task, scale: int
) -> dict[str, Any]:
    """What decides the numbers: a run folder is reused only when all of it is the same."""
    return {
        "command": "evaluate",
        "victim": {"victim_id": str(info["victim_id"]), "task": task, "scale": scale},
        "surrogate": {"path": str(cfg.surrogate), "sha256": sur_sha},
        "sets": {
            s.name: {
                "inputs": str(s.input_dir),
                "gt": str(s.gt_dir) if s.gt_dir else None,
                "gt_pairing": s.pairing if s.gt else None,
                "n": len(s.inputs),
                "n_gt": len(s.gt),
                "sha256": set_digest(s),
            }
            for s in sets
        },
        "inception_weights": str(cfg.inception_weights) if cfg.inception_weights else None,
        "device": cfg.device,
        "n_boot": cfg.n_boot,
        "seed": cfg.seed,
    }


def run_evaluation(cfg: EvaluateConfig) -> dict[str, Any]:
    """Evaluate ``cfg.surrogate`` against the victim at ``cfg.victim_url`` on the test set (and the
    benchmark set when given); write ``metrics.json``, ``tables.md`` and the images into
    ``cfg.run_dir`` (created, or reused when it holds an evaluation of the same config)."""
    from copymark.report.tables import tables_markdown
    from copymark.runs import create_or_reuse_run
    from copymark.translate import load_translation_model

    _check_paths(cfg)
    info = victim_info(VictimAccess.of(cfg))
    victim_id = str(info["victim_id"])
    task: Task = "sr" if info.get("task") == "sr" else "style"
    scale = int(info.get("scale", 1) or 1)
    sets = [make_set("test", cfg.test, cfg.gt, task, scale, cfg.gt_pairing)]
    if cfg.benchmark is not None:
        sets.append(make_set("benchmark", cfg.benchmark, cfg.benchmark_gt, task, scale, cfg.gt_pairing))
    max_pixels = (info.get("limits") or {}).get("max_pixels")
    for s in sets:
        check_sizes(s, task, scale, int(max_pixels) if max_pixels else None)
    surrogate = load_translation_model(cfg.surrogate, cfg.device)
    if surrogate.scale != scale:
        raise DataError(
            f"surrogate {cfg.surrogate} upscales x{surrogate.scale} but the victim x{scale}",
            hint="evaluate a surrogate trained on this victim's answers",
        )
    for s in sets:  # the surrogate's output size, on one input, before anything is paid
        x = I.load_image(next(iter(s.inputs.values())))
        y = surrogate(x.unsqueeze(0))
        if tuple(y.shape[-2:]) != (x.shape[-2] * scale, x.shape[-1] * scale):
            raise DataError(
                f"surrogate {cfg.surrogate} turns a {x.shape[-1]}x{x.shape[-2]} input into "
                f"{y.shape[-1]}x{y.shape[-2]}, the victim's answer is {x.shape[-1] * scale}x{x.shape[-2] * scale}",
                hint="evaluate a surrogate trained on this victim's answers",
            )
    feature_net = None
    if cfg.inception_weights is not None:
        from copymark.metrics.inception import inception_v3_features

        feature_net = inception_v3_features(cfg.inception_weights)
    provenance, store = _provenance(cfg, victim_id)
    answers_dir = cfg.answers or (store / "evaluation" if store is not None else cfg.run_dir / "answers")
    inputs = Inputs.of(sets)
    recorded = _recorded(cfg, info, sets, surrogate_digest(cfg.surrogate), task, scale)

    run = create_or_reuse_run(cfg.run_dir, recorded, cfg.device, cfg.seed)
    run.log("victim %s (%s x%d) at %s; answers kept in %s", victim_id, task, scale, cfg.victim_url, answers_dir)
    answers = fetch_answers(VictimAccess.of(cfg), victim_id, inputs, answers_dir, store, cfg.progress, run.log)
    run.log("victim answers: %s", answers.to_dict())
    scorer = Scorer(
        task=task,
        scale=scale,
        victim_id=victim_id,
        answers_dir=answers_dir,
        surrogate=surrogate,
        untrained=_untrained_like(cfg.surrogate, cfg.seed),
        feature_net=feature_net,
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        progress=cfg.progress,
        log=run.log,
    )
    results: dict[str, Any] = {}
    for s in sets:
        run.log("scoring set %s: %d inputs, %d ground truth (%s)", s.name, len(s.inputs), len(s.gt), _kind(s))
        results[s.name] = evaluate_set(s, inputs, scorer, run.path / "outputs")
    provenance["evaluation"] = {"answers_store": str(answers_dir), "victim_id": victim_id, **answers.to_dict()}
    metrics = metrics_record(task, scale, info, cfg, surrogate.kind, results, provenance)
    run.update_metrics(metrics)
    metrics = run.metrics()
    (run.path / "tables.md").write_text(tables_markdown(metrics))
    run.log("wrote metrics.json and tables.md")
    return metrics


def _kind(s: EvalSet) -> str:
    return "paired" if s.paired else ("unpaired reference set" if s.gt else "no ground truth")


def metrics_record(
    task: Task,
    scale: int,
    info: dict[str, Any],
    cfg: EvaluateConfig,
    surrogate_kind: str,
    results: dict[str, Any],
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json of an evaluation (the format :mod:`copymark.report` reads)."""
    from copymark.metrics.summary import CONVENTION

    protocol: dict[str, Any] = {
        "summary": CONVENTION,
        "baselines": (
            "bicubic: copymark.images.upscale_bicubic (MATLAB imresize bicubic), 8-bit"
            if task == "sr"
            else "identity: the input itself"
        ),
        "set_level_min_images": MIN_SET_IMAGES,
        "fid_kid": "Inception-v3 features" if cfg.inception_weights else "not computed: no --inception-weights given",
    }
    if task == "sr":
        protocol["psnr_ssim_y"] = f"Y of YCbCr (BT.601), border crop {scale} px, 8-bit"
    return {
        "task": task,
        "scale": scale,
        "victim": {"url": cfg.victim_url, "victim_id": info["victim_id"], "info": info},
        "surrogate": {"path": str(cfg.surrogate), "kind": surrogate_kind},
        "provenance": provenance,
        "protocol": protocol,
        "sets": results,
        "headline": {name: headline(r, task) for name, r in results.items()},
    }
