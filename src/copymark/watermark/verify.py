"""Ownership verification: does a suspect model answer the kit's triggers with their secret labels?

The owner loads the ownership kit (every hash and the signature checked, against the trusted
public key or published commitment when given; :mod:`copymark.watermark.kit`), sends the
triggers to the suspect in a seeded random order, and after each answer updates a sequential
test (:class:`copymark.stats.sequential.SequentialBinomial`):

* H0 (innocent): the suspect agrees with a verification label with probability ``p <= p0``.
  ``p0`` is measured, never assumed to be 1/K: ``copymark verify calibrate`` runs independently
  trained, unprotected models of the same task on the kit's triggers and takes the one-sided
  Clopper-Pearson upper bound (99.9% by default) of their agreement rate
  (:func:`calibrate`, :func:`copymark.stats.sequential.null_rate_upper`). The labels were drawn
  to avoid the cover's class and an unprotected model's answer, so that rate is small.
* H1 (owned): ``p >= p1`` (``--p1``, default 0.5: a protected model that still answers half of
  its triggers, e.g. under the study's noise attack, counts as owned).

The test stops as soon as the likelihood ratio crosses ``1/alpha`` ("owned") or ``beta`` ("not
owned"), or when the triggers, ``--max-queries`` or the key's budget run out ("undecided"). By
Ville's inequality the probability that an innocent model is ever claimed is at most ``alpha``
whatever the stopping time, so the verdict's **false-claim probability** is the bound
``min(1, 1/LR)`` at the end (<= alpha when "owned"); the record also gives the exact binomial
tail ``P(X >= s | n, p0)`` as a fixed-n reference. The trigger accuracy comes with its
Clopper-Pearson 95% CI.

The suspect is a classifier checkpoint (``--model``, in process) or a served classifier
(``--model-url --api-key``, through :class:`copymark.client.http.ApiClient`); answers through the
API are kept in a query store in the run folder keyed by the suspect's id and each trigger's
hash, so an interrupted verification resumes without re-sending a trigger. For E2E-Extraction
and Two-Phase kits, the kit's codec reveals the secrets hidden in the triggers, and their
PSNR/SSIM against the originals are reported (the study: > 26 dB).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from copymark.config import StrictModel
from copymark.errors import ConfigError, CopymarkError, DataError
from copymark.files import atomic_write_json, read_json
from copymark.stats.binomial import binom_test
from copymark.stats.sequential import SequentialBinomial, binomial_tail, null_rate_upper
from copymark.watermark.kit import KitError, OwnershipKit, check_kit_fits, load_kit, weights_fingerprint

CALIBRATION_FORMAT = "copymark-null-calibration/1"
TEST_NAME = "Wald's SPRT, error rates exact at any stopping time by Ville's inequality"


# ---------------------------------------------------------------------------------------------
# trusted kit


def open_kit(
    kit: str | Path, public_key: str | Path | None = None, commitment: str | None = None
) -> tuple[OwnershipKit, str]:
    """The checked kit and how it is trusted: "trusted public key", "published commitment" or
    "self-signed only" (consistent with the key inside it, which anyone could have made)."""
    k = load_kit(kit, trusted_public_key=public_key, commitment=commitment)
    trust = "trusted public key" if public_key else ("published commitment" if commitment else "self-signed only")
    return k, trust


# ---------------------------------------------------------------------------------------------
# suspects


class LocalSuspect:
    """A classifier checkpoint run in process (the owner holds a copy, e.g. a leaked file)."""

    def __init__(self, path: str | Path, kit: OwnershipKit, device: str = "cpu"):
        from copymark.train.classifier import load_classifier

        self.path = Path(path)
        self.net, self.config, _ = load_classifier(path, device)
        check_kit_fits(kit, num_classes=int(self.config.num_classes), input_size=int(self.config.input_size))
        self.device = device
        self.images = kit.trigger_images()
        self.queries = 0

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "checkpoint",
            "source": str(self.path),
            "fingerprint": weights_fingerprint(self.net.state_dict()),
        }

    def answers(self, indices: list[int]) -> list[int | None]:
        from copymark.train.classifier import predict

        self.queries += len(indices)
        with torch.no_grad():
            return [int(v) for v in predict(self.net, self.images[indices], device=self.device)]


# ---------------------------------------------------------------------------------------------
# null calibration


class NullModelRecord(StrictModel):
    source: str
    fingerprint: str
    agreements: int = Field(ge=0)
    triggers: int = Field(ge=1)


class Calibration(StrictModel):
    """Agreement of independently trained, unprotected models with a kit's verification labels."""

    format: Literal["copymark-null-calibration/1"] = CALIBRATION_FORMAT
    kit_commitment: str
    models: list[NullModelRecord]
    agreements: int
    trials: int
    confidence: float
    p0_upper: float

    def describe(self) -> str:
        return (
            f"{len(self.models)} null models, {self.agreements} of {self.trials} trigger answers equal to the "
            f"labels; {self.confidence:.1%} upper bound {self.p0_upper:.3g}"
        )


def calibrate(
    kit_dir: str | Path,
    null_models: list[str | Path],
    out: str | Path,
    *,
    public_key: str | Path | None = None,
    commitment: str | None = None,
    confidence: float = 0.999,
    device: str = "cpu",
) -> Calibration:
    """Run each null model on every trigger of the kit; write the calibration JSON to ``out``.

    A null model is refused if it is the protected model itself (same weights fingerprint as
    the kit's), or if it does not fit the kit (class count, input size).
    """
    kit, _ = open_kit(kit_dir, public_key, commitment)
    if not null_models:
        raise ConfigError(
            "calibration needs at least one null model", hint="pass --null-model CKPT (10 or more make a tight p0)"
        )
    labels = torch.tensor(kit.labels)
    records = []
    for path in null_models:
        suspect = LocalSuspect(path, kit, device)
        fp = suspect.describe()["fingerprint"]
        if fp == kit.manifest.model.fingerprint:
            raise DataError(
                f"{path} is the protected model itself (same weights)",
                hint="null models are trained independently, without the watermark",
            )
        pred = torch.tensor(suspect.answers(list(range(len(labels)))))
        records.append(
            NullModelRecord(
                source=str(path), fingerprint=fp, agreements=int((pred == labels).sum()), triggers=len(labels)
            )
        )
    agreements = sum(r.agreements for r in records)
    trials = sum(r.triggers for r in records)
    cal = Calibration(
        kit_commitment=kit.commitment, models=records, agreements=agreements, trials=trials, confidence=confidence,
        p0_upper=null_rate_upper(agreements, trials, confidence),
    )  # fmt: skip
    atomic_write_json(Path(out), cal.model_dump())
    return cal


def load_calibration(path: str | Path, kit: OwnershipKit) -> Calibration:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"calibration file not found: {p}", hint="make one with `copymark verify calibrate`")
    from copymark.config import parse_config

    cal = parse_config(Calibration, read_json(p, ConfigError), where=str(p))
    if cal.kit_commitment != kit.commitment:
        raise KitError(
            f"{p} was calibrated for kit {cal.kit_commitment[:20]}..., not this kit ({kit.commitment[:20]}...)",
            hint="calibrate the null models on this kit's triggers",
        )
    return cal


# ---------------------------------------------------------------------------------------------
# secrets


def recovered_secrets(kit: OwnershipKit, device: str = "cpu") -> dict[str, Any] | None:
    """PSNR/SSIM of the secrets the kit's codec reveals from its triggers (None for ACSAC19 kits,
    whose steganalyzer cannot extract)."""
    from copymark.metrics.fidelity import psnr, ssim
    from copymark.metrics.summary import summarize
    from copymark.stego.codecs import LSBCodec, LSBCodecConfig, load_codec

    rec = kit.manifest.codec
    if kit.manifest.method == "acsac19" or rec is None:
        return None
    if kit.codec_dir is not None:
        codec: Any = load_codec(kit.codec_dir, map_location=device)
    elif rec.kind == "lsb":  # a classical codec has no weights: its config is in the manifest
        codec = LSBCodec(LSBCodecConfig.model_validate(rec.config))
    else:
        return None
    triggers, secrets = kit.trigger_images(), kit.secret_images()
    with torch.no_grad():
        revealed = torch.cat([codec.reveal(triggers[i : i + 64].to(device)).cpu() for i in range(0, len(triggers), 64)])
    return {
        "psnr": summarize(psnr(revealed, secrets).tolist()).to_dict(),
        "ssim": summarize(ssim(revealed, secrets).tolist()).to_dict(),
        "n": len(triggers),
        "codec": kit.manifest.codec.kind if kit.manifest.codec else None,
    }


# ---------------------------------------------------------------------------------------------
# the verification


class VerifyConfig(StrictModel):
    """What ``copymark verify`` does (the API key is apart: never recorded)."""

    kit: Path
    model: Path | None = None
    model_url: str | None = None
    public_key: Path | None = None
    commitment: str | None = None
    calibration: Path | None = None
    p0: float | None = Field(
        None, gt=0, lt=1, description="the null agreement rate, when not calibrated (recorded as such)"
    )
    p1: float = Field(0.5, gt=0, lt=1)
    alpha: float = Field(1e-6, gt=0, lt=1, description="bound of the false-claim probability of an 'owned' verdict")
    beta: float = Field(
        1e-3, gt=0, lt=1, description="bound of the probability that a protected model is declared 'not owned'"
    )
    max_queries: int | None = Field(None, ge=1)
    order_seed: int = 0
    batch: int = Field(8, ge=1, description="triggers sent per round (a decision can waste at most batch - 1)")
    device: str = "cpu"
    concurrency: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _one_suspect(self) -> VerifyConfig:
        if (self.model is None) == (self.model_url is None):
            raise ValueError("give exactly one suspect: --model CKPT or --model-url URL")
        if (self.calibration is None) == (self.p0 is None):
            raise ValueError("give exactly one null rate: --calibration FILE (from `verify calibrate`) or --p0")
        return self


def verdict_statement(decision: str, s: int, n: int, bound: float, p0: float) -> str:
    if decision == "owned":
        return (
            f"owned: the suspect answered {s} of {n} triggers with their secret labels; an independently trained "
            f"model (agreement rate <= {p0:.3g}) produces evidence this strong with probability at most {bound:.2g}"
        )
    if decision == "not owned":
        return (
            f"not owned: the suspect answered {s} of {n} triggers with their secret labels, as an innocent model "
            "would; the kit gives no evidence that it is the protected model"
        )
    return f"undecided after {n} triggers ({s} answered with their labels): the evidence is not yet decisive"


def run_verification(
    kit: OwnershipKit,
    answers: Callable[[list[int]], list[int | None]],
    test: SequentialBinomial,
    order: list[int],
    batch: int,
    max_queries: int | None = None,
    on_round: Callable[[SequentialBinomial], None] | None = None,
) -> list[tuple[int, int | None]]:
    """Send triggers in ``order`` round by round until the test decides (or ``max_queries`` /
    the triggers run out); returns the ``(trigger index, answer)`` pairs the test used."""
    labels = kit.labels
    used: list[tuple[int, int | None]] = []
    limit = len(order) if max_queries is None else min(max_queries, len(order))
    pos = 0
    while test.decision is None and pos < limit:
        chunk = order[pos : min(pos + batch, limit)]
        got = answers(chunk)
        pos += len(chunk)
        for i, a in zip(chunk, got):
            used.append((i, a))
            if a is None:  # refused (e.g. an evasion attack rejected it): counts as no agreement
                test.update(False)
            else:
                test.update(a == labels[i])
            if test.decision is not None:
                break
        if on_round is not None:
            on_round(test)
    return used


def verify(
    cfg: VerifyConfig, api_key: str | None = None, run_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Verify ownership (see the module docstring); writes the record into ``run_dir``'s metrics.json."""

    kit, trust = open_kit(cfg.kit, cfg.public_key, cfg.commitment)
    if cfg.calibration is not None:
        cal = load_calibration(cfg.calibration, kit)
        p0, p0_source = cal.p0_upper, "calibration: " + cal.describe()
    else:
        assert cfg.p0 is not None
        p0, p0_source, cal = cfg.p0, "given with --p0 (not calibrated on null models)", None
    if not p0 < cfg.p1:
        raise ConfigError(
            f"the null agreement rate p0 = {p0:.3g} is not below p1 = {cfg.p1:.3g}: no test can tell the models apart",
            hint="calibrate with more null models (a tighter p0), or raise --p1 if the protected model answers its triggers more reliably",
        )
    test = SequentialBinomial(p0=p0, p1=cfg.p1, alpha=cfg.alpha, beta=cfg.beta)
    if cfg.model is not None:
        suspect: Any = LocalSuspect(cfg.model, kit, cfg.device)
    else:
        from copymark.watermark.remote import ApiSuspect

        if not api_key:
            raise ConfigError("--model-url needs --api-key (or $COPYMARK_API_KEY)")
        suspect = ApiSuspect.connect(cfg.model_url or "", api_key, kit, concurrency=cfg.concurrency)
    try:
        return _verify_with(cfg, kit, trust, test, suspect, p0, p0_source, cal, run_dir, progress)
    finally:
        if hasattr(suspect, "close"):
            suspect.close()


def _verify_with(
    cfg: VerifyConfig, kit: OwnershipKit, trust: str, test: SequentialBinomial, suspect: Any, p0: float,
    p0_source: str, cal: Calibration | None, run_dir: str | Path | None, progress: bool,
) -> dict[str, Any]:  # fmt: skip
    from copymark.progress import Progress
    from copymark.runs import create_or_reuse_run, new_run_dir

    record_config = {
        # the suspect by its identity (a served model by its id: its URL may change between attempts)
        "command": "verify", "kit_commitment": kit.commitment, "p0": p0, "p1": cfg.p1,
        "suspect": {k: v for k, v in suspect.describe().items() if k != "url"},
        "alpha": cfg.alpha, "beta": cfg.beta, "order_seed": cfg.order_seed, "max_queries": cfg.max_queries,
    }  # fmt: skip
    run = create_or_reuse_run(run_dir or new_run_dir("runs", "verify"), record_config, cfg.device, cfg.order_seed)
    if hasattr(suspect, "attach_store"):
        suspect.attach_store(run.path / "answers")
    order = [int(i) for i in np.random.default_rng(cfg.order_seed).permutation(len(kit.labels))]
    t0 = time.perf_counter()
    stop: CopymarkError | None = None
    with Progress("verify: triggers", cfg.max_queries or len(order), enabled=progress, log=run.log) as bar:
        try:
            run_verification(
                kit, suspect.answers, test, order, cfg.batch, cfg.max_queries,
                on_round=lambda t: bar.advance(t.n - bar.done, note=f"log LR {t.log_lr:.1f}"),
            )  # fmt: skip
        except CopymarkError as err:  # a spent budget or an unreachable API: record what was decided so far
            stop = err
    s, n = test.successes, test.n
    decision = test.decision or "undecided"
    # the two-sided Clopper-Pearson 95% interval of the trigger accuracy (a one-sided test's interval is not)
    acc = binom_test(s, n, min(max(p0, 1e-12), 1 - 1e-12), alternative="two-sided") if n else None
    record: dict[str, Any] = {
        "verdict": decision,
        "statement": verdict_statement(decision, s, n, test.false_claim_bound, p0),
        "queries": getattr(suspect, "queries", n),
        "triggers_used": n,
        "successes": s,
        "trigger_accuracy": {"value": s / n if n else None, "ci95": list(acc.ci) if acc else None, "n": n},
        "false_claim_probability": {
            "bound": test.false_claim_bound,
            "fixed_n_binomial_tail": binomial_tail(s, n, p0) if n else None,
            "p0": p0,
            "p0_source": p0_source,
        },
        "missed_claim_bound": test.missed_claim_bound,
        "test": {
            "name": TEST_NAME,
            "p0": p0,
            "p1": cfg.p1,
            "alpha": cfg.alpha,
            "beta": cfg.beta,
            "log_lr": test.log_lr,
            "claim_at_log_lr": test.upper,
            "not_owned_at_log_lr": test.lower,
            "trace": test.trace,
        },  # fmt: skip
        "order_seed": cfg.order_seed,
        "kit": {
            "path": str(kit.root),
            "commitment": kit.commitment,
            "trust": trust,
            "method": kit.manifest.method,
            "triggers": len(kit.labels),
            "num_classes": kit.num_classes,
        },  # fmt: skip
        "suspect": suspect.describe(),
        "seconds": time.perf_counter() - t0,
    }
    if stop is not None:
        record["stopped"] = stop.message
    try:
        record["recovered_secrets"] = recovered_secrets(kit, cfg.device)
    except Exception as err:  # noqa: BLE001 - the verdict stands without the secrets; say why they are missing
        record["recovered_secrets"] = {"error": f"{type(err).__name__}: {err}"}
    if cal is not None:
        record["calibration"] = cal.model_dump()
    run.update_metrics({"verification": record})
    run.log("%s", record["statement"])
    if stop is not None and test.decision is None:
        raise CopymarkError(
            f"verification stopped after {n} triggers ({decision}): {stop.message}",
            hint=f"the answers so far are kept in {run.path}; rerun the same command to resume"
            + (f" ({stop.hint})" if getattr(stop, "hint", None) else ""),
        )
    return record
