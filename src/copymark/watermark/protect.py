"""``copymark protect``: watermark a classifier and write the ownership kit (the owner's side).

:func:`protect` runs the phases of one protection in a run folder, each phase a run of its own
on the shared loop (checkpoints, exact resume, AMP, ``--device cuda``), then evaluates and
signs. The procedures are DDP-ready like every procedure of the loop, but the pipeline itself
(evaluation, kit) runs as one process, so ``protect`` refuses to start under ``torchrun``::

    RUN/
      config.json        the resolved ProtectConfig (everything below follows from it)
      host/              phase 1: the unprotected host (a `copymark classifier train` run), unless --host
      codec-covers/      two-phase: the covers the codec trains on (drawn from the train split)
      codec-run/         phase 2, two-phase: the codec (a `copymark stego train` run), unless --codec
      triggers/          two-phase: the 8-bit trigger PNGs the host is fine-tuned on
      embed/             phase 3: the embedding run (ACSAC19, E2E-Extraction, or Two-Phase fine-tuning)
      model/             the protected classifier (a copymark checkpoint; `copymark classifier eval` reads it)
      codec/             the codec that made the triggers (a codec checkpoint; none for lsb)
      kit/               the signed ownership kit (copymark.watermark.kit): triggers, secrets, labels, codec
      commitment.txt     the kit's one-line commitment (sha256 of its manifest), to publish
      visibility.png     cover | trigger | |trigger - cover| x 5 | secret | revealed (first triggers)
      recovered/*.png    the secret revealed from each trigger (named like the kit's triggers; not acsac19)
      metrics.json       main-task accuracy before/after (val, test), trigger accuracy, PSNR/SSIM, ...

**Before the run folder is created** everything that can be refused is checked
(:func:`prepare`): the private key (and its passphrase), the device, the data (classes >= 3,
image sizes, non-empty splits), the secrets folder (apart from the data, decodable, no secret
identical to a cover), trigger and batch counts, a given host (its classes, names, input
size and recorded split must match the data) and a given codec. A refused start leaves
nothing behind.

**Triggers and labels** (:mod:`~copymark.watermark.embed.triggers`,
:mod:`~copymark.watermark.embed.labels`): covers are drawn from the train split by the seed;
labels are never the cover's class nor the unprotected host's answer (on the trigger for
Two-Phase, on the cover for the end-to-end methods); the kit records both.

**Resume**: ``protect(..., resume=True)`` reads ``RUN/config.json`` back, skips finished phases,
resumes an unfinished one exactly from its checkpoint, and redoes the final evaluation and kit
when the kit is missing or incomplete.

**Measured** (``metrics.json``): ``accuracy_before`` / ``accuracy_after`` (val and test splits
of the data; "before" is the unprotected host), ``trigger_accuracy`` of the protected model on
the stored 8-bit triggers, ``unprotected_agreement`` (the unprotected host's answers on the
same triggers that equal the labels: what an innocent model "verifies"), ``cover_accuracy``
(the protected model on the covers themselves, their own classes), ``cover_label_agreement``
(how often it answers a bare cover with its trigger's verification label: near 1, the model
has memorised the cover images rather than learnt the hidden secret, so the evidence is the
covers more than the watermark; measured 0.91-1.00 for the end-to-end methods at CPU scale,
benchmarks/results/protection_cifar10_cpu.json), ``trigger_psnr`` / ``trigger_ssim`` (trigger vs
cover) and, for E2E-Extraction and Two-Phase, ``secret_psnr`` / ``secret_ssim`` (the secret
revealed from the stored trigger vs the original), all from :mod:`copymark.metrics.fidelity`
on 8-bit RGB.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError

from copymark.config import StrictModel, format_validation_error
from copymark.errors import ConfigError, DataError
from copymark.train.classifier import ClassifierDataConfig, ClassifierTrainConfig
from copymark.train.loop import LoopConfig
from copymark.train.stego import StegoTrainConfig
from copymark.watermark.embed.runs import METHODS, EmbedConfig

Method = Literal["acsac19", "e2e-extraction", "two-phase"]
HOST_RUN, CODEC_RUN, CODEC_COVERS, TRIGGERS_DIR, EMBED_RUN = "host", "codec-run", "codec-covers", "triggers", "embed"
MODEL, CODEC, KIT, COMMITMENT, VISIBILITY = "model", "codec", "kit", "commitment.txt", "visibility.png"
RECOVERED = "recovered"


class ProtectConfig(StrictModel):
    """The resolved config of a protection run (its config.json)."""

    task: Literal["protect"] = "protect"
    method: Method
    data: ClassifierDataConfig
    secrets: str = Field(description="folder of secret images (apart from the data)")
    secrets_policy: Literal["resize", "center_crop"] = "resize"
    triggers: int = Field(500, ge=1, description="number of triggers (the reference: 500, about 1% of CIFAR-10)")
    seed: int = Field(0, description="seed of the covers, the secrets' order, the labels and every phase")
    key: str = Field(description="the owner's Ed25519 private key (PEM) that signs the kit")
    host_from: str | None = Field(None, description="a trained unprotected host (classifier run or checkpoint)")
    host: ClassifierTrainConfig = Field(
        description="the unprotected host's training (its net is the protected model's)"
    )
    host_loop: LoopConfig
    start_from: Literal["scratch", "unprotected"] = Field(
        "scratch",
        description="acsac19 / e2e-extraction: host starts fresh (the reference) or from the unprotected host",
    )
    codec_from: str | None = Field(
        None, description="two-phase: a trained codec checkpoint or 'lsb'; end-to-end: a codec to start from"
    )
    codec: StegoTrainConfig = Field(default_factory=StegoTrainConfig, description="two-phase: the codec's training")
    codec_loop: LoopConfig
    codec_covers: int | None = Field(
        None, ge=1, description="two-phase: covers the codec trains on (default: the triggers')"
    )
    embed: EmbedConfig
    embed_loop: LoopConfig


# ---------------------------------------------------------------------------------------------
# building the config


def _merge(base: StrictModel, overrides: dict[str, Any] | None, where: str) -> Any:
    from copymark.train.api import _deep_merge

    try:
        return type(base).model_validate(_deep_merge(base.model_dump(), dict(overrides or {})))
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, where), hint="see `copymark protect --help` for the keys"
        ) from None


def default_embed(method: str) -> Any:
    """The default procedure config of ``method``."""
    from copymark.watermark.embed.acsac19 import ACSAC19Config
    from copymark.watermark.embed.e2e_extraction import E2EExtractionConfig
    from copymark.watermark.embed.two_phase import TwoPhaseConfig

    match method:
        case "acsac19":
            return ACSAC19Config()
        case "e2e-extraction":
            return E2EExtractionConfig()
        case "two-phase":
            return TwoPhaseConfig()
    raise ConfigError(f"unknown --method {method!r}", hint=f"one of {', '.join(METHODS)}")


def make_protect_config(
    method: str,
    data_dir: str | Path,
    secrets: str | Path,
    key: str | Path,
    *,
    net: str = "resnet18",
    host_from: str | Path | None = None,
    host_overrides: dict[str, Any] | None = None,
    codec_from: str | None = None,
    codec_kind: str = "en2d",
    codec_overrides: dict[str, Any] | None = None,
    method_overrides: dict[str, Any] | None = None,
    size: int | None = None,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    salt: str = "",
    resize_policy: str = "error",
    triggers: int = 500,
    trigger_batch: int | None = None,
    start_from: str = "scratch",
    codec_covers: int | None = None,
    seed: int = 0,
    batch_size: int = 100,
    iters: int = 1000,
    host_iters: int = 1000,
    codec_iters: int = 1000,
    codec_batch_size: int | None = None,
    **loop: Any,
) -> ProtectConfig:
    """Assemble a :class:`ProtectConfig`; ``loop`` (device, amp, progress, ...) applies to every phase.

    With ``host_from`` the host's architecture is the given model's; with ``codec_from`` (a
    neural codec) an end-to-end method's codec takes its architecture.
    """
    from copymark.train.classifier import data_config, load_classifier, procedure_config, read_splits
    from copymark.train.stego import STUDY_DEFAULTS, stego_train_config

    if method not in METHODS:
        raise ConfigError(f"unknown --method {method!r}", hint=f"one of {', '.join(METHODS)}")
    if size is None and host_from is not None:
        size = load_classifier(host_from)[1].input_size
    data = data_config(data_dir, size, split, salt, resize_policy)
    classes = read_splits(data, check_sizes=False).classes
    host = procedure_config(net, classes, data.size, host_overrides)
    if host_from is not None:
        _, hcfg, _ = load_classifier(host_from)
        host = host.model_copy(update={"net": hcfg})
    if codec_kind not in STUDY_DEFAULTS:
        raise ConfigError(f"--codec-kind {codec_kind!r}", hint="en2d or gglnet")
    codec = _merge(stego_train_config(codec_kind), codec_overrides, "--codec-config")  # type: ignore[arg-type]
    embed = _merge(default_embed(method), method_overrides, "--method-config")
    if trigger_batch is not None:
        embed = embed.model_copy(update={"trigger_batch": trigger_batch})
    if codec_from is not None and codec_from != "lsb":
        from copymark.stego.codecs import NeuralCodec, load_codec

        c = load_codec(codec_from)
        if method == "two-phase":
            codec = codec.model_copy(update={"codec": c.config})
        elif isinstance(c, NeuralCodec):
            embed = embed.model_copy(update={"codec": c.config})
    elif method != "two-phase" and (method_overrides or {}).get("codec") is None:
        embed = embed.model_copy(update={"codec": codec.codec})  # --codec-kind picks the hiding net
    try:
        common = {"seed": seed, **loop}
        host_loop = LoopConfig(iters=host_iters, batch_size=batch_size, **common)
        embed_loop = LoopConfig(iters=iters, batch_size=batch_size, **common)
        cb = codec_batch_size if codec_batch_size is not None else int(STUDY_DEFAULTS[codec.codec.kind]["batch_size"])
        codec_loop = LoopConfig(iters=codec_iters, batch_size=cb, **common)
        return ProtectConfig(
            method=method, data=data, secrets=str(secrets), triggers=triggers, seed=seed, key=str(key),
            host_from=str(host_from) if host_from else None, host=host, host_loop=host_loop,
            start_from=start_from, codec_from=codec_from, codec=codec, codec_loop=codec_loop,
            codec_covers=codec_covers, embed=embed, embed_loop=embed_loop,
        )  # type: ignore[arg-type]  # fmt: skip
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "protect options")) from None


# ---------------------------------------------------------------------------------------------
# validation


@dataclass
class Prepared:
    """Everything :func:`prepare` checked and loaded."""

    private_key: Any
    splits: Any
    cover_keys: list[str]
    cover_labels: list[int]
    covers: torch.Tensor
    secret_keys: list[str]
    secrets: torch.Tensor
    n_secrets: int
    host: tuple[Any, Any, Path] | None  # (net, config, folder) of a given unprotected host
    codec: Any  # a given codec (two-phase), or None


def _codec_split(n_codec: int, n_secrets: int) -> int:
    """Images of each folder the codec run holds out for its quality report."""
    return min(16, n_codec // 5, n_secrets // 5)


def _check_host_split(cfg: ProtectConfig, prov: dict[str, Any], folder: Path, splits: Any) -> None:
    """The given host was trained on this data's train split (so 'before' is measured on held-out
    images). The same folder path is enough; a moved or copied folder is accepted when the host's
    recorded split (its run's split.json) holds exactly the keys of this data's split."""
    from copymark.files import read_json
    from copymark.train.classifier import SPLIT_FILE

    recorded = prov.get("data")
    if not isinstance(recorded, dict):
        return  # a checkpoint without provenance: nothing to compare (recorded in metrics as unknown)
    same_dir = Path(str(recorded.get("dir"))).resolve() == Path(cfg.data.dir).resolve()
    if not same_dir:
        split_file = folder.parent / SPLIT_FILE
        if split_file.is_file():
            theirs, ours = read_json(split_file, DataError), splits.manifest.to_json()
            same_dir = all(theirs.get(k) == ours.get(k) for k in ("hash_method", "salt", "ratios", "splits"))
    diff = [
        k
        for k in ("layout", "split", "salt")
        if list(_as_list(recorded.get(k))) != list(_as_list(getattr(cfg.data, k)))
    ]
    if not same_dir or diff:
        what = ["dir"] if not same_dir else []
        raise DataError(
            f"--host {folder} was trained on another data folder or split ({', '.join(what + diff)} differ): "
            "its 'before' accuracy would be measured on images it may have trained on",
            hint=f"protect with the host's data ({recorded.get('dir')}, split {recorded.get('split')}, "
            f"salt {recorded.get('salt')!r}), or omit --host to train one here",
        )


def _as_list(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def prepare(cfg: ProtectConfig, passphrase: str | None = None) -> Prepared:
    """Check and load everything a protection needs (see the module docstring); nothing is written."""
    from copymark.stego.imagesets import check_size, load_image_set
    from copymark.train.api import check_device
    from copymark.train.classifier import check_fits_data, load_classifier, read_splits
    from copymark.train.loop import EpochSampler
    from copymark.watermark.embed.triggers import (
        assign_secrets,
        check_disjoint,
        check_secrets_folder,
        load_covers,
        select_covers,
    )
    from copymark.watermark.kit import load_private_key

    key = load_private_key(cfg.key, passphrase)
    for loop in (cfg.host_loop, cfg.codec_loop, cfg.embed_loop):
        check_device(loop)
    check_size(cfg.data.size, "the image size")
    splits = read_splits(cfg.data)
    k = len(splits.classes)
    if k < 3:
        raise DataError(
            f"{cfg.data.dir} has {k} classes; verification labels need at least 3 "
            "(each differs from the cover's class and from an unprotected model's answer)",
            hint="protect a classifier of 3 or more classes",
        )
    check_secrets_folder(cfg.secrets, cfg.data.dir)
    sset = load_image_set(cfg.secrets, cfg.data.size, policy=cfg.secrets_policy, what="secret folder")
    n = cfg.triggers
    train = splits.train
    select_covers(len(train), n, cfg.seed)  # enough training images for the triggers
    n_codec = max(n, cfg.codec_covers or 0) if cfg.method == "two-phase" else n
    if n_codec > len(train):
        raise DataError(
            f"--codec-covers {n_codec}: the train split has only {len(train)} images",
            hint="lower --codec-covers",
        )
    positions = select_covers(len(train), n_codec, cfg.seed)
    if cfg.embed.trigger_batch > n:
        raise DataError(
            f"--trigger-batch {cfg.embed.trigger_batch} is larger than the {n} triggers",
            hint="lower --trigger-batch or raise --triggers",
        )
    for loop, what in ((cfg.embed_loop, "embedding"), (cfg.host_loop, "host training")):
        if what == "host training" and cfg.host_from is not None:
            continue
        try:
            EpochSampler(len(train), loop.batch_size, loop.seed)
        except DataError as err:
            raise DataError(
                f"{what}: the train split ({err.message})", hint="lower --batch-size or add images"
            ) from None
    cover_keys = [train.keys[i] for i in positions[:n]]
    covers, cover_labels = load_covers(train, cover_keys)
    secret_idx = assign_secrets(n, len(sset), cfg.seed)
    secrets = sset.batch(secret_idx)
    check_disjoint(covers, cover_keys, sset.floats(), sset.keys)
    host = None
    if cfg.host_from is not None:
        net, hcfg, prov = load_classifier(cfg.host_from)
        from copymark.train.classifier import classifier_folder

        folder = classifier_folder(cfg.host_from)
        check_fits_data(hcfg, splits.classes, cfg.data.size, f"--host {folder}")
        if hcfg.model_dump() != cfg.host.net.model_dump():
            raise ConfigError(f"--host {folder}: its architecture differs from the config's host.net")
        _check_host_split(cfg, prov, folder, splits)
        host = (net, hcfg, folder)
    codec = None
    if cfg.codec_from is not None:
        codec = _load_codec(cfg.codec_from)
        if cfg.method != "two-phase":
            from copymark.stego.codecs import NeuralCodec

            if not isinstance(codec, NeuralCodec):
                raise ConfigError(
                    f"--codec {cfg.codec_from}: {cfg.method} trains its hiding net; an lsb codec cannot start it",
                    hint="pass a trained en2d/gglnet checkpoint, or no --codec",
                )
            if codec.config.model_dump() != cfg.embed.codec.model_dump():  # type: ignore[union-attr]
                raise ConfigError(f"--codec {cfg.codec_from}: its architecture differs from the method's codec")
    elif cfg.method == "two-phase":
        holdout = _codec_split(len(positions), len(sset))
        if len(positions) - holdout < cfg.codec_loop.batch_size:
            raise DataError(
                f"codec training: {len(positions)} covers ({holdout} held out) are fewer than one batch of "
                f"{cfg.codec_loop.batch_size}",
                hint="lower --codec-batch-size, or raise --codec-covers / --triggers",
            )
    secret_keys = [sset.keys[i] for i in secret_idx]
    return Prepared(key, splits, cover_keys, cover_labels, covers, secret_keys, secrets, len(sset), host, codec)


def _load_codec(spec: str) -> Any:
    from copymark.stego.codecs import LSBCodec, load_codec

    return LSBCodec() if spec == "lsb" else load_codec(spec)


# ---------------------------------------------------------------------------------------------
# the phases


def _host_phase(
    cfg: ProtectConfig, run_path: Path, prep: Prepared, say: Callable[[str], None]
) -> tuple[Any, Any, Path]:
    from copymark.train.classifier import (
        MODEL_EXPORT,
        ClassifierRunConfig,
        load_classifier,
        resume_classifier,
        train_classifier,
    )

    if prep.host is not None:
        say(f"host: the given unprotected model {prep.host[2]}")
        return prep.host
    sub = run_path / HOST_RUN
    if not (sub / MODEL_EXPORT / "model.safetensors").is_file():
        if (sub / "config.json").is_file():
            say(f"host: resuming {sub}")
            resume_classifier(sub, progress=cfg.host_loop.progress)
        else:
            say(f"host: training the unprotected {cfg.host.net.kind} in {sub}")
            train_classifier(ClassifierRunConfig(procedure=cfg.host, loop=cfg.host_loop, data=cfg.data), sub)
    net, hcfg, _ = load_classifier(sub / MODEL_EXPORT)
    return net, hcfg, sub / MODEL_EXPORT


def _codec_phase(cfg: ProtectConfig, run_path: Path, prep: Prepared, say: Callable[[str], None]) -> Any:
    from copymark.images import save_image
    from copymark.stego.codecs import load_codec
    from copymark.stego.training import CODEC_EXPORT, StegoDataConfig, StegoRunConfig, resume_codec, train_codec
    from copymark.watermark.embed.triggers import load_covers, select_covers

    if prep.codec is not None:
        say(f"codec: the given {prep.codec.kind} codec {cfg.codec_from}")
        return prep.codec
    sub = run_path / CODEC_RUN
    if not (sub / CODEC_EXPORT / "model.safetensors").is_file():
        if (sub / "config.json").is_file():
            say(f"codec: resuming {sub}")
            resume_codec(sub, progress=cfg.codec_loop.progress)
        else:
            train = prep.splits.train
            n_codec = max(cfg.triggers, cfg.codec_covers or 0)
            keys = [train.keys[i] for i in select_covers(len(train), n_codec, cfg.seed)]
            images, _ = load_covers(train, keys)
            folder = run_path / CODEC_COVERS
            for i, x in enumerate(images):
                save_image(x, folder / f"c{i:05d}.png")
            holdout = _codec_split(n_codec, prep.n_secrets)
            data = StegoDataConfig(
                covers=str(folder), secrets=cfg.secrets, size=cfg.data.size, holdout=holdout,
                resize_policy=cfg.secrets_policy,
            )  # fmt: skip
            say(f"codec: training {cfg.codec.codec.kind} on {n_codec} covers in {sub}")
            train_codec(StegoRunConfig(procedure=cfg.codec, loop=cfg.codec_loop, data=data), sub)
    return load_codec(sub / CODEC_EXPORT)


def _hide(codec: Any, covers: torch.Tensor, secrets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit triggers and the secrets revealed from them."""
    from copymark.stego.quality import run_codec

    return run_codec(codec, covers, secrets, quantize_stego=True)


def _embed_phase(embed_cfg: Any, sub: Path, progress: bool, say: Callable[[str], None]) -> dict[str, Any]:
    from copymark.watermark.embed.runs import resume_embed, train_embed

    if (sub / "config.json").is_file():
        say(f"embedding: resuming {sub}")
        return resume_embed(sub, progress=progress)
    say(f"embedding: {embed_cfg.procedure.kind} in {sub}")
    return train_embed(embed_cfg, sub)


# ---------------------------------------------------------------------------------------------
# the pipeline


def _summary(values: torch.Tensor) -> dict[str, Any]:
    """Mean, std, n, CI (the project's one summary convention) and the worst image (min)."""
    from copymark.metrics.summary import summarize

    v = values.double().cpu()
    return {**summarize(v.tolist()).to_dict(), "min": float(v.min())}


def _visibility(
    covers: torch.Tensor, triggers: torch.Tensor, secrets: torch.Tensor, revealed: torch.Tensor | None
) -> torch.Tensor:
    cols = [covers, triggers, ((triggers - covers).abs() * 5).clamp(0, 1), secrets]
    if revealed is not None:
        cols.append(revealed)
    rows = torch.cat(cols, dim=3)
    return torch.cat(list(rows), dim=1).clamp(0, 1)


def protect(
    cfg: ProtectConfig | None,
    run_dir: str | Path,
    passphrase: str | None = None,
    resume: bool = False,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a protection in ``run_dir``; returns what went into metrics.json.

    ``cfg`` None with ``resume``: the run's own config.json.
    """
    import os

    from copymark.runs import CONFIG, check_new_run_dir, create_run, open_run, read_json

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "copymark protect runs as one process (its evaluation and kit are not split across ranks)",
            hint="run it without torchrun; --device cuda trains every phase on the GPU",
        )
    say = say or (lambda _msg: None)
    run_path = Path(run_dir)
    if resume:
        if not (run_path / CONFIG).is_file():
            raise ConfigError(f"{run_path} is not a run folder (no config.json); nothing to resume",
                              hint="start the protection without --resume")  # fmt: skip
        raw = read_json(run_path / CONFIG)
        if raw.get("task") != "protect":
            raise ConfigError(
                f"{run_path}: a {raw.get('task')!r} run, not a protect run", hint="resume it with its own command"
            )
        try:
            cfg = ProtectConfig.model_validate(raw)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, f"{run_path}/config.json")) from None
        if (run_path / KIT / "manifest.json").is_file():
            say(f"nothing to do: {run_path} is complete")
            return open_run(run_path).metrics()
    else:
        assert cfg is not None
        check_new_run_dir(run_path)
    assert cfg is not None
    prep = prepare(cfg, passphrase)
    run = (
        open_run(run_path)
        if resume
        else create_run(run_path, cfg.model_dump(), device=cfg.embed_loop.device, seed=cfg.seed)
    )
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        return _run(cfg, run, prep, say, timings, t0)
    except BaseException:
        run.log("stopped (resume with --resume)")
        raise


def _run(
    cfg: ProtectConfig, run: Any, prep: Prepared, say: Callable[[str], None], timings: dict[str, float], t0: float
) -> dict[str, Any]:
    from copymark.images import encode_png, quantize, save_image
    from copymark.metrics.fidelity import psnr, ssim
    from copymark.nets.build import save_net
    from copymark.runs import read_json
    from copymark.stego.codecs import NeuralCodec, save_codec
    from copymark.train.classifier import evaluate, predict
    from copymark.watermark.embed.labels import LABEL_RULE, check_labels, verification_labels
    from copymark.watermark.embed.runs import EmbedRunConfig, TriggerSpec, load_trigger_images, trigger_file
    from copymark.watermark.kit import KitTrigger, ModelIdentity, weights_fingerprint, write_kit

    rp, splits, k = run.path, prep.splits, len(prep.splits.classes)
    t = time.perf_counter()
    host_net, host_cfg, host_folder = _host_phase(cfg, rp, prep, say)
    timings["host"] = time.perf_counter() - t
    device = torch.device(cfg.embed_loop.device)
    host_net = host_net.to(device).eval()
    bs = cfg.data.eval_batch_size
    before = {s: evaluate(host_net, splits.split(s).with_transform(None), bs)["accuracy"] for s in ("val", "test")}
    run.log("unprotected host: val %s, test %s", before["val"], before["test"])

    covers, secrets = prep.covers, prep.secrets
    embed_dir = rp / EMBED_RUN
    stored = (
        EmbedRunConfig.model_validate(read_json(embed_dir / "config.json"))
        if (embed_dir / "config.json").is_file()
        else None
    )
    spec: dict[str, Any] = {
        "cover_keys": prep.cover_keys, "cover_labels": prep.cover_labels, "secrets_dir": cfg.secrets,
        "secret_keys": prep.secret_keys, "secrets_policy": cfg.secrets_policy,
    }  # fmt: skip
    codec: Any = None
    fixed = None
    if cfg.method == "two-phase":
        t = time.perf_counter()
        codec = _codec_phase(cfg, rp, prep, say)
        timings["codec"] = time.perf_counter() - t
        if isinstance(codec, NeuralCodec):
            codec.to(device)
        if stored is not None:  # the triggers the host was (being) fine-tuned on, exactly
            fixed = load_trigger_images(rp / TRIGGERS_DIR, cfg.triggers)
        else:
            fixed = _hide(codec, covers.to(device), secrets.to(device))[0].cpu()
            for i, x in enumerate(fixed):
                save_image(x, rp / TRIGGERS_DIR / trigger_file(i))
        spec["trigger_dir"] = str(rp / TRIGGERS_DIR)
        init_from: str | None = str(host_folder)
    else:
        init_from = str(host_folder) if cfg.start_from == "unprotected" else None
    if stored is not None:
        reference, labels = stored.triggers.reference_answers, stored.triggers.labels
    else:
        # the unprotected model's answer on the trigger (two-phase) or, before the trigger exists, on the cover
        reference = predict(host_net, fixed if fixed is not None else covers, bs).tolist()
        labels = verification_labels(prep.cover_labels, reference, k, cfg.seed)
    check_labels(labels, prep.cover_labels, reference)
    embed_cfg = EmbedRunConfig(
        procedure=cfg.embed, host=host_cfg, data=cfg.data, loop=cfg.embed_loop, init_from=init_from,
        triggers=TriggerSpec(labels=labels, reference_answers=reference, **spec),
        codec_from=cfg.codec_from if cfg.method != "two-phase" else None,
    )  # fmt: skip
    t = time.perf_counter()
    out = _embed_phase(embed_cfg, embed_dir, cfg.embed_loop.progress, say)
    timings["embed"] = time.perf_counter() - t
    proc = out["procedure"]
    protected = proc.nets["host"].eval()
    if fixed is not None:
        triggers = fixed
        revealed = torch.cat([codec.reveal(fixed[i : i + bs].to(device)).cpu() for i in range(0, len(fixed), bs)])
    else:
        codec = NeuralCodec(cfg.embed.codec, proc.nets["codec"].eval())  # type: ignore[union-attr]
        triggers, revealed = (x.cpu() for x in _hide(codec, covers.to(device), secrets.to(device)))
    triggers = quantize(triggers)

    say("evaluating the protected model")
    after = {s: evaluate(protected, splits.split(s).with_transform(None), bs)["accuracy"] for s in ("val", "test")}
    labels_t = torch.tensor(labels)
    pred = predict(protected, triggers, bs)
    innocent = predict(host_net, triggers, bs)
    cover_pred = predict(protected, covers, bs)
    metrics: dict[str, Any] = {
        "method": cfg.method,
        "triggers": len(labels),
        "classes": splits.classes,
        "seed": cfg.seed,
        "accuracy_before": before,
        "accuracy_after": after,
        "accuracy_drop_test": (before["test"] - after["test"]) if None not in (before["test"], after["test"]) else None,
        "trigger_accuracy": float((pred == labels_t).double().mean()),
        "trigger_correct": int((pred == labels_t).sum()),
        "unprotected_agreement": float((innocent == labels_t).double().mean()),
        "cover_accuracy": float((cover_pred == torch.tensor(prep.cover_labels)).double().mean()),
        "cover_label_agreement": float((cover_pred == labels_t).double().mean()),
        "chance": 1.0 / k,
        "trigger_psnr": _summary(psnr(triggers, covers)),
        "trigger_ssim": _summary(ssim(triggers, covers)),
        "label_rule": LABEL_RULE,
        "host_from": cfg.host_from,
        "host_split_recorded": prep.host is None or bool(_host_prov(prep)),
    }
    extracts = cfg.method != "acsac19"
    if extracts:
        metrics["secret_psnr"] = _summary(psnr(revealed, secrets))
        metrics["secret_ssim"] = _summary(ssim(revealed, secrets))
        for i, img in enumerate(revealed):  # every recovered secret, named like its trigger in the kit
            save_image(quantize(img), rp / RECOVERED / f"t{i:05d}.png")
    metrics["split_sizes"] = {s: len(splits.split(s)) for s in ("val", "test")}
    n_vis = min(8, len(labels))
    save_image(
        _visibility(covers[:n_vis], triggers[:n_vis], secrets[:n_vis], revealed[:n_vis] if extracts else None),
        rp / VISIBILITY,
    )

    # the protected model, the codec, the kit
    prov = {"run": str(rp), "method": cfg.method, "protected_from": str(host_folder) if init_from else None,
            "data": cfg.data.model_dump(), "kit": str(rp / KIT)}  # fmt: skip
    save_net(rp / MODEL, protected, host_cfg, prov)
    codec_dir = None
    if isinstance(codec, NeuralCodec):
        codec_dir = save_codec(rp / CODEC, codec, {"run": str(rp), "method": cfg.method})
    from copymark.checkpoints import load_checkpoint

    state, _ = load_checkpoint(rp / MODEL)
    identity = ModelIdentity(
        fingerprint=weights_fingerprint(state), num_classes=k, input_size=cfg.data.size, class_names=splits.classes
    )
    kit_triggers = [
        KitTrigger(encode_png(triggers[i]), encode_png(secrets[i]), prep.cover_keys[i], labels[i], prep.cover_labels[i])
        for i in range(len(labels))
    ]
    kit_dir = rp / KIT
    if kit_dir.exists():
        shutil.rmtree(kit_dir)  # an incomplete kit from an interrupted run (a complete one returned above)
    commitment = write_kit(
        kit_dir, triggers=kit_triggers, model=identity, method=cfg.method, private_key=prep.private_key,
        codec_kind=codec.kind, codec_config=codec.config.model_dump(), codec_dir=codec_dir,
        extra={
            "label_rule": LABEL_RULE,
            "reference_answers": reference,
            "reference_on": "trigger" if cfg.method == "two-phase" else "cover",
            "reference_model": weights_fingerprint(load_checkpoint(host_folder)[0]),
            "seed": cfg.seed,
            "data": {"dir": cfg.data.dir, "layout": cfg.data.layout, "split": list(cfg.data.split), "salt": cfg.data.salt},
        },
    )  # fmt: skip
    from copymark.files import atomic_write_bytes

    atomic_write_bytes(rp / COMMITMENT, (commitment + "\n").encode())
    timings["total"] = time.perf_counter() - t0
    metrics.update({
        "commitment": commitment, "kit": str(kit_dir), "model": str(rp / MODEL),
        "codec": str(codec_dir) if codec_dir else None, "fingerprint": identity.fingerprint, "seconds": timings,
    })  # fmt: skip
    run.update_metrics(metrics)
    run.log(
        "protected (%s): test accuracy %.4f -> %.4f, trigger accuracy %.4f (unprotected agrees %.4f), trigger PSNR %.2f dB; kit %s",
        cfg.method, before["test"] or 0.0, after["test"] or 0.0, metrics["trigger_accuracy"],
        metrics["unprotected_agreement"], metrics["trigger_psnr"]["mean"], commitment,
    )  # fmt: skip
    return metrics


def _host_prov(prep: Prepared) -> bool:
    from copymark.checkpoints import read_checkpoint_meta

    if prep.host is None:
        return True
    return isinstance((read_checkpoint_meta(prep.host[2]).get("provenance") or {}).get("data"), dict)


def check_key_file(path: str | Path) -> None:
    """A missing key file, before anything else (the CLI calls it first)."""
    from copymark.watermark.kit import KitError

    if not Path(path).is_file():
        raise KitError(f"private key not found: {path}", hint="create one with `copymark kit keygen --out owner.key`")


__all__ = ["ProtectConfig", "make_protect_config", "prepare", "protect"]
