"""Image-classifier training on the shared loop: ``copymark classifier train`` / ``eval``.

The procedure (:class:`ClassifierProcedure`) minimises cross-entropy with SGD; the run kind
(:data:`CLASSIFIER_RUNS`) adds the data (class folders split 8 : 1 : 1 by
:mod:`copymark.data.class_splits`, or fixed ``train/`` + ``test/`` folders), the export
(``RUN/model``: a copymark checkpoint of the classifier, loadable with
:func:`load_classifier`), the recorded split (``RUN/split.json``) and the accuracy of every
split in ``metrics.json`` (key ``accuracy``). Everything else (validation before the run
folder, seeding, checkpoints, exact resume, AMP, DDP, ``--init-from``) is the orchestrator's
(:mod:`copymark.train.api`).

Recipe (defaults; :class:`SGDRecipe`, :class:`AugmentConfig`): SGD lr 0.1, momentum 0.9,
weight decay 5e-4, cosine decay to 0 over the run (per iteration); random crop with 4 px zero
padding and horizontal flips (CIFAR's standard augmentation); batch 128. The ACSAC19
reference code (zhenglisec/Blind-Watermark-for-DNN, ``Normal_train.py``) and the security study
that follows it use the same SGD settings with a step decay (x0.1 at epochs 40 and 80 of 100),
batch 100 and inputs normalised with mean = std = 0.5; that is::

    --batch-size 100 --net-config '{"optim": {"schedule": "step", "milestones": [0.4, 0.8]},
                                    "net": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}'

with ``--iters`` = 100 epochs of batches. The embedding procedures of
:mod:`copymark.watermark.embed` train their host with the same :class:`SGDRecipe` and
:class:`AugmentConfig`.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationError, model_validator
from torch import nn
from torch.utils.data import Dataset

from copymark.config import StrictModel, format_validation_error
from copymark.errors import ConfigError, DataError, WeightsError
from copymark.nets.classifiers import CLASSIFIER_KINDS, ResNet18Config, SmallCNNConfig
from copymark.runs import Run
from copymark.train.api import (
    RunConfig,
    RunData,
    RunKind,
    _deep_merge,
    _overrides,
    loop_cli_args,
    resume_run,
    start_run,
)
from copymark.train.loop import LoopConfig, Procedure, StepContext, TrainResult

ClassifierNetConfig = Annotated[ResNet18Config | SmallCNNConfig, Field(discriminator="kind")]
MODEL_EXPORT = "model"
SPLIT_FILE = "split.json"
CLASSIFIER_FLAGS = {"device": "--device", "amp": "--amp", "save_every": "--save-every", "num_workers": "--workers"}


# ---------------------------------------------------------------------------------------------
# configs


class SGDRecipe(StrictModel):
    """SGD with momentum and weight decay, and its per-iteration learning-rate schedule."""

    lr: float = Field(0.1, gt=0, description="base learning rate")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = False
    schedule: Literal["cosine", "step", "constant"] = Field(
        "cosine", description="cosine: to 0 over the run; step: x gamma at each milestone; constant"
    )
    milestones: tuple[float, ...] = Field(
        (0.4, 0.8), description="step schedule: fractions of the run (the reference: epochs 40 and 80 of 100)"
    )
    gamma: float = Field(0.1, gt=0, le=1, description="step schedule: factor at each milestone")
    warmup: float = Field(0.0, ge=0, lt=1, description="fraction of the run with a linear warm-up from 0")

    @model_validator(mode="after")
    def _check(self) -> Any:
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing fractions in (0, 1), got {self.milestones}")
        return self


class AugmentConfig(StrictModel):
    """Training augmentation of the main-task images (never of trigger images)."""

    crop_padding: int = Field(
        4, ge=0, description="random crop of the image padded with this many zero pixels; 0: none"
    )
    flip: bool = Field(True, description="random horizontal flips")


class ClassifierTrainConfig(StrictModel):
    """What the classifier procedure trains and how (the loop's own settings are in LoopConfig)."""

    kind: Literal["classifier"] = "classifier"
    net: ClassifierNetConfig = Field(default_factory=ResNet18Config)
    optim: SGDRecipe = Field(default_factory=SGDRecipe)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class ClassifierDataConfig(StrictModel):
    """The class folders and how they are split (:mod:`copymark.data.class_splits`)."""

    dir: str
    layout: Literal["classes", "train_test"] = Field(
        "classes", description="classes: DIR/<class>/; train_test: DIR/train/<class>/ + DIR/test/<class>/"
    )
    split: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="train : val : test (train_test: train : val of DIR/train)"
    )
    salt: str = Field("", description="salt of the hashed-key split")
    size: int = Field(32, ge=8, le=4096, description="image side, px")
    resize_policy: Literal["error", "resize", "center_crop"] = "error"
    eval_batch_size: int = Field(256, ge=1)


class ClassifierRunConfig(RunConfig):
    """The resolved config of a classifier training run (its config.json)."""

    task: Literal["classifier-train"] = "classifier-train"
    procedure: ClassifierTrainConfig
    data: ClassifierDataConfig


# ---------------------------------------------------------------------------------------------
# optimiser, schedule, augmentation


def sgd(params: Any, recipe: SGDRecipe) -> torch.optim.SGD:
    return torch.optim.SGD(
        params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=recipe.nesterov
    )


def lr_factor(recipe: SGDRecipe, iters: int) -> Any:
    """``it -> factor`` of the base LR at iteration ``it`` (0-based) of an ``iters``-long run."""
    n_warm = int(round(recipe.warmup * iters))
    steps = [int(round(m * iters)) for m in recipe.milestones]

    def factor(it: int) -> float:
        if it < n_warm:
            return (it + 1) / n_warm
        match recipe.schedule:
            case "cosine":
                t = (it - n_warm) / max(1, iters - n_warm)
                return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
            case "step":
                return recipe.gamma ** sum(it >= s for s in steps)
        return 1.0

    return factor


def lr_schedule(optimizer: torch.optim.Optimizer, recipe: SGDRecipe, iters: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The recipe's schedule, stepped once per iteration by the loop."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(recipe, iters))


class PadCropFlip:
    """Transform: zero-pad by ``padding``, crop back to the image's size at a random offset, flip.

    The standard CIFAR augmentation (torchvision ``RandomCrop(size, padding=4)`` +
    ``RandomHorizontalFlip()``), drawing from the item's generator like every copymark transform.
    """

    def __init__(self, padding: int = 4, flip: bool = True):
        self.padding, self.flip = int(padding), bool(flip)

    def __call__(self, images: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        from copymark.data.transforms import random_crop, random_hflip

        if self.padding:
            h, w = images[0].shape[-2:]
            p = self.padding
            images = random_crop([F.pad(x, (p, p, p, p)) for x in images], (h, w), generator)
        return random_hflip(images, generator) if self.flip else list(images)

    def __repr__(self) -> str:
        return f"PadCropFlip(padding={self.padding}, flip={self.flip})"


def augmentation(config: AugmentConfig) -> PadCropFlip | None:
    return PadCropFlip(config.crop_padding, config.flip) if (config.crop_padding or config.flip) else None


# ---------------------------------------------------------------------------------------------
# the procedure


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.detach().argmax(1) == labels).float().mean()


class ClassifierProcedure(Procedure):
    """Cross-entropy on (image, label) batches with SGD and a per-iteration LR schedule."""

    kind = "classifier"
    export = "classifier"

    def __init__(self, config: ClassifierTrainConfig, iters: int):
        from copymark.nets.build import build_net

        super().__init__()
        self.config = config
        net = build_net(config.net)
        self.nets = {"classifier": net}
        self.net_configs = {"classifier": config.net}
        opt = sgd(net.parameters(), config.optim)
        self.optimizers = {"classifier": opt}
        self.schedulers = {"classifier": lr_schedule(opt, config.optim, iters)}

    def step(self, batch: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
        x, y = batch
        with ctx.autocast():
            logits = self.net("classifier")(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing)
        ctx.update(loss, self.optimizers["classifier"])
        return {"loss": loss.detach(), "accuracy": accuracy(logits, y)}

    def provenance(self) -> dict[str, Any]:
        return {"net": self.config.net.kind, "lr": self.config.optim.lr, "schedule": self.config.optim.schedule}


# ---------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def predict(
    net: nn.Module, images: torch.Tensor, batch_size: int = 256, device: str | torch.device | None = None
) -> torch.Tensor:
    """Labels ``net`` gives a float batch of images (eval mode; the net's mode is restored)."""
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    was = net.training
    net.eval()
    try:
        out = [net(images[i : i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    finally:
        net.train(was)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def evaluate(
    net: nn.Module, dataset: Dataset, batch_size: int = 256, num_workers: int = 0, progress: bool = False
) -> dict[str, Any]:
    """Accuracy of ``net`` on ``(image, label)`` items: ``{"accuracy", "correct", "n"}`` (accuracy None when empty)."""
    from copymark.data.loading import loader

    dev = next(net.parameters()).device
    was = net.training
    net.eval()
    correct = n = 0
    try:
        for x, y in loader(dataset, batch_size, num_workers=num_workers):
            pred = net(x.to(dev)).argmax(1).cpu()
            correct += int((pred == y).sum())
            n += len(y)
    finally:
        net.train(was)
    return {"accuracy": correct / n if n else None, "correct": correct, "n": n}


def evaluate_splits(net: nn.Module, splits: Any, batch_size: int = 256, num_workers: int = 0) -> dict[str, Any]:
    """``{"accuracy": {split: acc}, "correct": {...}, "n": {...}}`` over train, val and test (no augmentation)."""
    from copymark.data.splits import SPLITS

    acc, correct, counts = {}, {}, {}
    for name in SPLITS:
        r = evaluate(net, splits.split(name).with_transform(None), batch_size, num_workers)
        acc[name], correct[name], counts[name] = r["accuracy"], r["correct"], r["n"]
    return {"accuracy": acc, "correct": correct, "n": counts}


# ---------------------------------------------------------------------------------------------
# data, configs


def read_splits(data: ClassifierDataConfig, check_sizes: bool = True) -> Any:
    """The :class:`~copymark.data.class_splits.ClassFolderSplits` of a data config."""
    from copymark.data.class_splits import class_folder_splits

    return class_folder_splits(
        data.dir, data.split, data.salt, data.layout, data.size, data.resize_policy, check_sizes=check_sizes
    )


def image_side(data_dir: str | Path) -> int:
    """The side of the first image of a class-folder dataset (it must be square)."""
    from copymark.data.class_splits import class_folder_splits
    from copymark.data.folders import image_size

    s = class_folder_splits(data_dir, check_sizes=False)
    f = s.train.files[0]
    h, w = image_size(f)
    if h != w:
        raise DataError(f"{f}: {h}x{w} is not square", hint="pass --size N (with --resize-policy resize|center_crop)")
    return h


def data_config(
    data_dir: str | Path,
    size: int | None = None,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    salt: str = "",
    resize_policy: str = "error",
    layout: str | None = None,
) -> ClassifierDataConfig:
    """A data config with the layout detected and the size read from the first image when not given."""
    from copymark.data.class_splits import detect_layout

    try:
        return ClassifierDataConfig(
            dir=str(data_dir),
            layout=layout or detect_layout(data_dir),  # type: ignore[arg-type]
            split=split,
            salt=salt,
            size=size if size is not None else image_side(data_dir),
            resize_policy=resize_policy,  # type: ignore[arg-type]
        )
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "data options")) from None


def net_config_for(kind: str, classes: list[str], size: int, overrides: dict[str, Any] | None = None) -> Any:
    """A classifier net config of ``kind`` for these classes and input size (``overrides`` merged in)."""
    from copymark.nets.build import parse_net_config

    if kind not in CLASSIFIER_KINDS:
        raise ConfigError(f"unknown classifier net {kind!r}", hint=f"one of {', '.join(CLASSIFIER_KINDS)}")
    over = dict(overrides or {})
    for key, value in (("num_classes", len(classes)), ("class_names", list(classes)), ("input_size", size)):
        if key in over and over[key] != value:
            raise ConfigError(
                f"--net-config: {key}={over[key]!r} contradicts the data ({value!r})",
                hint="leave it out: the number of classes, their names and the input size come from the data",
            )
    return parse_net_config(
        {"kind": kind, **over, "num_classes": len(classes), "class_names": classes, "input_size": size}
    )


def procedure_config(
    net_kind: str, classes: list[str], size: int, overrides: dict[str, Any] | None = None
) -> ClassifierTrainConfig:
    """The default classifier procedure for ``net_kind`` with ``overrides`` (``{"net": ..., "optim": ...}``) merged in."""
    over = dict(overrides or {})
    net = net_config_for(net_kind, classes, size, over.pop("net", None))
    base = ClassifierTrainConfig(net=net).model_dump()
    try:
        return ClassifierTrainConfig.model_validate(_deep_merge(base, over))
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, "--net-config"),
            hint="keys: net, optim, augment, label_smoothing (all of them: `copymark nets show classifier`)",
        ) from None


def make_classifier_config(
    data_dir: str | Path,
    net: str = "resnet18",
    overrides: dict[str, Any] | None = None,
    size: int | None = None,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    salt: str = "",
    resize_policy: str = "error",
    init_from: str | Path | None = None,
    **loop: Any,
) -> ClassifierRunConfig:
    """Assemble a :class:`ClassifierRunConfig` (``loop`` keys are :class:`LoopConfig` fields)."""
    data = data_config(data_dir, size, split, salt, resize_policy)
    splits = read_splits(data, check_sizes=False)
    proc = procedure_config(net, splits.classes, data.size, overrides)
    try:
        loop_cfg = LoopConfig(**loop)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "classifier train options")) from None
    return ClassifierRunConfig(
        procedure=proc, loop=loop_cfg, data=data, init_from=str(init_from) if init_from else None
    )


# ---------------------------------------------------------------------------------------------
# the run kind


def export_classifier(folder: Path, net: nn.Module, config: Any, provenance: dict[str, Any]) -> Path:
    from copymark.nets.build import save_net

    return save_net(folder, net, config, provenance)


def data_provenance(data: ClassifierDataConfig) -> dict[str, Any]:
    """What a checkpoint records about its training data (so eval and protect can check the split)."""
    return {"data": data.model_dump()}


class ClassifierRuns(RunKind[ClassifierRunConfig, dict[str, Any]]):
    """``copymark classifier train``: a classifier from class folders, exported to RUN/model with per-split accuracy."""

    task = "classifier-train"
    config_model = ClassifierRunConfig

    def data(self, config: ClassifierRunConfig) -> RunData:
        splits = read_splits(config.data)
        train = splits.train.with_transform(augmentation(config.procedure.augment), seed=config.loop.seed)
        return RunData(train, held_out=splits)

    def procedure(self, config: ClassifierRunConfig) -> Procedure:
        return ClassifierProcedure(config.procedure, config.loop.iters)

    def finish(self, run: Run | None, proc: Procedure, data: RunData, result: TrainResult) -> dict[str, Any]:
        from copymark.files import atomic_write_json

        if run is None:
            return {}
        assert isinstance(proc, ClassifierProcedure)
        config = ClassifierRunConfig.model_validate(run.config)
        splits = data.held_out
        atomic_write_json(run.path / SPLIT_FILE, splits.manifest.to_json())
        net = proc.nets["classifier"]
        export_classifier(
            run.path / MODEL_EXPORT,
            net,
            proc.config.net,
            {
                "run": str(run.path),
                **proc.provenance(),
                "iterations": result.iterations,
                **data_provenance(config.data),
            },
        )
        scores = evaluate_splits(net, splits, config.data.eval_batch_size, config.loop.num_workers)
        out = {
            "model": str(run.path / MODEL_EXPORT),
            "split": str(run.path / SPLIT_FILE),
            "classes": splits.classes,
            "iterations": result.iterations,
            "train_seconds": result.seconds,
            **scores,
        }
        run.log("accuracy: %s", ", ".join(f"{k} {v:.4f}" for k, v in scores["accuracy"].items() if v is not None))
        run.update_metrics(out)
        return out

    def continue_command(self, config: ClassifierRunConfig, run_dir: Path, iters: int) -> str:
        p, d = config.procedure, config.data
        base = procedure_config(p.net.kind, p.net.class_names, p.net.input_size).model_dump()
        over = _overrides(base, p.model_dump())
        args = ["copymark", "classifier", "train", "--data", d.dir, "--net", p.net.kind, "--size", str(d.size)]
        if d.split != (0.8, 0.1, 0.1):
            args += ["--split", ":".join(f"{r:g}" for r in d.split)]
        if d.salt:
            args += ["--split-salt", d.salt]
        if d.resize_policy != "error":
            args += ["--resize-policy", d.resize_policy]
        args += loop_cli_args(config.loop, CLASSIFIER_FLAGS)
        if over:
            args += ["--net-config", json.dumps(over)]
        args += ["--init-from", str(run_dir), "--iters", str(iters), "--run-dir", f"{run_dir}-{iters}"]
        return shlex.join(args)


CLASSIFIER_RUNS = ClassifierRuns()


def train_classifier(config: ClassifierRunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train a classifier into a new run folder; returns what went into metrics.json."""
    return start_run(CLASSIFIER_RUNS, config, run_dir)


def resume_classifier(
    run_dir: str | Path,
    device: str | None = None,
    progress: bool | None = None,
    iters: int | None = None,
    lr: float | None = None,
) -> dict[str, Any]:
    """Continue a classifier run exactly from its latest checkpoint and finish it."""
    return resume_run(CLASSIFIER_RUNS, run_dir, device=device, progress=progress, iters=iters, lr=lr)


# ---------------------------------------------------------------------------------------------
# loading a trained classifier


def classifier_folder(path: str | Path) -> Path:
    """The classifier checkpoint folder ``path`` names: a checkpoint folder itself, a run folder
    with an exported ``model/`` (classifier and protect runs), or a run / training checkpoint
    whose exported net is the classifier."""
    from copymark.checkpoints import WEIGHTS_FILE, find_export_folder

    p = Path(path)
    if (p / WEIGHTS_FILE).is_file():
        return p
    if (p / MODEL_EXPORT / WEIGHTS_FILE).is_file():
        return p / MODEL_EXPORT
    if p.exists():
        found = find_export_folder(p)
        if found is not None:
            return found
    raise WeightsError(
        f"{p}: no classifier checkpoint (model.safetensors + config.json) here, in {p / MODEL_EXPORT}, or in its checkpoints",
        hint="pass a `copymark classifier train` run folder, its model/ folder, or a `copymark protect` run",
    )


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Any, dict[str, Any]]:
    """``(net, config, provenance)`` of a classifier checkpoint (eval mode), via :func:`classifier_folder`."""
    from copymark.checkpoints import read_checkpoint_meta
    from copymark.nets.build import load_net

    folder = classifier_folder(path)
    net, config = load_net(folder, device, expected_kind=CLASSIFIER_KINDS)
    return net, config, dict(read_checkpoint_meta(folder).get("provenance") or {})


def check_fits_data(config: Any, classes: list[str], size: int, where: str) -> None:
    """Refuse a classifier whose classes or input size differ from the data's."""
    if config.num_classes != len(classes):
        raise DataError(
            f"{where} answers {config.num_classes} classes; the data has {len(classes)} class folders",
            hint="evaluate the model on data of its own task",
        )
    if config.class_names and list(config.class_names) != list(classes):
        diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(config.class_names, classes)) if a != b]
        raise DataError(
            f"{where} was trained on other class names (model vs data: {'; '.join(diff[:3])})",
            hint="the class folders must be the ones the model was trained on (sorted names = labels)",
        )
    if config.input_size != size:
        raise DataError(
            f"{where} takes {config.input_size} px images; the data is read at {size} px",
            hint=f"pass --size {config.input_size} (and --resize-policy resize if the images are another size)",
        )


def evaluate_classifier(
    model: str | Path,
    data_dir: str | Path,
    run_dir: str | Path,
    device: str = "cpu",
    resize_policy: str | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
) -> dict[str, Any]:
    """``copymark classifier eval``: accuracy of a trained classifier on every split of ``data_dir``.

    When ``data_dir`` is the folder the model was trained on (its checkpoint records it), the
    recorded split (ratios, salt, layout) is used, so "test" is the model's own held-out test
    split; any other folder is split by the default rule, and ``all`` gives the accuracy over
    every image. Images are read at the model's input size. Everything is checked before the
    run folder (config.json, metrics.json) is written.
    """
    from copymark.runs import check_new_run_dir, create_run

    check_new_run_dir(run_dir)
    from copymark.train.api import check_device

    dev = check_device(LoopConfig(device=device))
    net, config, prov = load_classifier(model, dev)
    folder = classifier_folder(model)
    recorded = prov.get("data") if isinstance(prov.get("data"), dict) else None
    same = recorded is not None and Path(str(recorded.get("dir"))).resolve() == Path(data_dir).resolve()
    if same:
        try:
            data = ClassifierDataConfig.model_validate(
                {**recorded, "dir": str(data_dir), **({"resize_policy": resize_policy} if resize_policy else {})}
            )
        except ValidationError as err:
            raise WeightsError(format_validation_error(err, f"{folder}/config.json: provenance.data")) from None
    else:
        data = data_config(data_dir, size=config.input_size, resize_policy=resize_policy or "error")
    splits = read_splits(data)
    check_fits_data(config, splits.classes, data.size, f"model {folder}")
    run = create_run(
        run_dir,
        {"task": "classifier-eval", "model": str(folder), "model_config": config.model_dump(), "data": data.model_dump(),
         "split_source": "the model's recorded split" if same else "the default split rule", "device": device},
        device=device,
    )  # fmt: skip
    scores = evaluate_splits(net, splits, batch_size, num_workers)
    n_all, c_all = sum(scores["n"].values()), sum(scores["correct"].values())
    scores["accuracy"]["all"] = c_all / n_all if n_all else None
    scores["correct"]["all"], scores["n"]["all"] = c_all, n_all
    from copymark.files import atomic_write_json

    atomic_write_json(run.path / SPLIT_FILE, splits.manifest.to_json())
    out = {"model": str(folder), "data": str(data_dir), "recorded_split": same, "classes": splits.classes, **scores}
    run.update_metrics(out)
    run.log("accuracy: %s", ", ".join(f"{k} {v:.4f}" for k, v in scores["accuracy"].items() if v is not None))
    return out
