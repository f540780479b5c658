"""Served classifiers: ``copymark serve --classifier SPEC`` -> a :class:`~copymark.serving.models.LabelModel`.

Specs
-----
* a copymark checkpoint folder of a classifier (``model.safetensors`` + ``config.json``; any net
  config whose module returns ``N x K`` logits, e.g. the host classifiers of
  ``copymark classifier train``), a training run folder or one of its checkpoints (the run's
  exported net), loaded by :func:`copymark.nets.build.load_net`;
* ``python:PKG.MODULE:FACTORY`` with ``--weights FILE``: a factory that returns an ``nn.Module``
  and its state dict (loaded as for image models, :mod:`copymark.serving.entrypoints`), with
  the options ``?input_size=32`` (or ``32x48``, height x width), ``value_range=-1,1``,
  ``color_order=BGR``, ``weights_key=NAME``.

The tensor contract
-------------------
The net receives float32 ``N x 3 x H x W`` RGB in ``[0, 1]`` (a ``python:`` module may declare
another ``value_range`` / ``color_order``, as image models do; normalisation such as an
ImageNet mean/std belongs inside the module's forward, as copymark's classifiers do it), with
``H x W`` exactly its input size, and returns ``N x K`` **logits** (pre-softmax scores; a tuple:
its first element). The server computes the softmax itself, in float64.

* **input size**: the net config's ``input_size`` (copymark classifiers carry it), else the
  module's ``input_size`` attribute (an int for a square, or ``(height, width)``), else the
  ``input_size`` option of a ``python:`` spec or ``--input-size`` (needed for nets that take
  any size, such as copymark's steganalyzers). An option that contradicts a declaration is an
  error. Requests of any other size are refused (422 ``wrong_input_size``), never resized.
* **classes**: ``K`` is found by one forward pass at load time and checked against a declared
  ``num_classes`` (config or module attribute).
* **class names** (optional; index = label): ``--class-names FILE`` (a JSON list of strings, or
  a text file with one name per line), else the config's ``class_names``, else the
  checkpoint provenance's ``class_names``, else the module's ``class_names`` attribute.
  Exactly ``K`` names, or an error.

A spec whose net does not return ``N x K`` logits (an image model, say) is refused at load
time with a one-line error. The opaque id hashes the net (``config.json`` + weights, or the
``python:`` spec + weights); class names are not part of it (they name labels, they do not
change them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from copymark.errors import ConfigError
from copymark.files import read_json
from copymark.serving.models import LabelModel, ModelSource, file_id, spec_id

CLASSIFIER_SPECS = (
    "PATH/TO/CHECKPOINT_FOLDER of a classifier (model.safetensors + config.json)",
    "PATH/TO/RUN_FOLDER of `copymark classifier train`",
    "python:PKG.MODULE:FACTORY?input_size=32 with --weights FILE",
)
PYTHON_OPTIONS = ("input_size", "value_range", "color_order", "weights_key")
PYTHON_FORM = "python:PKG.MODULE:FACTORY[?input_size=32&value_range=-1,1&color_order=BGR&weights_key=NAME]"
PROBE_BATCH = 2


def classifier_specs_hint() -> str:
    return "valid classifier specs: " + " | ".join(CLASSIFIER_SPECS)


def parse_input_size(value: object, where: str) -> tuple[int, int]:
    """``32``, ``"32"``, ``"32x48"`` (height x width) or ``(h, w)`` -> ``(height, width)``."""
    if isinstance(value, bool):
        value = repr(value)
    if isinstance(value, int):
        parts: list[object] = [value, value]
    elif isinstance(value, str):
        parts = value.lower().replace(" ", "").split("x")
        parts = parts * 2 if len(parts) == 1 else parts
    elif isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = []
    try:
        if len(parts) != 2:
            raise ValueError
        h, w = (int(p) for p in parts)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: input_size must be N or HxW (positive integers), got {value!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"{where}: input_size must be positive, got {value!r}")
    return h, w


def read_class_names(path: Path) -> tuple[str, ...]:
    """A JSON list of strings (``.json``) or a text file with one name per line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"class names file not found: {p}", hint='write a JSON list ["cat", "dog", ...]')
    if p.suffix.lower() == ".json":
        names = read_json(p, ConfigError)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{p}: expected a JSON list of class names (strings)")
    else:
        try:
            names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not a UTF-8 text file of class names (one per line)") from None
    return tuple(names)


def _check_names(names: tuple[str, ...], num_classes: int, where: str) -> tuple[str, ...]:
    if names and len(names) != num_classes:
        raise ConfigError(
            f"{where}: {len(names)} class names for a classifier of {num_classes} classes",
            hint="give exactly one name per class, in label order (index = label)",
        )
    return names


def _names_of(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
        raise ConfigError(f"{where}: class_names must be a list of strings, got {type(value).__name__}")
    return tuple(value)


class ClassifierNet:
    """Calls the net with the declared convention: ``[0, 1]`` RGB in, logits out."""

    def __init__(self, net: nn.Module, device: torch.device, value_range=(0.0, 1.0), color_order: str = "RGB"):
        self.net = net
        self.device = device
        self.lo, self.hi = value_range
        self.bgr = color_order == "BGR"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32)
        if self.bgr:
            x = x.flip(1)
        if (self.lo, self.hi) != (0.0, 1.0):
            x = x * (self.hi - self.lo) + self.lo
        y = self.net(x)
        if isinstance(y, (tuple, list)) and y:
            y = y[0]
        return y


def probe_classes(fn: Callable[[torch.Tensor], Any], input_size: tuple[int, int], what: str) -> int:
    """One forward pass at the input size: the number of classes, or why it is no classifier."""
    h, w = input_size
    x = torch.full((PROBE_BATCH, 3, h, w), 0.5)
    try:
        with torch.inference_mode():
            y = fn(x)
    except Exception as err:  # noqa: BLE001 - the user's forward failed on its own declared size
        first = (str(err).splitlines() or [""])[0][:200]
        raise ConfigError(
            f"{what}: the forward pass failed on a {PROBE_BATCH} x 3 x {h} x {w} input: {type(err).__name__}: {first}",
            hint="check the classifier's declared input_size",
        ) from None
    if not isinstance(y, torch.Tensor):
        raise ConfigError(f"{what}: the net returned {type(y).__name__}, not a tensor of N x K logits")
    shape = tuple(y.shape)
    if y.dim() == 4:
        raise ConfigError(
            f"{what}: returns {shape} for {PROBE_BATCH} images, an image, not N x K logits: it is not a classifier",
            hint="serve image -> image models with --victim",
        )
    if y.dim() != 2 or shape[0] != PROBE_BATCH or shape[1] < 2 or not y.is_floating_point():
        raise ConfigError(
            f"{what}: returns {shape} {str(y.dtype).removeprefix('torch.')} for {PROBE_BATCH} images, "
            f"not {PROBE_BATCH} x K floating-point logits (K >= 2)",
            hint="a served classifier returns one row of logits per image",
        )
    return int(shape[1])


def _check_declared_classes(declared: object, found: int, what: str) -> None:
    if declared is None:
        return
    if isinstance(declared, bool) or not isinstance(declared, int) or declared != found:
        raise ConfigError(f"{what}: declares num_classes {declared!r} but returns {found} logits per image")


def load_classifier(
    spec: str,
    device: str | torch.device = "cpu",
    weights: str | Path | None = None,
    class_names: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
) -> LabelModel:
    """Build the classifier named by ``spec`` (see the module docstring); bad specs raise
    ConfigError / WeightsError with a one-line message. ``input_size`` ``(height, width)`` is
    ``--input-size``: for nets that do not declare one (a declaration that differs is an error)."""
    spec = spec.strip()
    if not spec:
        raise ConfigError("empty classifier spec", hint=classifier_specs_hint())
    weights_path = Path(weights).resolve() if weights is not None else None
    dev = torch.device(device)
    if spec.startswith("python:"):
        model = _python_classifier(spec, weights_path, dev, input_size)
        rebuild = spec
    elif weights_path is not None:
        raise ConfigError(
            f"--weights {weights} is only for python: classifiers, not {spec!r}",
            hint="checkpoint and run folders carry their own weights; drop --weights",
        )
    elif spec.startswith("classical:"):
        raise ConfigError(f"{spec!r} is an image filter, not a classifier", hint=classifier_specs_hint())
    elif ":" in spec.split("/")[0] and not Path(spec).exists() and len(spec.split(":")[0]) > 1:
        raise ConfigError(f"unknown classifier spec scheme in {spec!r}", hint=classifier_specs_hint())
    else:
        model = _checkpoint_classifier(Path(spec), dev, input_size)
        rebuild = str(Path(spec).resolve())
    if class_names is not None:
        model.class_names = _check_names(read_class_names(Path(class_names)), model.num_classes, str(class_names))
    model.source = ModelSource(
        rebuild, str(device), str(weights_path) if weights_path else None, kind="label", input_size=input_size
    )
    return model


def _checkpoint_classifier(path: Path, device: torch.device, given: tuple[int, int] | None) -> LabelModel:
    from copymark.nets.build import load_net
    from copymark.train.classifier import classifier_folder
    from copymark.translate import resolve_net_folder

    if not path.exists():
        raise ConfigError(f"classifier spec {str(path)!r}: no such file or folder", hint=classifier_specs_hint())
    if path.is_file():
        if path.name not in ("model.safetensors", "config.json"):
            raise ConfigError(
                f"classifier spec {str(path)!r}: a file; classifiers are served from checkpoint or run folders",
                hint=classifier_specs_hint(),
            )
        path = path.parent
    # a classifier or protect run keeps its model in RUN/model; any other net through the run's export
    folder = classifier_folder(path) if (path / "model" / "model.safetensors").is_file() else resolve_net_folder(path)
    net, config = load_net(folder, device)
    what = f"classifier {folder}"
    raw = read_json(folder / "config.json", ConfigError)
    provenance = raw.get("provenance") if isinstance(raw, dict) else None
    size = getattr(config, "input_size", None) or getattr(net, "input_size", None)
    if size is None and given is None:
        raise ConfigError(
            f"{what}: its '{config.kind}' config declares no input_size",
            hint="give --input-size N (or HxW) for a classifier that takes any size; "
            "serve image -> image models with --victim",
        )
    input_size = parse_input_size(size, f"{folder}/config.json") if size is not None else given
    assert input_size is not None
    if given is not None and given != input_size:
        raise ConfigError(f"{what}: --input-size {given[0]}x{given[1]} contradicts its input_size {size!r}")
    fn = ClassifierNet(net, device)
    k = probe_classes(fn, input_size, what)
    _check_declared_classes(getattr(config, "num_classes", None) or getattr(net, "num_classes", None), k, what)
    names = _names_of(getattr(config, "class_names", None), f"{folder}/config.json: config.class_names")
    if not names and isinstance(provenance, dict):
        names = _names_of(provenance.get("class_names"), f"{folder}/config.json: provenance.class_names")
    names = _check_names(names, k, f"{folder}/config.json")
    vid = file_id([folder / "config.json", folder / "model.safetensors"])
    name = path.name
    return LabelModel(name, "classify", fn, vid, num_classes=k, input_size=input_size, class_names=names)


def _python_classifier(
    spec: str, weights: Path | None, device: torch.device, given: tuple[int, int] | None
) -> LabelModel:
    from copymark.serving.entrypoints import (
        canonical_spec,
        declared_contract,
        factory_module,
        load_factory_weights,
        parse_python_spec,
    )

    module, factory, options = parse_python_spec(spec, PYTHON_OPTIONS, PYTHON_FORM, what="classifier")
    what = f"classifier {module}:{factory}"
    where = f"classifier spec {spec!r}"
    if given is not None:  # --input-size is the spec option said at the command line
        if "input_size" in options and parse_input_size(options["input_size"], where) != given:
            raise ConfigError(f"{where}: --input-size {given[0]}x{given[1]} contradicts its input_size option")
        options["input_size"] = f"{given[0]}x{given[1]}"
    net = factory_module(spec, module, factory)
    contract = declared_contract(
        net, options, spec, extra={"input_size": lambda v: parse_input_size(v, where)}, what="classifier"
    )
    if contract["input_size"] is None:
        raise ConfigError(
            f"{where}: the module declares no input_size",
            hint="add ?input_size=N (or HxW) to the spec or --input-size N, or an input_size attribute to the module",
        )
    load_factory_weights(spec, f"{module}:{factory}", net, weights, options.get("weights_key"))
    net.to(device).eval()
    input_size: tuple[int, int] = contract["input_size"]  # type: ignore[assignment]
    if "input_size" in options:  # one id for every way of saying the same size
        options["input_size"] = f"{input_size[0]}x{input_size[1]}"
    fn = ClassifierNet(net, device, contract["value_range"], str(contract["color_order"]))  # type: ignore[arg-type]
    k = probe_classes(fn, input_size, what)
    _check_declared_classes(getattr(net, "num_classes", None), k, what)
    names = _check_names(_names_of(getattr(net, "class_names", None), f"{what}.class_names"), k, what)
    canonical = canonical_spec(module, factory, options)
    vid = file_id([weights], salt=canonical) if weights is not None else spec_id(canonical)
    return LabelModel(
        factory,
        "classify",
        fn,
        vid,
        num_classes=k,
        input_size=input_size,
        class_names=names,
        params=dict(options),
    )
