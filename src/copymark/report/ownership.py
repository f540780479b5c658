"""The HTML report of an ownership claim: one protected model and its verifications, self-contained.

:func:`write_protect_report` reads a ``copymark protect`` run folder and the ``copymark verify``
runs of its kit (given, or found beside it: :func:`~copymark.report.ownership_runs.find_verify_runs`)
and writes ``RUN/report.html``:

* the protection: main-task accuracy before and after per split and the drop, trigger accuracy,
  the unprotected model's agreement with the verification labels (what an innocent model
  "verifies") against chance, trigger-vs-cover PSNR/SSIM and, for E2E-Extraction and
  Two-Phase, the revealed secrets' PSNR/SSIM, each as recorded (mean, std, n, min, CI);
* the kit: its commitment (recomputed from manifest.json and compared with metrics.json and
  commitment.txt), the signing key, the codec, and how the verifications trusted it;
* the visibility grid, one row per trigger: cover | trigger | |trigger - cover| x 5 | secret |
  recovered, each panel the exact pixels of the file it comes from (see
  :func:`~copymark.report.ownership_runs.visibility_rows`), enlarged on screen without smoothing;
* each verification: the verdict in words, its false-claim probability (the sequential test's
  bound and the fixed-n binomial tail), p0 and where it came from, trigger accuracy with its
  95% CI, queries spent, and the plot of the test's log-likelihood ratio against its thresholds.

:func:`write_verify_report` renders a verify run alone (the suspect, the verdict, the plot, the
recovered secrets' figures). Numbers are formatted, never recomputed: the report shows what the
runs recorded. Everything is inline (data: URIs, one ``<style>``, no script), as in
:mod:`copymark.report.html`.
"""

from __future__ import annotations

import io
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import copymark
from copymark.errors import CopymarkError
from copymark.report import plots
from copymark.report.html import Figure, _environment, png_data_uri, write_html
from copymark.report.ownership_runs import (
    DIFF_GAIN,
    PanelRow,
    ProtectRun,
    VerifyRun,
    load_protect_run,
    load_verify_run,
    verify_runs_for,
    visibility_rows,
)
from copymark.report.tables import format_metric

DEFAULT_MAX_IMAGES = 6

METHOD_NAMES = {
    "acsac19": "ACSAC19 (Li et al. 2019)",
    "e2e-extraction": "E2E-Extraction",
    "two-phase": "Two-Phase",
}
METHOD_DESCRIPTIONS = {
    "acsac19": "the hiding net, a steganalyzer discriminator and the host trained end to end; "
    "the secret cannot be extracted from a trigger",
    "e2e-extraction": "the hiding net, a secret extractor and the host trained end to end; "
    "the secret can be recovered from a trigger",
    "two-phase": "the host trained, then a codec; the triggers made with it; the host fine-tuned on its "
    "data plus the triggers",
}
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


# ---------------------------------------------------------------------------------------------
# number formats (one place, so that the tests read the same figures)


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(float(x)) else None


def pct(x: Any) -> str:
    """A rate in [0, 1] as a percentage with two decimals; ``—`` when missing."""
    v = _num(x)
    return "—" if v is None else f"{100 * v:.2f}%"


def prob(x: Any) -> str:
    """A probability with three significant digits (``1.5e-05``, ``0.000833``, ``1``)."""
    v = _num(x)
    return "—" if v is None else f"{v:.3g}"


def interval(ci: Any, fmt=pct) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(c) is not None for c in ci):
        return f"[{fmt(ci[0])}, {fmt(ci[1])}]"
    return "not recorded"


# ---------------------------------------------------------------------------------------------
# view models


@dataclass(frozen=True)
class AccuracyRow:
    split: str
    before: str
    after: str
    drop: str


@dataclass(frozen=True)
class SummaryRow:
    key: str  # where it comes from in metrics.json, e.g. "trigger_psnr"
    label: str
    value: str  # mean ± std
    n: str
    minimum: str
    ci95: str
    note: str


@dataclass(frozen=True)
class Panel:
    kind: str  # cover, trigger, diff, secret, recovered
    uri: str | None
    alt: str
    note: str = ""


@dataclass(frozen=True)
class PanelRowView:
    trigger_id: str
    caption: str
    panels: list[Panel]
    notes: list[str]


def _summary_row(key: str, metric: str, entry: Any, label: str) -> SummaryRow:
    r = format_metric(metric, entry if isinstance(entry, dict) else {})
    decimals = 2 if metric == "psnr" else 4
    m = _num(entry.get("min")) if isinstance(entry, dict) else None
    ci = r.ci95 if r.ci95 != "—" else "not recorded"
    return SummaryRow(key, f"{label} {r.label}", r.value, r.n, "—" if m is None else f"{m:.{decimals}f}", ci, r.note)


def _accuracy_rows(m: dict[str, Any]) -> list[AccuracyRow]:
    before, after = m["accuracy_before"], m["accuracy_after"]
    splits = sorted(set(before) | set(after), key=lambda s: (SPLIT_ORDER.get(s, 9), s))
    rows = []
    for s in splits:
        b, a = _num(before.get(s)), _num(after.get(s))
        drop = "—" if b is None or a is None else f"{100 * (b - a):.2f} points"
        rows.append(AccuracyRow(s, pct(b), pct(a), drop))
    return rows


def _png_bytes(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a), mode="RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _panel_view(row: PanelRow) -> PanelRowView:
    def panel(kind: str, a: np.ndarray | None, alt: str, note: str = "") -> Panel:
        return Panel(kind, None if a is None else png_data_uri(_png_bytes(a)), f"{row.trigger_id} {alt}", note)

    return PanelRowView(
        trigger_id=row.trigger_id,
        caption=f"{row.trigger_id}: cover {row.cover_id}, class {row.cover_class}; verification label {row.label_class}",
        panels=[
            panel("cover", row.cover, "cover", "" if row.cover is not None else "not available"),
            panel("trigger", row.trigger, "trigger"),
            panel("diff", row.diff, f"difference x{DIFF_GAIN}", "" if row.diff is not None else "no cover"),
            panel("secret", row.secret, "secret"),
            panel(
                "recovered", row.recovered, "recovered secret", "" if row.recovered is not None else row.recovered_note
            ),
        ],
        notes=row.notes,
    )


def _suspect(s: Any, protected_fp: str | None = None) -> dict[str, Any]:
    s = s if isinstance(s, dict) else {}
    kind = s.get("kind")
    if kind == "checkpoint":
        text, detail = f"checkpoint {s.get('source')}", s.get("fingerprint")
    elif kind == "api":
        classes = f", {s['num_classes']} classes" if s.get("num_classes") else ""
        text, detail = f"served model {s.get('victim_id')}{classes}", s.get("url")
    else:
        text, detail = "not recorded", None
    own = bool(protected_fp) and s.get("fingerprint") == protected_fp
    return {"text": text, "detail": detail, "is_protected": own}


def _verification_view(v: VerifyRun, protected_fp: str | None = None) -> dict[str, Any]:
    r = v.record
    t, fc, acc = r["test"], r["false_claim_probability"], r["trigger_accuracy"]
    verdict = r["verdict"]
    png = plots.sprt_trace_png(t, verdict, title=f"{v.path.name}: evidence after each trigger")
    n = acc.get("n")
    recovered = r.get("recovered_secrets")
    rec_rows: list[SummaryRow] = []
    rec_note = None
    if isinstance(recovered, dict) and "error" in recovered:
        rec_note = f"the secrets could not be revealed: {recovered['error']}"
    elif isinstance(recovered, dict):
        rec_rows = [
            _summary_row("recovered_secrets.psnr", "psnr", recovered.get("psnr"), "revealed secret vs original"),
            _summary_row("recovered_secrets.ssim", "ssim", recovered.get("ssim"), "revealed secret vs original"),
        ]
        codec = recovered.get("codec")
        rec_note = f"revealed by the kit's {codec} codec from the kit's triggers" if codec else None
    else:
        rec_note = "no secrets to recover: an ACSAC19 kit has no extractor"
    return {
        "id": v.path.name,
        "path": "/".join(v.path.resolve().parts[-2:]),
        "date": v.env.get("time"),
        "verdict": verdict,
        "verdict_class": verdict.replace(" ", "-"),
        "statement": r.get("statement") or verdict,
        "suspect": _suspect(r.get("suspect"), protected_fp),
        "bound": prob(fc.get("bound")),
        "tail": prob(fc.get("fixed_n_binomial_tail")),
        "p0": prob(fc.get("p0")),
        "p0_source": fc.get("p0_source") or "not recorded",
        "accuracy": pct(acc.get("value")),
        "accuracy_ci": interval(acc.get("ci95")),
        "successes": f"{r.get('successes')} of {n}" if isinstance(n, int) else "—",
        "s": r.get("successes"),
        "n": n,
        "queries": r.get("queries"),
        "triggers_used": r.get("triggers_used"),
        "kit_triggers": (r.get("kit") or {}).get("triggers"),
        "test_name": t.get("name") or "sequential test",
        "p1": prob(t.get("p1")),
        "alpha": prob(t.get("alpha")),
        "beta": prob(t.get("beta")),
        "claim_at": f"{float(t['claim_at_log_lr']):.2f}",
        "not_owned_at": f"{float(t['not_owned_at_log_lr']):.2f}",
        "log_lr": f"{float(t['log_lr']):.2f}" if _num(t.get("log_lr")) is not None else "—",
        "trust": (r.get("kit") or {}).get("trust") or "not recorded",
        "method": (r.get("kit") or {}).get("method"),
        "commitment": r["kit"]["commitment"],
        "stopped": r.get("stopped"),
        "recovered": rec_rows,
        "recovered_note": rec_note,
        "plot": Figure(
            png_data_uri(png),
            "The sequential test's log-likelihood ratio after each trigger (a step up: answered with its secret "
            'label; down: not), against the thresholds of the claim (log 1/α) and of "not owned" (log β). '
            f"Verdict: {verdict}.",
            f"log-likelihood-ratio trace of {v.path.name}",
        ),
    }


def _kit_view(run: ProtectRun, verifications: list[VerifyRun]) -> dict[str, Any]:
    man = run.kit.manifest
    model = man.get("model") or {}
    codec = man.get("codec") or {}
    trusts = Counter(str((v.record.get("kit") or {}).get("trust") or "not recorded") for v in verifications)
    return {
        "commitment": run.commitment,
        "public_key": man.get("public_key") or "not recorded",
        "created": man.get("created"),
        "codec": codec.get("kind") or "not recorded",
        "triggers": len(run.kit.triggers),
        "fingerprint": model.get("fingerprint") or run.metrics.get("fingerprint"),
        "classes": ", ".join(run.kit.class_names) or str(model.get("num_classes") or "—"),
        "input_size": model.get("input_size"),
        "trusts": [f"{k} ({n} run{'s' if n != 1 else ''})" for k, n in sorted(trusts.items())],
        "has_commitment_txt": (run.path / "commitment.txt").is_file(),
    }


def _protect_view(run: ProtectRun, max_images: int) -> dict[str, Any]:
    m = run.metrics
    rows, notes = visibility_rows(run, max_images)
    fidelity = [
        _summary_row("trigger_psnr", "psnr", m["trigger_psnr"], "trigger vs cover"),
        _summary_row("trigger_ssim", "ssim", m["trigger_ssim"], "trigger vs cover"),
    ]
    secret = []
    if isinstance(m.get("secret_psnr"), dict):
        secret.append(_summary_row("secret_psnr", "psnr", m["secret_psnr"], "revealed secret vs original"))
    if isinstance(m.get("secret_ssim"), dict):
        secret.append(_summary_row("secret_ssim", "ssim", m["secret_ssim"], "revealed secret vs original"))
    n_trig = m.get("triggers") or len(run.kit.triggers)
    correct = m.get("trigger_correct")
    return {
        "method": run.method,
        "method_name": METHOD_NAMES.get(run.method, run.method),
        "method_desc": METHOD_DESCRIPTIONS.get(run.method, ""),
        "accuracy": _accuracy_rows(m),
        "trigger_accuracy": pct(m.get("trigger_accuracy")),
        "trigger_correct": f"{correct} of {n_trig}" if isinstance(correct, int) else f"{n_trig} triggers",
        "unprotected_agreement": pct(m.get("unprotected_agreement")),
        "chance": pct(m.get("chance")),
        "cover_accuracy": pct(m.get("cover_accuracy")),
        "cover_label_agreement": pct(m.get("cover_label_agreement")),
        "label_rule": m.get("label_rule"),
        "fidelity": fidelity,
        "secret": secret,
        "panels": [_panel_view(r) for r in rows],
        "panel_notes": notes,
        "panels_total": len(run.kit.triggers),
        "gain": DIFF_GAIN,
        "seconds": _num((m.get("seconds") or {}).get("total")) if isinstance(m.get("seconds"), dict) else None,
    }


def _header(path: Path, env: dict[str, Any], title: str) -> dict[str, Any]:
    date = env.get("time") or time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(path.stat().st_mtime))
    return {
        "title": title,
        "run_dir": "/".join(path.resolve().parts[-2:]),
        "date": date,
        "run_version": env.get("copymark"),
        "git_commit": (env.get("git_commit") or "")[:12] or None,
        "version": copymark.__version__,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _render(**ctx: Any) -> str:
    return _environment().get_template("ownership.html.j2").render(**ctx)


def render_protect_report(
    run_dir: str | Path, verify: list[Path] | None = None, max_images: int = DEFAULT_MAX_IMAGES
) -> str:
    """The report of a protect run (and its verifications) as an HTML string."""
    if max_images < 0:
        raise CopymarkError(f"--max-images must be >= 0, got {max_images}")
    run = load_protect_run(run_dir)
    verifications = verify_runs_for(run, verify)
    fp = run.metrics.get("fingerprint")
    h = _header(run.path, run.env, f"{METHOD_NAMES.get(run.method, run.method)} protection")
    return _render(
        h=h,
        protect=_protect_view(run, max_images),
        kit=_kit_view(run, verifications),
        verifications=[_verification_view(v, fp) for v in verifications],
        searched=not verify,
        standalone=False,
    )


def render_verify_report(run_dir: str | Path) -> str:
    """The report of one verify run alone as an HTML string."""
    v = load_verify_run(run_dir)
    h = _header(v.path, v.env, "Ownership verification")
    view = _verification_view(v)
    return _render(h=h, protect=None, kit=None, verifications=[view], searched=False, standalone=True)


def write_protect_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    verify: list[Path] | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
) -> Path:
    """Write the self-contained HTML report of a protect run; returns its path (default RUN/report.html).

    ``verify``: the verify runs to include (each must have verified this run's kit); None or
    empty: those found among the run's sibling folders and subfolders. ``max_images``: rows of
    the visibility grid (the first triggers). Raises :class:`CopymarkError` naming what is
    missing, foreign or changed.
    """
    return write_html(render_protect_report(run_dir, verify, max_images), run_dir, out)


def write_verify_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the self-contained HTML report of one verify run; returns its path (default RUN/report.html)."""
    return write_html(render_verify_report(run_dir), run_dir, out)
