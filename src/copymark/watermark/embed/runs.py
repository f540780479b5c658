"""The embedding run: what ``copymark protect`` adds to the one run orchestrator for the phase that
trains the host on its triggers (:mod:`copymark.train.api`: validation before the run folder,
seeding, the shared loop, checkpoints, exact resume, AMP, DDP).

Its config.json (:class:`EmbedRunConfig`) is self-contained: the method's procedure config, the
host architecture, the data and its split, and the trigger set spelled out (cover keys, secret
keys, verification labels, and for Two-Phase the folder of trigger PNGs), so a resumed run
rebuilds exactly the same triggers. The host may start from the unprotected host
(``init_from``, the orchestrator's ``--init-from`` path); an end-to-end codec may start from a
trained codec checkpoint (``codec_from``). ``finish`` hands the trained procedure back to the
caller, which evaluates it and writes the protected model and the kit.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from copymark.config import StrictModel
from copymark.errors import WeightsError
from copymark.runs import Run
from copymark.train.api import RunConfig, RunData, RunKind, resume_run, start_run
from copymark.train.classifier import ClassifierDataConfig, ClassifierNetConfig, augmentation, read_splits
from copymark.train.loop import Procedure, TrainResult
from copymark.watermark.embed.acsac19 import ACSAC19, ACSAC19Config
from copymark.watermark.embed.base import EmbedProcedure
from copymark.watermark.embed.e2e_extraction import E2EExtraction, E2EExtractionConfig
from copymark.watermark.embed.two_phase import TwoPhaseConfig, TwoPhaseFinetune

EmbedConfig = Annotated[ACSAC19Config | E2EExtractionConfig | TwoPhaseConfig, Field(discriminator="kind")]
METHODS: tuple[str, ...] = ("acsac19", "e2e-extraction", "two-phase")


class TriggerSpec(StrictModel):
    """The trigger set of an embedding run, spelled out."""

    cover_keys: list[str] = Field(
        description="keys (paths relative to the data folder) of the covers, in trigger order"
    )
    cover_labels: list[int]
    labels: list[int] = Field(description="verification label of each trigger")
    reference_answers: list[int] = Field(description="the unprotected model's answer the labels avoid")
    secrets_dir: str
    secret_keys: list[str] = Field(description="key of each trigger's secret in secrets_dir")
    secrets_policy: Literal["resize", "center_crop"] = "resize"
    trigger_dir: str | None = Field(None, description="two-phase: folder of the 8-bit trigger PNGs t00000.png ...")


class EmbedRunConfig(RunConfig):
    task: Literal["protect-embed"] = "protect-embed"
    procedure: EmbedConfig
    host: ClassifierNetConfig
    data: ClassifierDataConfig
    triggers: TriggerSpec
    codec_from: str | None = Field(None, description="codec checkpoint the end-to-end codec starts from")


def trigger_file(i: int) -> str:
    return f"t{i:05d}.png"


def load_secret_images(spec: TriggerSpec, size: int) -> torch.Tensor:
    """Each trigger's secret (float ``N x 3 x S x S``) from the secrets folder, by key."""
    from copymark.errors import DataError
    from copymark.stego.imagesets import load_image_set

    s = load_image_set(spec.secrets_dir, size, policy=spec.secrets_policy, what="secret folder")
    pos = {k: i for i, k in enumerate(s.keys)}
    missing = [k for k in spec.secret_keys if k not in pos]
    if missing:
        raise DataError(
            f"secret folder {spec.secrets_dir}: missing {missing[:3]}", hint="the folder changed since the run started"
        )
    return s.batch([pos[k] for k in spec.secret_keys])


def load_trigger_images(folder: str | Path, n: int) -> torch.Tensor:
    from copymark.images import load_image

    return torch.stack([load_image(Path(folder) / trigger_file(i)) for i in range(n)])


class EmbedRuns(RunKind[EmbedRunConfig, dict[str, Any]]):
    """The embedding phase of ``copymark protect`` (ACSAC19, E2E-Extraction, Two-Phase fine-tuning)."""

    task = "protect-embed"
    config_model = EmbedRunConfig

    def data(self, config: EmbedRunConfig) -> RunData:
        splits = read_splits(config.data)
        train = splits.train.with_transform(augmentation(config.procedure.augment), seed=config.loop.seed)
        return RunData(train, held_out=splits)

    def procedure(self, config: EmbedRunConfig) -> Procedure:
        from copymark.watermark.embed.triggers import load_covers

        t, p, iters = config.triggers, config.procedure, config.loop.iters

        @functools.cache  # read once, also when cover negatives need the covers an end-to-end method has
        def covers() -> torch.Tensor:
            return load_covers(read_splits(config.data, check_sizes=False).train, t.cover_keys)[0]

        proc: EmbedProcedure
        match p:
            case TwoPhaseConfig():
                if t.trigger_dir is None:
                    raise WeightsError("a two-phase embedding run needs its trigger folder (triggers.trigger_dir)")
                triggers = load_trigger_images(t.trigger_dir, len(t.labels))
                proc = TwoPhaseFinetune(p, config.host, triggers, t.labels, iters)
            case ACSAC19Config():
                proc = ACSAC19(p, config.host, covers(), load_secret_images(t, config.data.size), t.labels, iters)
            case E2EExtractionConfig():
                proc = E2EExtraction(p, config.host, covers(), load_secret_images(t, config.data.size), t.labels, iters)
        if p.cover_negatives:
            proc.add_cover_negatives(covers(), t.cover_labels)
        if config.codec_from is not None:
            init_codec(proc, config.codec_from)
        return proc

    def finish(self, run: Run | None, proc: Procedure, data: RunData, result: TrainResult) -> dict[str, Any]:
        return {"procedure": proc, "result": result, "splits": data.held_out}

    def continue_command(self, config: EmbedRunConfig, run_dir: Path, iters: int) -> str:
        return f"copymark protect ... --iters {iters} (a new protect run; the embedding phase is resumed only to its own length)"


EMBED_RUNS = EmbedRuns()


def init_codec(proc: Procedure, folder: str | Path) -> None:
    """Load a trained codec checkpoint into the procedure's codec (same architecture, strict)."""
    from copymark.checkpoints import load_strict
    from copymark.stego.codecs import NeuralCodec, load_codec

    codec = load_codec(folder)
    if not isinstance(codec, NeuralCodec):
        raise WeightsError(f"{folder}: an {codec.kind} codec has no weights to start a learned hiding net from")
    here = proc.net_configs["codec"]
    if codec.config.model_dump() != here.model_dump():
        raise WeightsError(
            f"{folder}: codec {codec.config.model_dump()} differs from the run's {here.model_dump()}",
            hint="give the method the codec's architecture (--method-config '{\"codec\": {...}}')",
        )
    load_strict(proc.nets["codec"], codec.net.state_dict(), str(folder))


def train_embed(config: EmbedRunConfig, run_dir: str | Path) -> dict[str, Any]:
    return start_run(EMBED_RUNS, config, run_dir)


def resume_embed(run_dir: str | Path, device: str | None = None, progress: bool | None = None) -> dict[str, Any]:
    return resume_run(EMBED_RUNS, run_dir, device=device, progress=progress)
