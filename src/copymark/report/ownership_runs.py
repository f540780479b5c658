"""Reading the run folders of an ownership report: protect runs, verify runs, the kit, the panels.

The report sits below :mod:`copymark.watermark` (layers point down), so it reads what
``copymark protect`` and ``copymark verify`` wrote as plain files, never through their code:

* a **protect run** (``config.json`` with ``"task": "protect"``): ``metrics.json`` (accuracy
  before/after per split, trigger accuracy, trigger PSNR/SSIM, recovered-secret PSNR/SSIM,
  the unprotected model's agreement, the commitment), ``kit/`` (``manifest.json`` and the
  trigger and secret PNGs it lists), ``visibility.png`` (cover | trigger | difference x 5 |
  secret | revealed, one row per trigger for the first triggers) and the owner's data folder
  named in ``config.json`` (the covers, by the kit's cover ids);
* a **verify run** (``config.json`` with ``"command": "verify"``): the ``verification``
  record of its ``metrics.json``.

**What is checked.** The kit's commitment is the SHA-256 of its ``manifest.json`` bytes; the
report recomputes it and refuses a protect run whose metrics.json, commitment.txt and kit
disagree, and every kit file it shows must have the SHA-256 the manifest lists (a changed or
missing file is refused by name). The Ed25519 signature is not checked here (that needs the
kit's code, above this layer): ``copymark kit check`` and ``copymark verify`` check it, and a
verify run records how it trusted the kit.

**The visibility panels** (:func:`visibility_rows`) come from the files they show: the trigger
and the secret from the kit, the cover from the owner's data file (brought to the trigger's
size with the run's resize policy), the difference computed here in integers from those two
(``min(255, 5 x |trigger - cover|)``), and the revealed secret, which needs the codec
(:mod:`copymark.stego`, beside this package), cut from ``visibility.png`` where protect saved
it, and only from a row whose trigger and secret equal the kit's pixel for pixel.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from copymark.errors import CopymarkError

PROTECT_MAKER = "`copymark protect`"
VERIFY_MAKER = "`copymark verify`"
KIT_FORMAT = "copymark-ownership-kit/1"
METHODS = ("acsac19", "e2e-extraction", "two-phase")
VERDICTS = ("owned", "not owned", "undecided")
DIFF_GAIN = 5  # protect's visibility.png amplifies |trigger - cover| by 5
EXTRACTION_TASKS = ("style", "sr")

RunKind = Literal["extraction", "protect", "verify"]


def _err(message: str, hint: str | None = None) -> CopymarkError:
    return CopymarkError(message, hint=hint)


def _read_json(path: Path, what: str, maker: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _err(f"{path}: missing {what}", hint=f"run {maker} first; it writes the run folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _err(f"{path}: {what} is not valid JSON ({err})", hint=f"rerun {maker} to write it again") from None


def _json_object(path: Path, what: str, maker: str) -> dict[str, Any]:
    obj = _read_json(path, what, maker)
    if not isinstance(obj, dict):
        raise _err(f"{path}: expected a JSON object, got {type(obj).__name__}", hint=f"rerun {maker}")
    return obj


def _optional_object(path: Path) -> dict[str, Any]:
    """A JSON object file, or ``{}`` when it is missing or unreadable (for facts that are nice to have)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _check_folder(d: Path) -> None:
    if not d.exists():
        raise _err(
            f"run folder not found: {d}",
            hint="pass a folder written by `copymark evaluate`, `copymark protect` or `copymark verify`",
        )
    if not d.is_dir():
        raise _err(f"expected a run folder, got a file: {d}")


def run_kind(run_dir: str | Path) -> RunKind:
    """Which report a run folder gets: ``"protect"``, ``"verify"`` or ``"extraction"``.

    A folder of another kind of run (a classifier training, a protect run's inner phase) is
    refused with what it is; anything else is left to the extraction report, whose loader
    names what is missing.
    """
    d = Path(run_dir)
    _check_folder(d)
    config = _read_json(d / "config.json", "config.json", "the command") if (d / "config.json").is_file() else {}
    config = config if isinstance(config, dict) else {}
    if config.get("task") == "protect":
        return "protect"
    if config.get("command") == "verify":
        return "verify"
    metrics = _optional_object(d / "metrics.json")
    if isinstance(metrics.get("verification"), dict):
        return "verify"
    task = config.get("task")
    if isinstance(task, str) and task not in EXTRACTION_TASKS and metrics.get("task") not in EXTRACTION_TASKS:
        raise _err(
            f"{d} is a {task!r} run; `copymark report` reads extraction runs (`copymark evaluate`), "
            "protect runs and verify runs",
            hint="pass the run folder of `copymark protect` (or of `copymark verify`) itself"
            if task.startswith("protect")
            else "pass an extraction, protect or verify run folder",
        )
    return "extraction"


# ---------------------------------------------------------------------------------------------
# the kit, read as files


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class KitFiles:
    """An ownership kit read as files: the manifest, its commitment, and hash-checked file reads."""

    root: Path
    manifest: dict[str, Any]
    commitment: str  # "sha256:" + SHA-256 of the manifest's bytes

    @property
    def triggers(self) -> list[dict[str, Any]]:
        return self.manifest["triggers"]

    @property
    def class_names(self) -> list[str]:
        names = (self.manifest.get("model") or {}).get("class_names")
        return [str(n) for n in names] if isinstance(names, list) else []

    def read(self, rel: str) -> bytes:
        """The bytes of a kit file whose SHA-256 is the manifest's (a CopymarkError names it otherwise)."""
        p = PurePosixPath(rel)
        files = self.manifest.get("files") or {}
        if p.is_absolute() or ".." in p.parts or rel not in files:
            raise _err(f"{self.root}: the manifest does not list {rel!r}", hint="check the kit: `copymark kit check`")
        path = self.root / rel
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise _err(f"{self.root}: {rel} is missing", hint="restore the kit from its backup") from None
        if sha256_hex(data) != files[rel]:
            raise _err(
                f"{self.root}: {rel} does not match its SHA-256 in the manifest (changed)",
                hint="the kit was tampered with; check it with `copymark kit check`",
            )
        return data


def read_kit(kit_dir: str | Path) -> KitFiles:
    """Read ``KIT/manifest.json`` (its format and trigger records checked) and its commitment."""
    root = Path(kit_dir)
    mf = root / "manifest.json"
    if not mf.is_file():
        raise _err(f"{root}: no manifest.json (the ownership kit is missing or incomplete)",
                   hint=f"finish the protection: {PROTECT_MAKER} --resume --run-dir RUN")  # fmt: skip
    body = mf.read_bytes()
    try:
        manifest = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _err(f"{mf}: not valid JSON ({err})", hint="the kit was tampered with") from None
    if not isinstance(manifest, dict) or manifest.get("format") != KIT_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise _err(f"{mf}: format {got!r}, expected {KIT_FORMAT!r}", hint="a kit written by `copymark protect`")
    triggers = manifest.get("triggers")
    keys = ("trigger_id", "cover_id", "label", "trigger", "secret")
    if (
        not isinstance(triggers, list)
        or not triggers
        or not all(isinstance(t, dict) and all(k in t for k in keys) for t in triggers)
    ):
        raise _err(f"{mf}: 'triggers' must list records with {', '.join(keys)}", hint="the kit was tampered with")
    return KitFiles(root, manifest, "sha256:" + sha256_hex(body))


# ---------------------------------------------------------------------------------------------
# protect and verify runs


@dataclass(frozen=True)
class ProtectRun:
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    env: dict[str, Any]
    kit: KitFiles

    @property
    def method(self) -> str:
        return str(self.metrics["method"])

    @property
    def commitment(self) -> str:
        return str(self.metrics["commitment"])


def load_protect_run(run_dir: str | Path) -> ProtectRun:
    """Read and check a finished protect run (see the module docstring)."""
    d = Path(run_dir)
    _check_folder(d)
    config = _json_object(d / "config.json", "config.json", PROTECT_MAKER)
    if config.get("task") != "protect":
        raise _err(f"{d}: not a protect run (config.json records task {config.get('task')!r})",
                   hint=f"pass the run folder of {PROTECT_MAKER}")  # fmt: skip
    resume = f"finish it: {PROTECT_MAKER} --resume --run-dir {d}"
    if not (d / "metrics.json").is_file():
        raise _err(f"{d}: the protection has not finished (no metrics.json)", hint=resume)
    metrics = _json_object(d / "metrics.json", "metrics.json", PROTECT_MAKER)
    if not isinstance(metrics.get("commitment"), str):
        raise _err(f"{d}/metrics.json: no 'commitment'; the protection has not finished", hint=resume)
    if metrics.get("method") not in METHODS:
        raise _err(f"{d}/metrics.json: 'method' must be one of {list(METHODS)}, got {metrics.get('method')!r}",
                   hint=f"rerun {PROTECT_MAKER}")  # fmt: skip
    for key in ("accuracy_before", "accuracy_after", "trigger_psnr", "trigger_ssim"):
        if not isinstance(metrics.get(key), dict):
            raise _err(f"{d}/metrics.json: no {key!r} record", hint=f"rerun {PROTECT_MAKER}")
    kit = read_kit(d / "kit")
    if kit.commitment != metrics["commitment"]:
        raise _err(
            f"{d}/kit/manifest.json hashes to {kit.commitment}, not to the commitment {metrics['commitment']} "
            "in metrics.json",
            hint="the kit was changed after the protection; check it with `copymark kit check`",
        )
    ctxt = d / "commitment.txt"
    if ctxt.is_file() and ctxt.read_text(encoding="utf-8").strip() != kit.commitment:
        raise _err(f"{ctxt} does not hold the kit's commitment {kit.commitment}",
                   hint="the kit or commitment.txt was changed after the protection")  # fmt: skip
    return ProtectRun(d, config, metrics, _optional_object(d / "env.json"), kit)


@dataclass(frozen=True)
class VerifyRun:
    path: Path
    config: dict[str, Any]
    record: dict[str, Any]  # metrics.json's "verification"
    env: dict[str, Any]

    @property
    def commitment(self) -> str:
        return str(self.record["kit"]["commitment"])


def load_verify_run(run_dir: str | Path) -> VerifyRun:
    """Read and check a verify run's record."""
    d = Path(run_dir)
    _check_folder(d)
    if not (d / "metrics.json").is_file():
        raise _err(f"{d}: no metrics.json (the verification has not recorded a verdict)",
                   hint=f"rerun the same {VERIFY_MAKER} command to resume it")  # fmt: skip
    metrics = _json_object(d / "metrics.json", "metrics.json", VERIFY_MAKER)
    rec = metrics.get("verification")
    if not isinstance(rec, dict):
        raise _err(f"{d}/metrics.json: no 'verification' record; not a verify run",
                   hint=f"pass a run folder of {VERIFY_MAKER}")  # fmt: skip
    where = f"{d}/metrics.json: verification"
    if rec.get("verdict") not in VERDICTS:
        raise _err(f"{where}.verdict must be one of {list(VERDICTS)}, got {rec.get('verdict')!r}",
                   hint=f"rerun {VERIFY_MAKER}")  # fmt: skip
    for key in ("test", "kit", "false_claim_probability", "trigger_accuracy"):
        if not isinstance(rec.get(key), dict):
            raise _err(f"{where} has no {key!r} record", hint=f"rerun {VERIFY_MAKER}")
    trace = rec["test"].get("trace")
    if not isinstance(trace, list) or not all(isinstance(v, (int, float)) for v in trace):
        raise _err(f"{where}.test.trace must be a list of numbers", hint=f"rerun {VERIFY_MAKER}")
    for key in ("claim_at_log_lr", "not_owned_at_log_lr"):
        if isinstance(rec["test"].get(key), bool) or not isinstance(rec["test"].get(key), (int, float)):
            raise _err(f"{where}.test.{key} must be a number (the test's threshold)", hint=f"rerun {VERIFY_MAKER}")
    if not isinstance(rec["kit"].get("commitment"), str):
        raise _err(f"{where}.kit has no 'commitment'", hint=f"rerun {VERIFY_MAKER}")
    return VerifyRun(d, _optional_object(d / "config.json"), rec, _optional_object(d / "env.json"))


def _verify_commitment(d: Path) -> str | None:
    """The kit commitment a verify run recorded in its config.json, or None when ``d`` is not one."""
    cfg = _optional_object(d / "config.json")
    c = cfg.get("kit_commitment")
    return c if cfg.get("command") == "verify" and isinstance(c, str) else None


def find_verify_runs(protect: ProtectRun) -> list[Path]:
    """Verify runs of this run's kit among its sibling folders and its own subfolders.

    A folder counts when its config.json records ``command: verify`` with this kit's commitment
    and its metrics.json holds the verification record; others are skipped. Sorted by the
    time the run started (env.json), then by name.
    """
    d = protect.path.resolve()
    seen: dict[Path, None] = {}
    for parent in (d.parent, d):
        try:
            children = sorted(p for p in parent.iterdir() if p.is_dir())
        except OSError:
            continue
        for p in children:
            if p != d and _verify_commitment(p) == protect.commitment:
                if isinstance(_optional_object(p / "metrics.json").get("verification"), dict):
                    seen.setdefault(p, None)
    return sorted(seen, key=lambda p: (str(_optional_object(p / "env.json").get("time") or ""), p.name))


def verify_runs_for(protect: ProtectRun, given: list[Path] | None) -> list[VerifyRun]:
    """The given verify runs (each must be of this run's kit), or those found beside it."""
    if not given:
        return [load_verify_run(p) for p in find_verify_runs(protect)]
    runs = []
    for p in given:
        v = load_verify_run(p)
        if v.commitment != protect.commitment:
            raise _err(
                f"--verify {p}: verified the kit {v.commitment[:23]}..., not this run's kit "
                f"{protect.commitment[:23]}...",
                hint="pass the verify runs of this protect run's kit (or omit --verify to find them)",
            )
        runs.append(v)
    return runs


# ---------------------------------------------------------------------------------------------
# the visibility panels


def decode_png(data: bytes, what: str) -> np.ndarray:
    """``H x W x 3`` uint8 RGB pixels of PNG bytes."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError) as err:
        raise _err(f"{what}: not a readable image ({err})") from None


def difference(trigger: np.ndarray, cover: np.ndarray, gain: int = DIFF_GAIN) -> np.ndarray:
    """``min(255, gain x |trigger - cover|)`` per 8-bit channel: the amplified change, exactly."""
    d = np.abs(trigger.astype(np.int32) - cover.astype(np.int32)) * gain
    return np.minimum(d, 255).astype(np.uint8)


@dataclass
class PanelRow:
    """One trigger's panels (``H x W x 3`` uint8, None when unavailable) and where they came from."""

    trigger_id: str
    cover_id: str
    cover_class: str
    label_class: str
    cover: np.ndarray | None
    trigger: np.ndarray
    diff: np.ndarray | None
    secret: np.ndarray
    recovered: np.ndarray | None
    cover_source: str
    recovered_note: str
    notes: list[str] = field(default_factory=list)


def _class_name(names: list[str], i: Any) -> str:
    if isinstance(i, int) and 0 <= i < len(names):
        return f"{names[i]} ({i})"
    return "—" if i is None else str(i)


def _visibility_grid(run: ProtectRun, size: int, n: int) -> tuple[np.ndarray | None, int, str | None]:
    """visibility.png as ``(pixels, rows, why-not)``; None with a reason when it has another layout."""
    p = run.path / "visibility.png"
    if not p.is_file():
        return None, 0, "the run has no visibility.png"
    img = decode_png(p.read_bytes(), str(p))
    cols = 4 if run.method == "acsac19" else 5
    h, w = img.shape[:2]
    if w != cols * size or h % size or not 0 < h // size <= n:
        return None, 0, f"visibility.png is {w}x{h} px, not {cols} columns of {size} px rows"
    return img, h // size, None


def _panel(grid: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    return grid[row * size : (row + 1) * size, col * size : (col + 1) * size]


def _data_file(data_dir: Path, key: str) -> Path | None:
    from copymark.images import IMAGE_SUFFIXES

    rel = PurePosixPath(key)
    if rel.is_absolute() or ".." in rel.parts:
        return None
    folder = data_dir / rel.parent
    if not folder.is_dir():
        return None
    for p in sorted(folder.iterdir()):
        if p.stem == rel.name and p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            return p
    return None


def _load_cover(run: ProtectRun, key: str, size: int) -> tuple[np.ndarray | None, str]:
    """The cover from the owner's data file, at the trigger's size (run's resize policy)."""
    import torch

    from copymark.data.transforms import apply_size_policy
    from copymark.images import load_image, to_uint8

    data = run.config.get("data") if isinstance(run.config.get("data"), dict) else {}
    data_dir = data.get("dir")
    if not isinstance(data_dir, str):
        return None, "config.json names no data folder"
    p = _data_file(Path(data_dir), key)
    if p is None:
        return None, f"data file {key} not found in {data_dir}"
    x = load_image(p)
    if tuple(x.shape[-2:]) != (size, size):
        policy = data.get("resize_policy", "error")
        if policy not in ("resize", "center_crop"):
            return (
                None,
                f"{p} is {x.shape[-1]}x{x.shape[-2]} px and the run's resize policy {policy!r} cannot be redone",
            )
        x = apply_size_policy([x], size, policy, torch.Generator(), [p])[0]
    return to_uint8(x).permute(1, 2, 0).numpy(), str(p)


def visibility_rows(run: ProtectRun, max_rows: int) -> tuple[list[PanelRow], list[str]]:
    """The panels of the first ``max_rows`` triggers, and notes about the sources as a whole."""
    kit = run.kit
    names = kit.class_names
    records = kit.triggers[: max(0, max_rows)]
    notes: list[str] = []
    if not records:
        return [], notes
    first = decode_png(kit.read(records[0]["trigger"]), f"kit {records[0]['trigger']}")
    size = first.shape[0]
    grid, grid_rows, why = _visibility_grid(run, size, len(kit.triggers))
    if why is not None:
        notes.append(why + ("" if run.method == "acsac19" else "; the revealed secrets cannot be shown"))
    rows = []
    for i, t in enumerate(records):
        trigger = first if i == 0 else decode_png(kit.read(t["trigger"]), f"kit {t['trigger']}")
        secret = decode_png(kit.read(t["secret"]), f"kit {t['secret']}")
        row = PanelRow(
            trigger_id=str(t["trigger_id"]), cover_id=str(t["cover_id"]),
            cover_class=_class_name(names, t.get("cover_label")), label_class=_class_name(names, t.get("label")),
            cover=None, trigger=trigger, diff=None, secret=secret, recovered=None, cover_source="", recovered_note="",
        )  # fmt: skip
        in_grid = grid is not None and i < grid_rows
        matches = (
            in_grid
            and np.array_equal(_panel(grid, i, 1, size), trigger)  # type: ignore[arg-type]
            and np.array_equal(_panel(grid, i, 3, size), secret)  # type: ignore[arg-type]
        )
        if in_grid and not matches:
            row.notes.append("visibility.png's row differs from the kit's trigger or secret: not used")
        cover, source = _load_cover(run, row.cover_id, size)
        used = _panel(grid, i, 0, size) if matches else None  # type: ignore[arg-type]
        if cover is not None and used is not None and not np.array_equal(cover, used):
            row.notes.append(f"the data file {source} differs from the cover protect used: shown from visibility.png")
            cover, source = used, "visibility.png (the cover protect used)"
        elif cover is None and used is not None:
            row.notes.append(f"{source}: the cover is shown from visibility.png")
            cover, source = used, "visibility.png"
        elif cover is None:
            row.notes.append(source)
        row.cover, row.cover_source = cover, source
        if cover is not None:
            row.diff = difference(trigger, cover)
        if run.method == "acsac19":
            row.recovered_note = "ACSAC19 hides the secret with no extractor: nothing to recover"
        elif matches:
            row.recovered = _panel(grid, i, 4, size).copy()  # type: ignore[arg-type]
            row.recovered_note = "visibility.png"
        else:
            row.recovered_note = (
                f"not saved by protect (visibility.png holds the first {grid_rows})"
                if grid is not None and i >= grid_rows
                else "not available"
            )
        rows.append(row)
    return rows, notes
