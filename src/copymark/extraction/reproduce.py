"""Reproduce the extraction study's Tables 2-4: ``copymark reproduce extraction-tables --config FILE``.

A reproduction config (:class:`ReproduceConfig`, JSON; schema in ``configs/reproduce/README.md``)
lists *settings*. Each names a victim (any ``copymark serve`` spec, or a third-party ``.pth``
turned into a copymark checkpoint by an explicit converter), the attacker's photos, the
victim's test set, a benchmark set, the target-style set (style tasks), the query budget,
size and strategy, and the surrogate's training procedure and options. For each setting the
command does the whole attack with the existing pieces, nothing re-implemented:

1. **data**: the sets are materialised in the setting's folder: a slice of a sorted folder
   (``{"dir": ..., "start": 0, "stop": 180}``) as links, and for style settings with
   ``image_size`` the test, benchmark and target-style images resized to that square (the size
   the victim works at; bicubic, MATLAB-style, as the training procedures resize), the
   attacker's photos with ``queries.resize`` resized (shorter side) before the campaign crops;
2. **victim**: served on 127.0.0.1 behind the real API (:class:`~copymark.serving.server.BackgroundServer`,
   API keys with budgets), only while some phase still needs it;
3. **campaign**: :func:`~copymark.extraction.campaign.run_campaign` into the setting's store;
4. **surrogate**: the first ``budget`` answers (:func:`~copymark.client.pairs.training_folder`)
   trained by :func:`~copymark.train.api.train` (pix2pix for style, SRResNet / SRGAN for SR);
5. **evaluation**: :func:`~copymark.extraction.evaluate.run_evaluation` (tables A/B/C on the test
   and the benchmark set, baselines, provenance), then for style settings the set-level
   confidence intervals of this module (:func:`set_level_intervals`);
6. **tables**: Tables 2-4 in the study's layout with the study's published figures beside
   copymark's and the conditions that differ (:mod:`copymark.report.paper_tables`), as
   ``tables.md`` and ``tables.html`` in the run folder, rewritten after every setting.

Everything is checked before a folder is created or a query is paid: unknown keys, a missing
folder, an empty or too short slice, a style setting without a target-style set (unless it asks
for table B only), a surrogate procedure of the wrong task, sizes the surrogate cannot train
at. **Resume**: the run folder records the config's common part (a different one is refused,
naming the keys) and each setting's folder its own config when the setting starts: a config may
gain settings, and change ones not started yet, but a started setting run with another config is
refused, naming the keys (rename it to run it anew); each phase is resumable on its own (the campaign skips answered inputs, training
continues from its last checkpoint, evaluation answers live in a query store) and the
orchestration skips what is finished, so a rerun after a crash pays no query twice and
retrains nothing finished; a finished setting is not even served again. Settings may run in
separate processes (``--only``) into one run folder: each holds a lock on its own folder, and the
run's ``metrics.json`` and tables are collected from every finished setting's ``result.json``.

Set-level confidence intervals (:func:`set_level_intervals`): SWD (always) and KID (with
Inception weights) of A (victim outputs vs the target-style set), C (surrogate outputs vs it),
the identity map (the test inputs vs it) and B (surrogate vs victim outputs), with percentile
bootstrap 95% CIs over images: each resample draws the test inputs (shared by the victim, the
surrogate and the identity, so the differences C - A are paired) and the target-style images
with replacement. SWD descriptors are drawn once per image with common random numbers (the
same positions for an input's victim and surrogate outputs) and every resample uses the same
projection directions for every table; KID's kernel sums leave out pairs of copies of one image
(a bootstrap duplicate would otherwise count as a perfect match). The goals of issue 13 are
read from these and from the evaluation's paired gains (:func:`goals`).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BeforeValidator, Field, field_validator, model_validator

from copymark.config import StrictModel, load_config
from copymark.errors import ConfigError, CopymarkError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DATA_PLACEHOLDER = "{data}"
SETTINGS_DIR = "settings"
STATE_FILE = "state.json"
RESULT_FILE = "result.json"
SETTING_FILE = "setting.json"
STYLE_PROCEDURES = ("pix2pix",)
SR_PROCEDURES = ("srresnet", "srgan")
Echo = Callable[[str], Any]


# ---------------------------------------------------------------------------------------------
# the config


def _image_set(v: Any) -> Any:
    return {"dir": v} if isinstance(v, str) else v


class ImageSet(StrictModel):
    """A folder of images, or the slice ``[start:stop]`` of its images sorted by file name."""

    dir: str = Field(min_length=1, description="folder; {data} stands for the data root")
    start: int | None = Field(None, ge=0)
    stop: int | None = Field(None, ge=1)
    label: str | None = Field(None, description="how the tables name this set (default: the folder and slice)")

    @model_validator(mode="after")
    def _ordered(self) -> ImageSet:
        if self.start is not None and self.stop is not None and self.stop <= self.start:
            raise ValueError(f"stop ({self.stop}) must be greater than start ({self.start})")
        return self

    def describe(self) -> str:
        if self.label:
            return self.label
        name = self.dir.replace(DATA_PLACEHOLDER + "/", "")
        if self.start is None and self.stop is None:
            return name
        return f"{name}[{self.start or 0}:{'' if self.stop is None else self.stop}]"


Images = Annotated[ImageSet, BeforeValidator(_image_set)]


class VictimConfig(StrictModel):
    """The victim: a ``copymark serve`` spec, or a third-party weight file and its converter."""

    spec: str | None = Field(
        None, description="classical:..., a checkpoint or run folder, a TorchScript .pt, python:..., onnx:..."
    )
    weights: str | None = Field(None, description="weights file of a python: spec, or the file a converter reads")
    convert: Literal["srgan_x4", "cyclegan_h2z"] | None = Field(
        None, description="turn `weights` (a third-party .pth) into a copymark checkpoint and serve that"
    )
    label: str = Field(min_length=1, description="the victim's name in the tables")
    device: str = "cpu"

    @model_validator(mode="after")
    def _one_source(self) -> VictimConfig:
        if (self.spec is None) == (self.convert is None):
            raise ValueError("give exactly one of spec (a copymark serve spec) or convert (with weights)")
        if self.convert is not None and self.weights is None:
            raise ValueError(f"convert {self.convert!r} needs weights (the .pth file to convert)")
        return self


class QueryConfig(StrictModel):
    """The attacker's campaign (see :class:`~copymark.extraction.campaign.CampaignConfig`)."""

    budget: int = Field(ge=1, description="answers to buy")
    size: int = Field(ge=8, description="query side in pixels (SR: the low-resolution side)")
    strategy: Literal["random", "diverse"] = "random"
    seed: int = 0
    pool_factor: float = Field(4.0, gt=0)
    resize: int | None = Field(None, ge=8, description="attacker photos: shorter side resized to this first")
    concurrency: int = Field(4, ge=1, le=64)


class SurrogateConfig(StrictModel):
    """The attacker's surrogate: a paired procedure of ``copymark train`` and its options."""

    procedure: Literal["pix2pix", "srresnet", "srgan"]
    net_config: dict[str, Any] = Field(default_factory=dict, description="procedure overrides (--net-config)")
    train_size: int | None = Field(None, ge=8, description="training crop (default: the whole answer)")
    iters: int = Field(ge=1)
    batch_size: int = Field(8, ge=1)
    seed: int = 0
    save_every: int | None = Field(None, ge=1, description="checkpoint period (resume point); default iters / 5")


class SettingConfig(StrictModel):
    """One victim and everything its Tables A/B/C need."""

    name: str = Field(min_length=1, max_length=64, description="folder name of the setting (letters, digits, -_.)")
    task: Literal["style", "sr"]
    study_table: Literal["2", "3", "4"] | None = Field(None, description="the study's table this setting reproduces")
    victim: VictimConfig
    attacker: Images
    test: Images = Field(description="the victim's test set (SR: a folder with HR/ and LR_x<scale>/)")
    benchmark: Images = Field(description="a benchmark set (same layout as test)")
    target_style: Images | None = Field(None, description="style: the target-style images (tables A and C)")
    image_size: int | None = Field(None, ge=16, description="style: test, benchmark and target sets resized to this")
    scale: int = Field(4, ge=2, le=8, description="SR: the upscaling factor")
    tables: list[Literal["A", "B", "C"]] = Field(default_factory=lambda: ["A", "B", "C"])
    queries: QueryConfig
    surrogate: SurrogateConfig
    notes: list[str] = Field(default_factory=list, description="conditions that differ from the study, in words")

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError(f"{v!r}: use letters, digits, '-', '_' and '.' (it names a folder)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SettingConfig:
        if "B" not in self.tables:
            raise ValueError("tables must include B (surrogate vs victim): it is what the attack measures")
        if self.task == "style":
            if self.target_style is None and ({"A", "C"} & set(self.tables)):
                raise ValueError(
                    "a style setting needs target_style (tables A and C compare outputs with the target-style "
                    'images); name a folder of target-style images, or set "tables": ["B"] to measure B only'
                )
            if self.surrogate.procedure not in STYLE_PROCEDURES:
                raise ValueError(f"style surrogates are paired: procedure {', '.join(STYLE_PROCEDURES)}")
        else:
            if self.target_style is not None:
                raise ValueError("an SR setting's ground truth is paired (test/HR/): drop target_style")
            if self.image_size is not None:
                raise ValueError("image_size is for style settings (SR sets keep their sizes)")
            if self.surrogate.procedure not in SR_PROCEDURES:
                raise ValueError(f"SR surrogates: procedure {' or '.join(SR_PROCEDURES)}")
        return self


class ReproduceConfig(StrictModel):
    """A reproduction: options shared by its settings, and the settings."""

    description: str = ""
    data_root: str = Field("../shared/data", description="what {data} in a path stands for (--data-root overrides)")
    device: str = Field("cpu", description="device of the surrogates' training and evaluation")
    n_boot: int = Field(1000, ge=100, description="bootstrap resamples of per-image CIs")
    set_boot: int = Field(200, ge=20, description="bootstrap resamples of set-level (SWD, KID) CIs")
    seed: int = 0
    settings: list[SettingConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ReproduceConfig:
        names = [s.name for s in self.settings]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"setting names must be unique; repeated: {', '.join(dup)}")
        return self


def load_reproduce_config(path: str | Path) -> ReproduceConfig:
    """Read and validate a reproduction config file (ConfigError naming each bad key)."""
    return load_config(ReproduceConfig, path)


# ---------------------------------------------------------------------------------------------
# checking the config against the file system (before anything is written)


def expand(path: str, data_root: Path) -> Path:
    """``{data}/x`` -> ``DATA_ROOT/x``; other relative paths are relative to the working directory."""
    if "{" in path.replace(DATA_PLACEHOLDER, ""):
        raise ConfigError(f"path {path!r}: the only placeholder is {DATA_PLACEHOLDER}", hint="e.g. {data}/sr/Set5")
    return Path(path.replace(DATA_PLACEHOLDER, str(data_root)))


def sorted_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (hidden ones skipped), sorted by name."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


@dataclass(frozen=True)
class ResolvedSet:
    """A set's images (in order) and how the tables name it."""

    role: str
    folder: Path
    files: tuple[Path, ...]
    label: str
    sliced: bool


def resolve_set(setting: str, role: str, spec: ImageSet, data_root: Path, recursive: bool = False) -> ResolvedSet:
    """The images of ``spec``; DataError naming the setting, the role and the folder when they are not there."""
    folder = expand(spec.dir, data_root)
    where = f"setting {setting!r}: {role} {folder}"
    if not folder.is_dir():
        raise DataError(f"{where}: no such folder", hint=f"check the path (data root: {data_root}, --data-root)")
    if recursive and spec.start is None and spec.stop is None:
        files = tuple(sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
    else:
        files = tuple(sorted_images(folder))
    if not files:
        raise DataError(f"{where}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if spec.start is not None or spec.stop is not None:
        stop = len(files) if spec.stop is None else spec.stop
        if stop > len(files) or (spec.start or 0) >= len(files):
            raise DataError(
                f"{where}: slice [{spec.start or 0}:{stop}] is outside its {len(files)} images",
                hint=f"use a slice within 0..{len(files)}",
            )
        files = files[spec.start : spec.stop]
    return ResolvedSet(role, folder, files, spec.describe(), spec.start is not None or spec.stop is not None)


@dataclass(frozen=True)
class ResolvedSetting:
    config: SettingConfig
    sets: dict[str, ResolvedSet]  # attacker, test, benchmark, target_style (style)
    sr_sets: dict[str, Path]  # SR: test, benchmark folders (HR/ + LR_x<scale>/)
    victim_spec: str | None
    victim_weights: Path | None


def _check_sr_folder(setting: SettingConfig, role: str, spec: ImageSet, data_root: Path) -> Path:
    folder = expand(spec.dir, data_root)
    lr = folder / f"LR_x{setting.scale}"
    if not (folder / "HR").is_dir() or not lr.is_dir():
        raise DataError(
            f"setting {setting.name!r}: SR {role} {folder} needs HR/ and LR_x{setting.scale}/ folders",
            hint=f"use the Set5/Set14 layout (HR/img.png and LR_x{setting.scale}/img.png with the same stems)",
        )
    if spec.start is not None or spec.stop is not None:
        raise ConfigError(f"setting {setting.name!r}: SR {role} sets are whole folders (no start/stop)")
    return folder


SPEC_PREFIXES = ("classical:", "python:", "onnx:")


def _check_victim(s: SettingConfig, data_root: Path) -> tuple[str | None, Path | None]:
    v = s.victim
    weights = expand(v.weights, data_root) if v.weights else None
    if weights is not None and not weights.is_file():
        raise DataError(f"setting {s.name!r}: victim weights {weights}: no such file", hint="check the path")
    if v.spec is None:
        return None, weights
    spec = v.spec
    if spec.startswith("onnx:"):
        path = expand(spec.removeprefix("onnx:").split("?", 1)[0], data_root)
        if not path.is_file():
            raise DataError(f"setting {s.name!r}: ONNX victim {path}: no such file", hint="check the path")
        return "onnx:" + str(path) + (("?" + spec.split("?", 1)[1]) if "?" in spec else ""), weights
    if spec.startswith(SPEC_PREFIXES):
        return spec, weights
    path = expand(spec, data_root)
    if not path.exists():
        raise DataError(
            f"setting {s.name!r}: victim {path}: no such file or folder",
            hint="for a copymark-trained victim run benchmarks/train_victims.py first; or fix the path",
        )
    return str(path), weights


def _check_surrogate(s: SettingConfig) -> None:
    """The surrogate's training options against its procedure and sizes (no data needed yet)."""
    from copymark.train.api import make_train_config
    from copymark.train.folders import check_size_fits

    try:
        cfg = make_train_config(
            s.surrogate.procedure, "(the store's pairs)", s.surrogate.net_config, size=train_size(s)
        )
        check_size_fits(cfg.procedure, train_size(s))
    except ConfigError as err:
        raise ConfigError(f"setting {s.name!r}: surrogate: {err.message}", hint=err.hint) from None
    answer = s.queries.size * (s.scale if s.task == "sr" else 1)
    if train_size(s) > answer:
        raise ConfigError(
            f"setting {s.name!r}: surrogate train_size {train_size(s)} is larger than the answers ({answer} px)",
            hint="use a train_size up to the answer size (SR: queries.size x scale)",
        )


def train_size(s: SettingConfig) -> int:
    return s.surrogate.train_size or s.queries.size * (s.scale if s.task == "sr" else 1)


def check_config(
    cfg: ReproduceConfig, data_root: Path, only: list[str] | None = None, load_victims: bool = True
) -> list[ResolvedSetting]:
    """Every folder, slice, victim and training option of the settings to run, before anything is written
    (``load_victims=False`` skips loading the victims: the checks that need no model)."""
    names = [s.name for s in cfg.settings]
    unknown = [n for n in (only or []) if n not in names]
    if unknown:
        raise ConfigError(f"--only {', '.join(unknown)}: no such setting", hint=f"settings: {', '.join(names)}")
    out = []
    for s in cfg.settings:
        if only and s.name not in only:
            continue
        sets = {"attacker": resolve_set(s.name, "attacker data", s.attacker, data_root, recursive=True)}
        sr_sets: dict[str, Path] = {}
        if s.task == "sr":
            sr_sets = {role: _check_sr_folder(s, role, getattr(s, role), data_root) for role in ("test", "benchmark")}
        else:
            for role in ("test", "benchmark"):
                sets[role] = resolve_set(s.name, f"{role} set", getattr(s, role), data_root)
            if s.target_style is not None:
                sets["target_style"] = resolve_set(s.name, "target-style set", s.target_style, data_root)
        spec, weights = _check_victim(s, data_root)
        _check_surrogate(s)
        out.append(ResolvedSetting(s, sets, sr_sets, spec, weights))
    if load_victims:
        for rs in out:
            check_victim_model(rs)
    return out


def _victim_model(rs: ResolvedSetting) -> Any:
    """The victim as the server would build it (converted weights built in memory, nothing written)."""
    from copymark.serving.models import ImageModel, load_model

    v = rs.config.victim
    if rs.victim_spec is not None:
        return load_model(rs.victim_spec, v.device, rs.victim_weights if v.weights else None)
    from copymark.nets.victims import load_cyclegan_h2z, load_srgan_x4

    assert rs.victim_weights is not None
    match v.convert:
        case "srgan_x4":
            return ImageModel("srgan_x4", "sr", load_srgan_x4(rs.victim_weights).eval(), "check", scale=4)
        case _:
            return ImageModel("cyclegan_h2z", "style", load_cyclegan_h2z(rs.victim_weights).eval(), "check")


def check_victim_model(rs: ResolvedSetting) -> None:
    """Load the victim once before anything is written: its spec, weights and (ONNX) input and output
    conventions must load, and it must be an image model of the setting's task and scale."""
    from copymark.serving.models import ImageModel

    s = rs.config
    try:
        model = _victim_model(rs)
    except CopymarkError as err:
        raise type(err)(f"setting {s.name!r}: victim: {err.message}", hint=err.hint) from None
    if not isinstance(model, ImageModel):
        raise ConfigError(
            f"setting {s.name!r}: victim {s.victim.label!r} answers {type(model).__name__} outputs, not images",
            hint="the extraction study attacks image-to-image models: name a style or SR victim",
        )
    scale = int(model.scale)
    if s.task == "sr" and scale != s.scale:
        raise ConfigError(
            f"setting {s.name!r}: the victim upscales x{scale}, the setting says scale {s.scale}"
            + (" (it is not an SR model)" if scale == 1 else ""),
            hint=f'set "scale": {scale}' if scale > 1 else 'use task "style" for this victim, or an SR victim',
        )
    if s.task == "style" and scale != 1:
        raise ConfigError(
            f"setting {s.name!r}: the victim upscales x{scale}; a style setting needs same-size outputs",
            hint=f'use task "sr" with "scale": {scale}',
        )


# ---------------------------------------------------------------------------------------------
# materialising the sets


def _square(x: Any, size: int) -> Any:
    """Centre-crop to a square, then bicubic (MATLAB-style) resize to ``size x size``, clamped."""
    from copymark import images as I

    h, w = x.shape[-2:]
    side = min(h, w)
    if h != w:
        x = I.center_crop(x, side, side)
    return x if side == size else I.resize_bicubic(x, size=(size, size)).clamp(0, 1)


def _shorter_side(x: Any, size: int) -> Any:
    from copymark import images as I

    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    s = size / min(h, w)
    return I.resize_bicubic(x, size=(max(size, round(h * s)), max(size, round(w * s)))).clamp(0, 1)


def materialise(rs: ResolvedSet, dest: Path, resize: Callable[[Any], Any] | None) -> Path:
    """The set as a folder: its own folder when it is whole and unresized, else ``dest`` (links
    for a slice, resized PNGs otherwise). Idempotent: a complete ``dest`` is left as it is."""
    from copymark import images as I
    from copymark.files import atomic_write_json, read_json

    if resize is None and not rs.sliced:
        return rs.folder
    manifest = {"files": [str(p) for p in rs.files], "resized": resize is not None}
    mf = dest / ".manifest.json"
    if mf.is_file() and read_json(mf) == manifest:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.iterdir():
        if old.name != ".manifest.json":
            old.unlink()
    stems: set[str] = set()
    for p in rs.files:
        if p.stem in stems:
            raise DataError(f"{rs.folder}: two images with stem {p.stem!r}", hint="rename one")
        stems.add(p.stem)
        if resize is None:
            (dest / p.name).symlink_to(p.resolve())
        else:
            I.save_image(I.quantize(resize(I.load_image(p))), dest / f"{p.stem}.png")
    atomic_write_json(mf, manifest)
    return dest


def prepare_sets(rs: ResolvedSetting, folder: Path) -> dict[str, Path]:
    """Folders of the attacker, test, benchmark and target-style sets of one setting."""
    s = rs.config
    out: dict[str, Path] = {}
    q = s.queries.resize
    out["attacker"] = materialise(
        rs.sets["attacker"], folder / "data" / "attacker", (lambda x: _shorter_side(x, q)) if q else None
    )
    if s.task == "sr":
        out.update(rs.sr_sets)
        return out
    size = s.image_size
    for role in ("test", "benchmark", "target_style"):
        if role in rs.sets:
            out[role] = materialise(
                rs.sets[role], folder / "data" / role, (lambda x: _square(x, size)) if size else None
            )
    return out


# ---------------------------------------------------------------------------------------------
# the victim


def convert_victim(kind: str, weights: Path, dest: Path) -> Path:
    """A third-party ``.pth`` as a copymark checkpoint folder (explicit, strict converters)."""
    from copymark.nets.build import CycleGANMobileConfig, SRGANLeftthomasConfig, save_net
    from copymark.nets.victims import load_cyclegan_h2z, load_srgan_x4

    if (dest / "model.safetensors").is_file():
        return dest
    match kind:
        case "srgan_x4":
            net, cfg = load_srgan_x4(weights), SRGANLeftthomasConfig(scale=4)
        case "cyclegan_h2z":
            net, cfg = load_cyclegan_h2z(weights), CycleGANMobileConfig()
        case _:
            raise ConfigError(f"unknown victim converter {kind!r}", hint="srgan_x4 or cyclegan_h2z")
    save_net(dest, net, cfg, {"converted_from": str(weights), "converter": kind})
    return dest


def keys_of(server_dir: Path, budget: int, n_eval: int) -> dict[str, str]:
    """The attacker's and the evaluator's keys of a setting: written once (``keys.json``, the
    server's policies, and ``roles.json``, which key is whose), then read back, so the budgets
    already spent persist in the server's usage file across reruns."""
    from copymark.files import atomic_write_json, read_json

    kf, rf = server_dir / "keys.json", server_dir / "roles.json"
    if kf.is_file() and rf.is_file():
        roles = {v: k for k, v in read_json(rf).items()}
        return {"attacker": roles["attacker"], "evaluator": roles["evaluator"]}
    server_dir.mkdir(parents=True, exist_ok=True)
    attacker, evaluator = "attacker-" + secrets.token_hex(12), "evaluator-" + secrets.token_hex(12)
    atomic_write_json(
        kf,
        {
            attacker: {"budget": budget, "rate_per_s": 10000, "burst": 10000},
            evaluator: {"budget": max(16, 4 * n_eval), "rate_per_s": 10000, "burst": 10000},
        },
    )
    atomic_write_json(rf, {attacker: "attacker", evaluator: "evaluator"})
    return {"attacker": attacker, "evaluator": evaluator}


class _Server:
    """The victim's server, started on first use and stopped at the end of the setting."""

    def __init__(self, spec: str, weights: Path | None, device: str, server_dir: Path, log: Echo):
        self.spec, self.weights, self.device, self.dir, self.log = spec, weights, device, server_dir, log
        self.server: Any = None

    def url(self) -> str:
        if self.server is None:
            from copymark.serving.app import create_app
            from copymark.serving.models import load_model
            from copymark.serving.server import BackgroundServer
            from copymark.serving.settings import ServeSettings

            model = load_model(self.spec, self.device, self.weights)
            settings = ServeSettings(
                keys_file=self.dir / "keys.json",
                request_log=self.dir / "requests.jsonl",
                inference_timeout_s=600.0,
                max_pixels=1024 * 1024,
            )
            self.server = BackgroundServer(create_app(model, settings)).start()
            self.log(f"victim {self.spec} serving on {self.server.url}")
        return self.server.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


# ---------------------------------------------------------------------------------------------
# one setting


def _read_state(folder: Path) -> dict[str, Any]:
    from copymark.files import read_json

    p = folder / STATE_FILE
    return read_json(p) if p.is_file() else {}


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    from copymark.files import atomic_write_json

    atomic_write_json(folder / STATE_FILE, state)


def _train_config(s: SettingConfig, data_dir: Path, device: str, progress: bool) -> Any:
    from copymark.train.api import make_train_config

    size = train_size(s)
    policy = "random_crop" if s.task == "style" and size < s.queries.size else "error"
    it = s.surrogate.iters
    return make_train_config(
        s.surrogate.procedure,
        data_dir,
        s.surrogate.net_config,
        size=size,
        resize_policy=policy,
        iters=it,
        batch_size=s.surrogate.batch_size,
        seed=s.surrogate.seed,
        device=device,
        progress=progress,
        log_every=max(1, it // 50),
        save_every=s.surrogate.save_every or max(1, it // 5),
    )


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Dotted keys where two JSON configs differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            key = f"{where}.{k}" if where else str(k)
            out += [key] if (k not in old or k not in new) else _differences(old[k], new[k], key)
        return out
    return [] if old == new else [where or "(config)"]


def _train_surrogate(cfg: Any, run_dir: Path, log: Echo) -> tuple[str, float]:
    """Train, resume, or skip a finished run; a run folder of another config is refused."""
    from copymark.checkpoints import latest_checkpoint, read_meta
    from copymark.runs import read_json
    from copymark.train.api import resume, train

    t0 = time.perf_counter()
    if not (run_dir / "config.json").is_file():
        train(cfg, run_dir)
        return "trained", time.perf_counter() - t0
    diff = _differences(read_json(run_dir / "config.json"), json.loads(cfg.model_dump_json()))
    diff = [d for d in diff if d not in ("loop.progress", "loop.device")]
    if diff:
        raise CopymarkError(
            f"{run_dir} holds a surrogate run of another configuration (differs in: {', '.join(diff[:6])})",
            hint="rerun with the config that made this run folder, or choose another --run-dir",
        )
    latest = latest_checkpoint(run_dir)
    if latest is not None and int(read_meta(latest)["iteration"]) >= cfg.loop.iters:
        return "already trained", 0.0
    log(f"resuming the surrogate run {run_dir}")
    resume(run_dir, device=cfg.loop.device, progress=cfg.loop.progress)
    return "resumed", time.perf_counter() - t0


def run_setting(
    rs: ResolvedSetting,
    folder: Path,
    cfg: ReproduceConfig,
    inception_weights: Path | None,
    progress: bool,
    log: Echo,
) -> dict[str, Any]:
    """The whole attack on one setting into ``folder``; returns its result (see :func:`setting_result`)."""
    from copymark.client.pairs import training_folder
    from copymark.extraction.campaign import CampaignConfig, run_campaign
    from copymark.extraction.evaluate import EvaluateConfig, run_evaluation, surrogate_digest

    s = rs.config
    folder.mkdir(parents=True, exist_ok=True)
    state = _read_state(folder)
    timings: dict[str, float] = state.get("timings_s", {})

    def lap(name: str, seconds: float) -> None:
        if seconds > 0:
            timings[name] = round(timings.get(name, 0.0) + seconds, 2)
        state["timings_s"] = timings
        _write_state(folder, state)

    t = time.perf_counter()
    dirs = prepare_sets(rs, folder)
    lap("data", time.perf_counter() - t if "data" not in timings else 0.0)
    spec = rs.victim_spec
    if spec is None:
        assert s.victim.convert is not None and rs.victim_weights is not None
        spec = str(convert_victim(s.victim.convert, rs.victim_weights, folder / "victim"))
    n_eval = _count_eval_inputs(s, dirs)
    keys = keys_of(folder / "server", s.queries.budget, n_eval)
    server = _Server(spec, rs.victim_weights if s.victim.spec else None, s.victim.device, folder / "server", log)
    eval_dir = folder / ("eval-inception" if inception_weights else "eval")
    try:
        # campaign: resumes (answered inputs skipped); skipped entirely once complete
        camp = state.get("campaign")
        if not camp or not camp.get("complete"):
            t = time.perf_counter()
            log(f"[{s.name}] campaign: {s.queries.budget} queries of {s.queries.size} px ({s.queries.strategy})")
            result = run_campaign(
                CampaignConfig(
                    victim_url=server.url(),
                    data_dir=dirs["attacker"],
                    budget=s.queries.budget,
                    store_dir=folder / "store",
                    strategy=s.queries.strategy,
                    size=s.queries.size,
                    seed=s.queries.seed,
                    concurrency=s.queries.concurrency,
                    pool_factor=s.queries.pool_factor,
                ),
                keys["attacker"],
                progress=progress,
            )
            if result.repair.unrepaired:
                raise DataError(
                    f"setting {s.name!r}: the query store has damaged files it cannot repair: "
                    + "; ".join(result.repair.unrepaired[:3]),
                    hint=f"restore {folder / 'store'} or remove it to query again",
                )
            failed = result.counts.get("failed", 0)
            complete = result.answered_total >= s.queries.budget or result.candidates_exhausted
            if not complete:
                raise CopymarkError(
                    f"setting {s.name!r}: the campaign stopped with {result.answered_total} of "
                    f"{s.queries.budget} answers ({result.report.stop_reason or f'{failed} failed'})",
                    hint="rerun the same command to resume (answers received are kept and not paid again)",
                )
            camp = {
                "complete": True,
                "victim_id": result.victim_id,
                "answered": result.answered_total,
                "new_this_run": result.answered_total - result.already_answered,
                "failed": failed,
                "candidates_exhausted": result.candidates_exhausted,
                "task": result.task,
                "scale": result.scale,
            }
            state["campaign"] = camp
            lap("campaign", time.perf_counter() - t)
        victim_id = str(camp["victim_id"])
        n_pairs = min(int(camp["answered"]), s.queries.budget)
        data = training_folder(folder / "store", folder / "surrogate_data", victim_id, first=n_pairs)
        # surrogate: trains, resumes, or is skipped when finished
        tcfg = _train_config(s, data.folder, cfg.device, progress)
        log(f"[{s.name}] surrogate: {s.surrogate.procedure}, {s.surrogate.iters} iterations on {data.n_pairs} pairs")
        status, secs = _train_surrogate(tcfg, folder / "surrogate", log)
        state["train"] = {"status": status, "pairs": data.n_pairs}
        lap("train", secs)
        # evaluation: skipped when done for this very surrogate
        sur_sha = surrogate_digest(folder / "surrogate")
        ev = state.get("evaluate", {}).get(eval_dir.name)
        if not ev or ev.get("surrogate_sha256") != sur_sha or not (eval_dir / "metrics.json").is_file():
            t = time.perf_counter()
            log(f"[{s.name}] evaluation (tables A/B/C) into {eval_dir}")
            style = dirs.get("target_style") if "A" in s.tables else None
            run_evaluation(
                EvaluateConfig(
                    victim_url=server.url(),
                    api_key=keys["evaluator"],
                    surrogate=folder / "surrogate",
                    test=dirs["test"],
                    gt=style,
                    benchmark=dirs["benchmark"],
                    benchmark_gt=style,
                    run_dir=eval_dir,
                    store=folder / "store",
                    inception_weights=inception_weights,
                    device=cfg.device,
                    n_boot=cfg.n_boot,
                    seed=cfg.seed,
                    progress=progress,
                )
            )
            state.setdefault("evaluate", {})[eval_dir.name] = {"surrogate_sha256": sur_sha}
            state.pop("set_level", None)
            lap("evaluate", time.perf_counter() - t)
    finally:
        server.stop()
    from copymark.files import read_json

    metrics = read_json(eval_dir / "metrics.json")
    intervals: dict[str, Any] = {}
    if s.task == "style":
        key = f"{eval_dir.name}:{state['evaluate'][eval_dir.name]['surrogate_sha256']}:{cfg.set_boot}"
        cached = state.get("set_level", {})
        if cached.get("key") == key:
            intervals = cached["intervals"]
        else:
            t = time.perf_counter()
            log(f"[{s.name}] set-level bootstrap CIs ({cfg.set_boot} resamples)")
            features = None
            if inception_weights is not None:
                from copymark.metrics.inception import inception_v3_features

                features = inception_v3_features(inception_weights)
            for set_name in ("test", "benchmark"):
                intervals[set_name] = set_level_intervals(
                    eval_dir / "outputs" / set_name, cfg.set_boot, cfg.seed, features
                )
            state["set_level"] = {"key": key, "intervals": intervals}
            lap("set_level_ci", time.perf_counter() - t)
    state["done"] = True
    _write_state(folder, state)
    return setting_result(rs, cfg, metrics, intervals, state, folder)


def _count_eval_inputs(s: SettingConfig, dirs: dict[str, Path]) -> int:
    if s.task == "sr":
        return sum(len(sorted_images(dirs[r] / f"LR_x{s.scale}")) for r in ("test", "benchmark"))
    return sum(len(sorted_images(dirs[r])) for r in ("test", "benchmark"))


# ---------------------------------------------------------------------------------------------
# set-level confidence intervals (SWD, KID) by bootstrap over images


def _stems(d: Path) -> list[str]:
    return [p.stem for p in sorted_images(d)] if d.is_dir() else []


def _swd_descriptors(images: list[Any], seeds: list[int], num_levels: int) -> list[Any]:
    """Per level: ``n x 128 x 3 x 7 x 7`` descriptors, drawn per image from a generator of its own seed."""
    import torch

    from copymark.metrics.sliced_wasserstein import laplacian_pyramid, sample_descriptors

    per_level: list[list[Any]] = [[] for _ in range(num_levels)]
    for x, seed in zip(images, seeds, strict=True):
        gen = torch.Generator().manual_seed(seed)
        for i, lv in enumerate(laplacian_pyramid(x.unsqueeze(0), num_levels)):
            per_level[i].append(sample_descriptors(lv, generator=gen))
    return [torch.stack(lv) for lv in per_level]


def _swd(pred: list[Any], ref: list[Any], ip: np.ndarray, ir: np.ndarray, seed: int) -> float:
    """SWD x 1e3 averaged over levels between the descriptors of images ``ip`` and ``ir`` (per-set
    normalisation, 4 x 128 directions, as :class:`copymark.metrics.sliced_wasserstein.SWD`)."""
    import torch

    from copymark.metrics.sliced_wasserstein import normalize_descriptors, sliced_wasserstein

    gen = torch.Generator().manual_seed(seed)
    dists = []
    for dp, dr in zip(pred, ref, strict=True):
        a = dp[torch.from_numpy(ip)].flatten(0, 1)
        b = dr[torch.from_numpy(ir)].flatten(0, 1)
        m = min(a.shape[0], b.shape[0])
        if a.shape[0] > m:
            a = a[torch.randperm(a.shape[0], generator=gen)[:m]]
        if b.shape[0] > m:
            b = b[torch.randperm(b.shape[0], generator=gen)[:m]]
        dists.append(1e3 * sliced_wasserstein(normalize_descriptors(a), normalize_descriptors(b), generator=gen))
    return float(sum(dists) / len(dists))


def _kid_kernels(fp: np.ndarray, fr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from copymark.metrics.distribution import polynomial_kernel

    return polynomial_kernel(fp, fp), polynomial_kernel(fr, fr), polynomial_kernel(fp, fr)


def _mmd2(k: tuple[np.ndarray, np.ndarray, np.ndarray], ip: np.ndarray, ir: np.ndarray) -> float:
    """Unbiased MMD^2 on the resampled sets, leaving out pairs of copies of one image."""
    kpp, krr, kpr = k

    def within(kk: np.ndarray, idx: np.ndarray) -> float:
        sub = kk[np.ix_(idx, idx)]
        keep = idx[:, None] != idx[None, :]
        return float(sub[keep].mean())

    return within(kpp, ip) + within(krr, ir) - 2.0 * float(kpr[np.ix_(ip, ir)].mean())


def _interval(values: np.ndarray) -> list[float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def set_level_intervals(
    set_dir: Path, n_boot: int = 200, seed: int = 0, feature_net: Callable[[Any], Any] | None = None
) -> dict[str, Any]:
    """SWD (and KID with ``feature_net``) of A, C, the identity and B with bootstrap 95% CIs.

    Reads the images an evaluation saved in ``set_dir`` (``input/``, ``victim/``,
    ``surrogate/`` paired by stem, ``style/`` the target-style set); see the module docstring.
    A set without ``style/`` gets B only. Returns ``{"swd": {table: {value, ci95}}, "swd_diff":
    {"C-A": ..., "A-identity": ..., "C-identity": ...}, "kid": ..., "n", "n_ref", "n_boot"}``.
    """
    from copymark import images as I
    from copymark.metrics.sliced_wasserstein import default_num_levels

    stems = _stems(set_dir / "input")
    if not stems or _stems(set_dir / "victim") != stems or _stems(set_dir / "surrogate") != stems:
        raise DataError(f"{set_dir}: input/, victim/ and surrogate/ must hold the same images", hint="rerun")
    style = _stems(set_dir / "style")
    load = {
        role: [I.load_image(set_dir / role / f"{st}.png") for st in stems] for role in ("input", "victim", "surrogate")
    }
    refs = [I.load_image(set_dir / "style" / f"{st}.png") for st in style]
    h, w = load["input"][0].shape[-2:]
    levels = default_num_levels(min(h, *(r.shape[-2] for r in refs)) if refs else h, w)
    seeds_in = [seed * 1_000_003 + i for i in range(len(stems))]
    desc = {role: _swd_descriptors(load[role], seeds_in, levels) for role in load}
    ref_desc = (
        _swd_descriptors(refs, [seed * 1_000_003 + 500_000 + j for j in range(len(refs))], levels) if refs else None
    )
    kern = None
    if feature_net is not None and refs:
        from copymark.metrics.distribution import FeatureDistances

        fd = FeatureDistances(feature_net, seed=seed)
        feats = {role: fd.features_of(load[role]) for role in ("victim", "surrogate", "input")}
        fref = fd.features_of(refs)
        kern = {role: _kid_kernels(feats[role], fref) for role in feats}
    n, m = len(stems), len(refs)
    rng = np.random.default_rng(seed)
    tables = {"A": "victim", "C": "surrogate", "identity": "input"} if refs else {}
    swd_vals: dict[str, list[float]] = {k: [] for k in (*tables, "B")}
    kid_vals: dict[str, list[float]] = {k: [] for k in tables} if kern else {}
    for b in range(n_boot + 1):  # replicate 0: the sets themselves (the point estimate)
        ip = np.arange(n) if b == 0 else rng.integers(0, n, n)
        ir = np.arange(m) if b == 0 else rng.integers(0, m, m)
        dseed = seed * 7919 + b  # the same directions for every table of a replicate
        for t, role in tables.items():
            assert ref_desc is not None
            swd_vals[t].append(_swd(desc[role], ref_desc, ip, ir, dseed))
            if kern:
                kid_vals[t].append(_mmd2(kern[role], ip, ir))
        swd_vals["B"].append(_swd(desc["surrogate"], desc["victim"], ip, ip, dseed))

    def summary(vals: list[float]) -> dict[str, Any]:
        arr = np.asarray(vals)
        return {"value": float(arr[0]), "ci95": _interval(arr[1:])}

    out: dict[str, Any] = {
        "n": n,
        "n_ref": m,
        "n_boot": n_boot,
        "swd": {t: summary(v) for t, v in swd_vals.items()},
        "method": "percentile bootstrap over images (inputs shared by victim, surrogate and identity; "
        "target-style images drawn apart); SWD descriptors drawn once per image, the same directions per resample",
    }
    if tables:
        diffs = {"C-A": ("C", "A"), "A-identity": ("A", "identity"), "C-identity": ("C", "identity")}
        out["swd_diff"] = {
            k: summary(list(np.asarray(swd_vals[a]) - np.asarray(swd_vals[c]))) for k, (a, c) in diffs.items()
        }
        if kid_vals:
            out["kid"] = {t: summary(v) for t, v in kid_vals.items()}
            out["kid_diff"] = {
                k: summary(list(np.asarray(kid_vals[a]) - np.asarray(kid_vals[c]))) for k, (a, c) in diffs.items()
            }
    return out


# ---------------------------------------------------------------------------------------------
# the setting's result: table cells, goals, conditions

PER_IMAGE = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")


def _per_image(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    if not entry:
        return None
    return {k: entry.get(k) for k in ("mean", "std", "ci95", "n", "n_inf")}


def _cell(task: str, table: dict[str, Any] | None, tkey: str, intervals: dict[str, Any]) -> dict[str, Any] | None:
    """One cell of a study table: what the evaluation and the set-level CIs give for table ``tkey``."""
    if table is None:
        return None
    m = table.get("metrics", {})
    cell: dict[str, Any] = {k: _per_image(m.get(k)) for k in PER_IMAGE if m.get(k)}
    if task == "style":
        swd = (intervals.get("swd") or {}).get(tkey)
        cell["swd"] = swd or ({"value": (m.get("swd") or {}).get("value")} if m.get("swd") else None)
        fid = m.get("fid")
        cell["fid"] = {"value": fid.get("value"), "why": fid.get("why")} if fid else None
        kid = m.get("kid")
        if kid:
            cell["kid"] = {"mean": kid.get("mean"), "std": kid.get("std"), "why": kid.get("why")}
            ci = (intervals.get("kid") or {}).get(tkey)
            if ci:
                cell["kid"]["ci95"] = ci["ci95"]
        else:
            cell["kid"] = None
        cell["n"], cell["n_ref"] = (m.get("swd") or {}).get("n"), (m.get("swd") or {}).get("n_ref")
    if table.get("note"):
        cell["note"] = table["note"]
    return cell


def _within(value: Any, ci: Any) -> bool | None:
    if not isinstance(value, (int, float)) or not ci or None in ci:
        return None
    return bool(ci[0] <= value <= ci[1])


def goals(task: str, sets: dict[str, Any], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 13's goals, read off one setting's results (``met`` None: not measurable here)."""
    out: list[dict[str, Any]] = []
    for set_name, cells in sets.items():
        res = metrics["sets"].get(set_name, {})
        a, c = cells.get("A"), cells.get("C")
        if task == "style" and a and c:
            for metric in ("kid", "swd"):
                ca, cc = a.get(metric), c.get(metric)
                val = None if not cc else cc.get("mean" if metric == "kid" else "value")
                ci = None if not ca else ca.get("ci95")
                met = _within(val, ci)
                detail = (
                    f"C {val:.4g} {'in' if met else 'outside'} A's CI [{ci[0]:.4g}, {ci[1]:.4g}]"
                    if met is not None
                    else ("not computed: pass --inception-weights" if metric == "kid" else "not computed")
                )
                out.append(
                    {"goal": f"{set_name}: C within A's 95% CI ({metric.upper()})", "met": met, "detail": detail}
                )
                # the stricter, paired reading: the CI of C - A over the same resampled inputs
                diff = (cells.get(f"{metric}_diff") or {}).get("C-A")
                dci = (diff or {}).get("ci95")
                if diff and dci and None not in dci:
                    out.append(
                        {
                            "goal": f"{set_name}: paired C - A ({metric.upper()}) CI contains 0 (stricter check)",
                            "met": bool(dci[0] <= 0.0 <= dci[1]),
                            "detail": f"C - A = {diff['value']:+.4g}, CI [{dci[0]:+.4g}, {dci[1]:+.4g}]",
                        }
                    )
        if task == "sr" and a and c:
            pa, pc = (a.get("psnr_y") or {}).get("mean"), (c.get("psnr_y") or {}).get("mean")
            if isinstance(pa, float) and isinstance(pc, float):
                out.append(
                    {
                        "goal": f"{set_name}: C within 0.2 dB of A (PSNR Y)",
                        "met": bool(abs(pa - pc) <= 0.2),
                        "detail": f"A {pa:.2f} dB, C {pc:.2f} dB, gap {pa - pc:+.2f} dB",
                    }
                )
        key = "psnr_y" if task == "sr" else "psnr_rgb"
        trivial = "bicubic_vs_victim" if task == "sr" else "identity_vs_victim"
        for base in (trivial, "untrained_vs_victim"):
            gain = ((res.get("baselines") or {}).get(base) or {}).get(key, {}).get("paired_gain")
            ci = (gain or {}).get("ci95")
            met = None if not ci else bool(ci[0] > 0)
            detail = (
                f"B - {base.removesuffix('_vs_victim')} = {gain['mean']:+.2f} dB, CI [{ci[0]:+.2f}, {ci[1]:+.2f}]"
                if ci
                else "not measured"
            )
            out.append(
                {"goal": f"{set_name}: B's paired gain over {base.removesuffix('_vs_victim')} ({key}) > 0", "met": met,
                 "detail": detail}
            )  # fmt: skip
    return out


def _victim_training(spec: str | None) -> dict[str, Any] | None:
    """What a copymark-trained victim was trained on (its run's config), for the conditions table."""
    if spec is None or spec.startswith(SPEC_PREFIXES):
        return None
    from copymark.files import read_json

    run = Path(spec)
    for cand in (run, run.parent, run.parent.parent):
        if (cand / "config.json").is_file() and (cand / "env.json").is_file():
            c = read_json(cand / "config.json")
            if isinstance(c, dict) and "procedure" in c and "loop" in c:
                return {
                    "procedure": c["procedure"].get("kind"),
                    "iters": c["loop"].get("iters"),
                    "trained_iters": _served_iteration(cand),
                    "batch_size": c["loop"].get("batch_size"),
                    "size": (c.get("data") or {}).get("size"),
                }
    return None


def _served_iteration(run: Path) -> int | None:
    """The iteration of the checkpoint a run folder serves (its latest), which a stopped run
    leaves short of its schedule's ``iters``."""
    from copymark.checkpoints import latest_checkpoint, read_meta

    latest = latest_checkpoint(run)
    return None if latest is None else int(read_meta(latest)["iteration"])


def setting_result(
    rs: ResolvedSetting,
    cfg: ReproduceConfig,
    metrics: dict[str, Any],
    intervals: dict[str, Any],
    state: dict[str, Any],
    folder: Path,
) -> dict[str, Any]:
    """The JSON :mod:`copymark.report.paper_tables` renders: cells per set and table, goals, conditions."""
    s = rs.config
    sets: dict[str, Any] = {}
    for set_name in ("test", "benchmark"):
        res = metrics["sets"].get(set_name)
        if res is None:
            continue
        iv = intervals.get(set_name, {})
        tabs = res["tables"]
        sets[set_name] = {k: _cell(s.task, tabs.get(k), k, iv) for k in ("A", "B", "C") if k in s.tables}
        if s.task == "style" and iv.get("swd_diff"):
            sets[set_name]["swd_diff"] = iv["swd_diff"]
            sets[set_name]["identity"] = {"swd": (iv.get("swd") or {}).get("identity")}
            if iv.get("kid_diff"):
                sets[set_name]["kid_diff"] = iv["kid_diff"]
        bases = res.get("baselines", {})
        sets[set_name]["baselines"] = {
            k: {m: _per_image(v) | {"paired_gain": _per_image(v.get("paired_gain"))} for m, v in entry.items()
                if m in PER_IMAGE and isinstance(v, dict) and "mean" in v}
            for k, entry in bases.items()
        }  # fmt: skip
    labels = {
        "test": rs.sets["test"].label if "test" in rs.sets else s.test.describe(),
        "benchmark": rs.sets["benchmark"].label if "benchmark" in rs.sets else s.benchmark.describe(),
    }
    counts = {
        role: len(r.files) for role, r in rs.sets.items()
    } | {f"{k}_images": v.get("n") for k, v in metrics["sets"].items()}  # fmt: skip
    camp = state.get("campaign", {})
    victim_training = _victim_training(rs.victim_spec)
    conditions = {
        "victim": s.victim.label,
        "victim_training": victim_training,
        "attacker_data": rs.sets["attacker"].label,
        "test_set": labels["test"],
        "benchmark_set": labels["benchmark"],
        "target_style_set": rs.sets["target_style"].label if "target_style" in rs.sets else None,
        "image_size": s.image_size,
        "query_size": s.queries.size,
        "queries": camp.get("answered"),
        "strategy": s.queries.strategy,
        "surrogate": {
            "procedure": s.surrogate.procedure,
            "iters": s.surrogate.iters,
            "batch_size": s.surrogate.batch_size,
            "train_size": train_size(s),
            "pairs": (state.get("train") or {}).get("pairs"),
        },
        "counts": counts,
        "fid": "Inception-v3 (FID, KID)"
        if metrics.get("protocol", {}).get("fid_kid", "").startswith("Incep")
        else "not computed: no --inception-weights",  # fmt: skip
        "notes": s.notes,
    }
    return {
        "name": s.name,
        "task": s.task,
        "study_table": s.study_table,
        "victim": {"label": s.victim.label, "victim_id": metrics["victim"]["victim_id"]},
        "set_labels": labels,
        "tables": list(s.tables),
        "sets": sets,
        "goals": goals(s.task, {k: v for k, v in sets.items()}, metrics),
        "conditions": conditions,
        "timings_s": state.get("timings_s", {}),
        "folder": folder.name,
    }


# ---------------------------------------------------------------------------------------------
# the whole reproduction


def recorded_config(cfg: ReproduceConfig, data_root: Path) -> dict[str, Any]:
    """The run folder's own record: everything but the settings. Each setting's folder records
    its own config (``settings/NAME/setting.json``) when it starts, so settings can be added to a
    config, and ones not started yet changed, without a new run folder; a started one is fixed."""
    whole = cfg.model_dump(mode="json")
    whole.pop("settings")
    return {"command": "reproduce extraction-tables", "data_root": str(data_root), "settings": SETTING_FILE, **whole}


def setting_record(rs: ResolvedSetting) -> dict[str, Any]:
    return json.loads(json.dumps(rs.config.model_dump(mode="json")))


def check_started_settings(run_dir: Path, resolved: list[ResolvedSetting]) -> None:
    """A setting that has started in ``run_dir`` must be run with the config it started with."""
    from copymark.files import read_json
    from copymark.runs import config_differences

    for rs in resolved:
        f = run_dir / SETTINGS_DIR / rs.config.name / SETTING_FILE
        if not f.is_file():
            continue
        diff = config_differences(read_json(f, ConfigError), setting_record(rs))
        if diff:
            shown = ", ".join(diff[:6]) + (" ..." if len(diff) > 6 else "")
            raise ConfigError(
                f"setting {rs.config.name!r} in {run_dir} was started with another config (differs in: {shown})",
                hint="keep the setting as it started, give the changed one a new name, or choose another --run-dir",
            )


def run_reproduction(
    cfg: ReproduceConfig,
    run_dir: Path,
    *,
    data_root: Path | None = None,
    inception_weights: Path | None = None,
    only: list[str] | None = None,
    progress: bool = True,
    echo: Echo = print,
) -> dict[str, Any]:
    """Run (or resume) every setting of ``cfg`` into ``run_dir`` and write the tables; see the module docstring."""
    from copymark.files import atomic_write_json
    from copymark.report.paper_tables import write_tables
    from copymark.runs import create_or_reuse_run

    root = Path(data_root if data_root is not None else cfg.data_root)
    if inception_weights is not None and not Path(inception_weights).is_file():
        raise DataError(f"--inception-weights {inception_weights}: no such file")
    resolved = check_config(cfg, root, only)
    check_started_settings(Path(run_dir), resolved)
    run = create_or_reuse_run(run_dir, recorded_config(cfg, root), cfg.device, cfg.seed)

    def log(msg: str) -> None:
        echo(msg)
        run.log(msg)

    order = [s.name for s in cfg.settings]
    for rs in resolved:
        name = rs.config.name
        t0 = time.perf_counter()
        log(f"setting {name}: {rs.config.victim.label}")
        folder = run_dir / SETTINGS_DIR / name
        with setting_lock(folder):
            check_started_settings(Path(run_dir), [rs])  # again under the lock: another process may have started it
            if not (folder / SETTING_FILE).is_file():
                atomic_write_json(folder / SETTING_FILE, setting_record(rs))
            result = run_setting(rs, folder, cfg, inception_weights, progress, log)
            atomic_write_json(folder / RESULT_FILE, result)
        results = collected_results(run_dir, order)
        run.update_metrics({"settings": results})
        write_tables(run_dir, results, order, cfg.description)
        log(f"setting {name} done in {time.perf_counter() - t0:.1f} s")
    results = collected_results(run_dir, order)
    write_tables(run_dir, results, order, cfg.description)
    return results


def collected_results(run_dir: Path, order: list[str]) -> dict[str, Any]:
    """Every finished setting's ``result.json`` (the per-setting record; another process running
    other settings of the same run folder with ``--only`` writes its own)."""
    from copymark.files import read_json

    files = {n: run_dir / SETTINGS_DIR / n / RESULT_FILE for n in order}
    return {n: read_json(f) for n, f in files.items() if f.is_file()}


@contextmanager
def setting_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` (an advisory ``flock``) while a setting runs: a second process
    given the same setting (two ``--only`` runs into one run folder) is refused, not interleaved."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CopymarkError(
                f"setting {folder.name!r} is being run by another process ({folder})",
                hint="wait for it to finish, or run the other settings with --only",
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def goal_summary(results: dict[str, Any]) -> list[str]:
    """One line per goal: ``[met|MISSED|n/a] setting: goal (detail)``."""
    lines = []
    for name, r in results.items():
        for g in r.get("goals", []):
            tag = "n/a" if g["met"] is None else ("met" if g["met"] else "MISSED")
            lines.append(f"[{tag}] {name}: {g['goal']} ({g['detail']})")
    return lines
