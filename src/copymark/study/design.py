"""Study design: the study folder, its image pool, and each participant's seeded plan.

A study folder (made by :func:`create_study`, ``copymark study create``) holds

* ``study.json`` - the :class:`StudyConfig`: question, scale labels, seed, items per participant,
  number of attention checks, the optional demographic questions
  (:mod:`copymark.study.demographics`; none by default), and the image pool (each input's victim and surrogate output,
  optionally the original input, the style examples and the attention-check images);
* ``images/`` - every image re-encoded as PNG under an opaque random id, so neither the URL nor
  the file's metadata tells a participant which model made it;
* ``responses.sqlite`` - the answers (created by the web app, see :mod:`copymark.study.store`).

Outputs are paired by file stem: ``victim/cat.png`` and ``surrogate/cat.jpg`` are the two
outputs of input ``cat``. :func:`participant_plan` draws, for participant number ``k``, a
seeded sample of distinct inputs, shows half through the victim and half through the surrogate
(never both outputs of one input), in random order, with attention checks at random positions.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from copymark.config import StrictModel, load_config
from copymark.errors import ConfigError, DataError
from copymark.study.demographics import Question, check_questions

# copymark.images / copymark.checkpoints import torch; they are needed only to *create* a study,
# so they are imported inside those functions and the web app starts without torch.

STUDY_FILE = "study.json"
IMAGES_DIR = "images"
DB_FILE = "responses.sqlite"
MODELS = ("victim", "surrogate")

DEFAULT_QUESTION = "How well does this image show the target style?"
DEFAULT_LABELS = ["1 - not at all", "2 - slightly", "3 - moderately", "4 - well", "5 - very well, like the examples"]


class ImageRef(StrictModel):
    """One image of the pool: opaque ``item_id`` (also its URL) and its file under ``images/``."""

    item_id: str
    file: str
    source: str  # original path, for the experimenter only; never shown to participants


class InputItem(StrictModel):
    """The outputs of both models for one input (paired by file stem)."""

    input_id: str
    victim: ImageRef
    surrogate: ImageRef
    original: ImageRef | None = None


class AttentionItem(StrictModel):
    """An instructed-response check: the page asks the participant to choose ``expected``."""

    image: ImageRef
    expected: int = Field(ge=1, le=5)


class StudyConfig(StrictModel):
    """Contents of ``study.json``."""

    format: Literal["copymark-study-1"] = "copymark-study-1"
    title: str = "Image style study"
    question: str = DEFAULT_QUESTION
    scale_labels: list[str] = Field(default_factory=lambda: list(DEFAULT_LABELS))
    seed: int = 0
    per_participant: int = 20
    attention_checks: int = Field(default=0, ge=0)
    created_at: str = ""
    inputs: list[InputItem]
    examples: list[ImageRef]
    attention: list[AttentionItem] = Field(default_factory=list)
    demographics: list[Question] = Field(default_factory=list)  # optional questions, none by default

    @field_validator("demographics")
    @classmethod
    def _distinct_questions(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"a demographic question is listed twice: {v}")
        return v

    @field_validator("scale_labels")
    @classmethod
    def _five_labels(cls, v: list[str]) -> list[str]:
        if len(v) != 5:
            raise ValueError(f"need exactly 5 labels for the 1-5 scale, got {len(v)}")
        return v


class PlanItem(StrictModel):
    """One page of a participant's sequence."""

    position: int
    item_id: str
    model: Literal["victim", "surrogate", "attention"]
    input_id: str | None = None
    expected: int | None = None


def _check_design(n_inputs: int, per_participant: int) -> None:
    if per_participant < 2 or per_participant % 2:
        raise ConfigError(
            f"--per-participant {per_participant}: must be an even number >= 2 (half victim, half surrogate)"
        )
    if per_participant > n_inputs:
        raise ConfigError(
            f"--per-participant {per_participant} needs at least that many distinct inputs, "
            f"but only {n_inputs} paired outputs were found",
            hint="lower --per-participant or add images; one input is never shown twice",
        )


def _pair_by_stem(folder: Path, what: str) -> dict[str, Path]:
    from copymark.images import list_images

    if not folder.is_dir():
        raise DataError(f"{what} folder not found: {folder}", hint="pass an existing folder of images")
    found: dict[str, Path] = {}
    for p in list_images(folder):
        if p.stem in found:
            raise DataError(
                f"{what} folder {folder} has two images with stem '{p.stem}': {found[p.stem].name}, {p.name}",
                hint="outputs are paired by file name without extension; rename one",
            )
        found[p.stem] = p
    if not found:
        raise DataError(f"{what} folder {folder} contains no images (png, jpg, ...)")
    return found


def _import_image(src: Path, images_dir: Path, used: set[str]) -> ImageRef:
    from copymark.images import open_image

    img = open_image(src).convert("RGB")  # raises ImageError naming the file if corrupt
    while True:
        item_id = secrets.token_hex(8)
        if item_id not in used:
            used.add(item_id)
            break
    name = f"{item_id}.png"
    img.save(images_dir / name, format="PNG")  # re-encoded: no EXIF or format hints survive
    return ImageRef(item_id=item_id, file=f"{IMAGES_DIR}/{name}", source=str(src))


def create_study(
    victim_dir: str | Path,
    surrogate_dir: str | Path,
    style_examples: str | Path,
    out: str | Path,
    *,
    per_participant: int = 20,
    seed: int = 0,
    attention_checks: int = 0,
    input_dir: str | Path | None = None,
    title: str = "Image style study",
    question: str = DEFAULT_QUESTION,
    scale_labels: list[str] | None = None,
    demographics: list[str] | None = None,
) -> StudyConfig:
    """Build a study folder at ``out`` (must not exist or be empty); returns its config."""
    from copymark.files import atomic_write_json
    from copymark.images import list_images

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataError(
            f"study folder {out} already exists and is not empty",
            hint="choose a new --out folder; an existing study's answers are never overwritten",
        )
    victims = _pair_by_stem(Path(victim_dir), "victim")
    surrogates = _pair_by_stem(Path(surrogate_dir), "surrogate")
    only_v, only_s = sorted(set(victims) - set(surrogates)), sorted(set(surrogates) - set(victims))
    if only_v or only_s:
        raise DataError(
            f"victim and surrogate outputs do not pair up by file stem: only victim: {only_v[:5]}"
            f"{'...' if len(only_v) > 5 else ''}; only surrogate: {only_s[:5]}{'...' if len(only_s) > 5 else ''}",
            hint="both folders must hold one output per input, with the same file names",
        )
    originals = _pair_by_stem(Path(input_dir), "input") if input_dir is not None else {}
    missing = sorted(set(victims) - set(originals)) if input_dir is not None else []
    if missing:
        raise DataError(
            f"input folder {input_dir} lacks the originals of {missing[:5]}",
            hint="--input-dir must hold each input image under the same file stem",
        )
    examples = list_images(style_examples) if Path(style_examples).is_dir() else None
    if not examples:
        raise DataError(
            f"style examples folder {style_examples} is missing or has no images",
            hint="--style-examples: a few images in the target style, shown in the instructions",
        )
    _check_design(len(victims), per_participant)
    check_questions(demographics or [])  # before any file is made
    if attention_checks > per_participant:
        raise ConfigError(f"--attention-checks {attention_checks} exceeds --per-participant {per_participant}")

    images_dir = out / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    inputs = []
    for stem in sorted(victims):
        inputs.append(
            InputItem(
                input_id=stem,
                victim=_import_image(victims[stem], images_dir, used),
                surrogate=_import_image(surrogates[stem], images_dir, used),
                original=_import_image(originals[stem], images_dir, used) if originals else None,
            )
        )
    ex_refs = [_import_image(p, images_dir, used) for p in examples]
    rng = np.random.default_rng([seed, 7])
    attention = []
    if attention_checks:
        # one check image per style example (a second, independent copy with its own id)
        for p in examples:
            attention.append(AttentionItem(image=_import_image(p, images_dir, used), expected=int(rng.integers(1, 6))))
    cfg = StudyConfig(
        title=title,
        question=question,
        scale_labels=scale_labels or list(DEFAULT_LABELS),
        seed=seed,
        per_participant=per_participant,
        attention_checks=attention_checks,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        inputs=inputs,
        examples=ex_refs,
        attention=attention,
        demographics=demographics or [],
    )
    atomic_write_json(out / STUDY_FILE, cfg.model_dump(mode="json"))
    return cfg


def load_study(folder: str | Path) -> StudyConfig:
    """Read and validate ``study.json`` of a study folder."""
    p = Path(folder)
    if not (p / STUDY_FILE).is_file():
        raise DataError(f"{p} is not a study folder (no {STUDY_FILE})", hint="create one with `copymark study create`")
    cfg = load_config(StudyConfig, p / STUDY_FILE)
    _check_design(len(cfg.inputs), cfg.per_participant)
    return cfg


def participant_plan(cfg: StudyConfig, index: int) -> list[PlanItem]:
    """The seeded sequence of pages for participant number ``index`` (0, 1, 2, ...).

    ``per_participant`` distinct inputs; a random half rated through the victim, the other half
    through the surrogate; shuffled; ``attention_checks`` instructed-response items inserted at
    random positions (never first). Depends only on the study seed and ``index``.
    """
    rng = np.random.default_rng([cfg.seed, 1, index])
    k = cfg.per_participant
    chosen = rng.choice(len(cfg.inputs), size=k, replace=False)
    models = np.array(["victim"] * (k // 2) + ["surrogate"] * (k // 2))
    rng.shuffle(models)
    items = []
    for idx, model in zip(chosen, models):
        inp = cfg.inputs[int(idx)]
        ref = inp.victim if model == "victim" else inp.surrogate
        items.append(dict(item_id=ref.item_id, model=str(model), input_id=inp.input_id))
    if cfg.attention_checks and cfg.attention:
        picks = rng.choice(
            len(cfg.attention), size=cfg.attention_checks, replace=cfg.attention_checks > len(cfg.attention)
        )
        for a in picks:
            att = cfg.attention[int(a)]
            pos = int(rng.integers(1, len(items) + 1))
            items.insert(pos, dict(item_id=att.image.item_id, model="attention", input_id=None, expected=att.expected))
    return [PlanItem(position=i, **it) for i, it in enumerate(items)]


def image_index(cfg: StudyConfig) -> dict[str, str]:
    """Map of every servable ``item_id`` to its file (relative to the study folder)."""
    out: dict[str, str] = {}
    for inp in cfg.inputs:
        for ref in (inp.victim, inp.surrogate, inp.original):
            if ref is not None:
                out[ref.item_id] = ref.file
    for ref in cfg.examples:
        out[ref.item_id] = ref.file
    for att in cfg.attention:
        out[att.image.item_id] = att.image.file
    return out


def originals_by_item(cfg: StudyConfig) -> dict[str, str]:
    """Map of output ``item_id`` to the ``item_id`` of its original input (when the study has them)."""
    out = {}
    for inp in cfg.inputs:
        if inp.original is not None:
            out[inp.victim.item_id] = inp.original.item_id
            out[inp.surrogate.item_id] = inp.original.item_id
    return out
