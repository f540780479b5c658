"""Served models: what sits behind the inference API, and how a SPEC string builds one.

The interface
-------------
A :class:`ServedModel` is a deterministic callable on a float32 ``N x 3 x H x W`` RGB batch in
``[0, 1]`` plus public metadata: ``task``, an opaque ``id`` (a hash of the spec or of the weight
files; it names the model in query stores without revealing its architecture), a private
``name`` and ``params``, and ``source`` (how to build it again, see below). Each kind of model
*declares what it returns*: :meth:`ServedModel.output_shape`, the wire dtype its answers
travel in, :meth:`ServedModel.encode` (the HTTP body) and :meth:`ServedModel.public_info`
(what ``/v1/info`` may say). The app checks every answer against that declaration (shape,
dtype, finite values) and encodes it; nothing in the app assumes an image comes back.

* :class:`ImageModel` (image -> image; the style and super-resolution victims): returns
  ``N x 3 x (H*scale) x (W*scale)`` in ``[0, 1]``, answered as an 8-bit PNG.
* :class:`LabelModel` (image -> label; a served classifier): returns ``N x num_classes``
  logits for inputs of exactly its declared ``input_size``, answered as JSON (the label, its
  class name if known, and optionally the top-k softmax probabilities, computed in float64).

``source`` (a :class:`ModelSource`: spec, device, weights, kind) is set by :func:`load_model`
(and :func:`copymark.serving.classifiers.load_classifier`), so
the server can rebuild the model in a supervised worker process
(:mod:`copymark.serving.execution`); :func:`function_model` wraps an in-process callable,
which has no source and is served inline.

Specs (``copymark serve --victim SPEC``; classifiers: ``--classifier SPEC``, see :mod:`.classifiers`)
----------------------------------------------------------------------------------------------------
* ``classical:stylize``, ``classical:edge_preserving``, ``classical:cartoon``,
  ``classical:bicubic_x4`` with ``?param=value`` options (:mod:`copymark.serving.classical`).
* a copymark checkpoint folder (``model.safetensors`` + ``config.json``), a training run folder
  or one of its checkpoints, loaded by :func:`copymark.translate.load_translation_model`.
* a TorchScript file (``.pt``, ``.ts``, ``.torchscript``, ``.jit``).
* ``python:PKG.MODULE:FACTORY`` with ``weights=FILE`` (``--weights``): a factory that returns
  an ``nn.Module`` and a state dict for it (:mod:`copymark.serving.entrypoints`).
* ``onnx:PATH?options``: an ONNX graph run by onnxruntime (CPU provider, or CUDA with
  ``--device cuda``), its convention read from the graph's shapes and element types, the
  options and the sidecar ``PATH.json`` (see "ONNX graphs" in :mod:`copymark.translate`).
  Its id hashes the graph file and the resolved convention, so options or a sidecar that
  change the answers change the id, and saying what the graph already shows does not.

The tensor contract of each format
----------------------------------
What the net itself receives and must return (copymark converts at this boundary only):

* copymark checkpoint and TorchScript: input float32 ``N x 3 x h x w``, RGB, values in
  ``[0, 1]``; output ``N x 3 x (h*scale) x (w*scale)``, RGB, ``[0, 1]`` (a tuple or list
  output: its first element). Nets that want ``[-1, 1]`` convert inside their own forward.
* ``onnx:``: whatever the graph takes (NCHW or NHWC, float32 or float16, ``[0, 1]``,
  ``[-1, 1]`` or ``[0, 255]``, RGB or BGR, a fixed batch or size), converted at the edge;
  a batch-1 graph (AnimeGANv3) is fed one image at a time, whatever the batcher stacked.
* ``python:``: the factory declares the convention, as attributes of the returned module
  (``value_range`` = ``(0, 1)``, ``(-1, 1)`` or ``(0, 255)``; ``color_order`` = ``"RGB"`` or
  ``"BGR"``; ``scale``; ``stride``; ``fixed_size``) or as spec options
  (``?value_range=-1,1&color_order=BGR&scale=4&stride=4``); an option that contradicts the
  module's declaration is an error. copymark maps ``[0, 1]`` RGB to that convention before
  the forward and back after it; the output uses the same convention as the input.
* sizes: ``h, w`` are the upload's ``H, W`` reflect-padded up to the next multiple of the net's
  stride (1-pixel sides are replicated); a net with a ``fixed_size`` is run in overlapping
  tiles of that size; the answer is cropped back to ``H*scale x W*scale`` and clamped to
  ``[0, 1]``. Stride and scale come from the net's ``stride`` / ``scale`` attributes (or the
  python: declaration), else from probing sizes once at load time.
* classical filters get the upload's 8-bit pixels (see :mod:`copymark.serving.classical`).

Trust
-----
TorchScript files are programs: their code runs when they are loaded and called, so serve only
archives from a trusted source (copymark checks the archive's CRCs first and names a damaged
or tampered member, but a well-formed archive made by someone else is still their code).
``python:`` imports the named module, whose code runs like any installed package's; its
weights are data only (safetensors, or ``torch.load(weights_only=True)``). copymark
recommends ``python:`` with a safetensors state dict: the weights cannot carry code and the
architecture is source you can read. ``torch.jit`` is deprecated upstream; ONNX graphs are
its data-only alternative: an ``.onnx`` file is a graph of standard operators and weights,
with no code of its own (copymark registers no custom-operator libraries), parsed by
onnxruntime's native code in the worker process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from copymark.errors import ConfigError
from copymark.images import encode_png, from_uint8, to_uint8

Task = Literal["style", "sr"]

VALID_SPECS = (
    "classical:stylize?sigma_s=20&sigma_r=0.3",
    "classical:edge_preserving?sigma_s=60&sigma_r=0.4&flags=1",
    "classical:cartoon?d=9&sigma_color=75&sigma_space=75&passes=2&block_size=9&c=2&levels=8",
    "classical:bicubic_x4?method=matlab&sharpen=0",
    "PATH/TO/CHECKPOINT_FOLDER (model.safetensors + config.json)",
    "PATH/TO/model.pt (TorchScript)",
    "python:PKG.MODULE:FACTORY with --weights FILE (.safetensors or a torch.save state dict)",
    "onnx:PATH/TO/model.onnx[?layout=NHWC&value_range=-1,1&color_order=BGR&scale=4&stride=8&fixed_size=HxW&batch=1&output=NAME]",
)


def valid_specs_hint() -> str:
    return "valid victim specs: " + " | ".join(VALID_SPECS)


class ModelOutputError(Exception):
    """The model returned something other than what it declares (shape, dtype, NaN/inf)."""


@dataclass(frozen=True)
class ModelSource:
    """How to build a served model again, in another process (:func:`build_from_source`):
    ``load_model(spec, device, weights)`` for ``kind="image"``, ``load_classifier(...)`` for
    ``kind="label"``."""

    spec: str
    device: str = "cpu"
    weights: str | None = None
    kind: Literal["image", "label"] = "image"
    input_size: tuple[int, int] | None = None  # a classifier's input size given at the command line


@dataclass(eq=False)
class ServedModel:
    """A deterministic model behind the API: images in, declared answers out.

    ``fn`` maps a float32 ``N x 3 x H x W`` RGB batch in ``[0, 1]`` to the raw output; the
    subclass declares what that output must be and how it is answered.
    """

    name: str
    task: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    id: str
    params: dict[str, float | int | str] = field(default_factory=dict, kw_only=True)
    source: ModelSource | None = field(default=None, kw_only=True)

    output_kind: ClassVar[str] = ""  # the API route family: "image" -> /v1/translate
    media_type: ClassVar[str] = ""
    wire_dtype: ClassVar[torch.dtype] = torch.float32  # dtype of answers between worker and app

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"model {self.name}: expected N x 3 x H x W, got {tuple(x.shape)}")
        with torch.inference_mode():
            return self.fn(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    def answer(self, x: torch.Tensor) -> torch.Tensor:
        """The batch's answers in wire form, checked against the declaration (ModelOutputError)."""
        y = self._forward(x)
        expected = (x.shape[0], *self.output_shape(x.shape[-2], x.shape[-1]))
        if not isinstance(y, torch.Tensor):
            raise ModelOutputError(f"the model returned {type(y).__name__}, expected a tensor of shape {expected}")
        if tuple(y.shape) != expected:
            raise ModelOutputError(f"the model returned shape {tuple(y.shape)}, expected {expected}")
        if not y.is_floating_point():
            raise ModelOutputError(f"the model returned dtype {y.dtype}, expected floating point")
        if not bool(torch.isfinite(y).all()):
            raise ModelOutputError("the model returned NaN or infinite values")
        return self.to_wire(y)

    def output_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Shape of the answer to one ``3 x height x width`` image."""
        raise NotImplementedError

    def to_wire(self, y: torch.Tensor) -> torch.Tensor:
        """A checked output batch -> the tensor the app encodes (``wire_dtype``)."""
        raise NotImplementedError

    def encode(self, row: torch.Tensor) -> bytes:
        """One answer in wire form -> the HTTP body (of type ``media_type``)."""
        raise NotImplementedError

    def public_info(self) -> dict[str, Any]:
        """What ``/v1/info`` says about the model: never its architecture, name or parameters."""
        return {"task": self.task, "victim_id": self.id, "output": self.media_type}

    def input_refusal(
        self, width: int, height: int, mode: str | None = None, transparent: bool = False
    ) -> tuple[str, str] | None:
        """``(error code, detail)`` when the model refuses an input of this size and image mode
        (answered 422 before anything is run), else None. Image models take any size and mode
        (decoded to RGB); a classifier takes only its declared size and modes that convert to
        RGB exactly."""
        return None


@dataclass(eq=False)
class ImageModel(ServedModel):
    """An image -> image model: ``N x 3 x H x W`` -> ``N x 3 x (H*scale) x (W*scale)``, in ``[0, 1]``.

    Answers travel as uint8 (exactly the pixels of the 8-bit PNG that is sent back).
    """

    scale: int = 1

    output_kind: ClassVar[str] = "image"
    media_type: ClassVar[str] = "image/png"
    wire_dtype: ClassVar[torch.dtype] = torch.uint8

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x).clamp(0, 1)

    def output_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (3, height * self.scale, width * self.scale)

    def to_wire(self, y: torch.Tensor) -> torch.Tensor:
        return to_uint8(y.cpu())

    def encode(self, row: torch.Tensor) -> bytes:
        return encode_png(from_uint8(row))

    def public_info(self) -> dict[str, Any]:
        return {**super().public_info(), "scale": self.scale}


TOP_K_DEFAULT = 5
TOP_K_MAX = 100
EXACT_RGB_MODES = ("1", "L", "P", "RGB", "I;16", "I;16B", "I;16L", "I;16N")
"""Image modes whose decoding to RGB changes no pixel value: bilevel, grey (replicated), a
palette without transparency, RGB, and 16-bit grey (divided by 65535). Modes with alpha
(RGBA, LA, PA, a palette with a transparent entry) would lose it, CMYK and YCbCr would go
through a colour conversion, 32-bit integers ("I", scaled by a range guessed from the
values) and floats ("F", clipped) have no fixed mapping to [0, 1]: a classifier refuses them."""


@dataclass(eq=False)
class LabelModel(ServedModel):
    """An image -> label model (a classifier): ``N x 3 x H x W`` -> ``N x num_classes`` logits.

    ``input_size`` ``(height, width)`` is the only size it takes: other sizes are refused (422
    ``wrong_input_size``), never resized, so an image sent at the model's size is classified
    exactly as sent (an owner's trigger images must not be resampled). Answers travel as
    float64 logits (a float32 net's logits, upcast exactly); :meth:`encode` computes the
    softmax in float64 and writes JSON. ``class_names`` (index = label) may be empty.
    """

    num_classes: int = 2
    input_size: tuple[int, int] = (32, 32)
    class_names: tuple[str, ...] = ()

    output_kind: ClassVar[str] = "label"
    media_type: ClassVar[str] = "application/json"
    wire_dtype: ClassVar[torch.dtype] = torch.float64

    def output_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (self.num_classes,)

    def to_wire(self, y: torch.Tensor) -> torch.Tensor:
        return y.detach().to("cpu", torch.float64)

    def class_name(self, label: int) -> str | None:
        return self.class_names[label] if self.class_names else None

    def encode(self, row: torch.Tensor, top_k: int | None = TOP_K_DEFAULT) -> bytes:
        """One row of logits -> the JSON answer: ``label`` (the arg max; the lowest index on a
        tie) and ``class_name``, plus, unless ``top_k`` is None (label-only answers), the
        ``top_k`` most probable classes with their float64 softmax probabilities, most probable
        first (ties: lower index first), so ``top_k[0]`` is always the label."""
        logits = row.to(torch.float64)
        order = torch.sort(logits, descending=True, stable=True).indices
        label = int(order[0])
        out: dict[str, Any] = {"label": label, "class_name": self.class_name(label)}
        if top_k is not None:
            probs = torch.softmax(logits, dim=0)
            out["top_k"] = [
                {"label": int(i), "class_name": self.class_name(int(i)), "probability": float(probs[i])}
                for i in order[: min(top_k, self.num_classes)]
            ]
        return json.dumps(out, separators=(",", ":"), allow_nan=False).encode()

    def public_info(self) -> dict[str, Any]:
        h, w = self.input_size
        return {**super().public_info(), "num_classes": self.num_classes, "input_size": {"height": h, "width": w}}

    def input_refusal(
        self, width: int, height: int, mode: str | None = None, transparent: bool = False
    ) -> tuple[str, str] | None:
        h, w = self.input_size
        if (height, width) != (h, w):
            return (
                "wrong_input_size",
                f"the image is {width}x{height}; this classifier takes exactly {w}x{h} (width x height) "
                "and never resizes: resize or crop it yourself",
            )
        if mode is not None and (mode not in EXACT_RGB_MODES or (mode == "P" and transparent)):
            what = f"mode {mode}" + (" with a transparent palette entry" if transparent else "")
            return (
                "unsupported_image_mode",
                f"image {what} does not convert to RGB without changing pixels; send RGB or greyscale without alpha",
            )
        return None


# ---------------------------------------------------------------------------------------------
# building models from specs


def spec_id(text: str) -> str:
    """The opaque id of a model defined by its spec text alone."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_id(paths: list[Path], salt: str = "") -> str:
    """The opaque id of a model defined by files (and, optionally, spec text)."""
    h = hashlib.sha256(salt.encode())
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _learned_model(path: Path, device: str) -> ImageModel:
    """A checkpoint folder / run folder / TorchScript file via copymark.translate."""
    from copymark.translate import load_translation_model, resolve_net_folder

    if not path.exists():
        raise ConfigError(f"victim spec {str(path)!r}: no such file or folder", hint=valid_specs_hint())
    if path.is_dir():
        _refuse_classifier(resolve_net_folder(path))
    model = load_translation_model(path, device)
    if path.is_dir():  # the id hashes the net actually served (config + weights), not the whole run
        net = resolve_net_folder(path)
        files = [f for f in (net / "config.json", net / "model.safetensors") if f.is_file()]
    else:
        files = [path]
    scale = int(model.scale)
    task: Task = "sr" if scale > 1 else "style"
    return ImageModel(path.stem if path.is_file() else path.name, task, model, file_id(files), scale=scale)


def _onnx_model(spec: str, device: str) -> tuple[ImageModel, str]:
    """An ``onnx:PATH?options`` graph (see :mod:`copymark.translate`) and the spec that rebuilds it
    from anywhere (its absolute path). The id hashes the graph file and the resolved contract
    (layout, value range, colour order, dtype, batch, sizes, scale, output): whatever the
    options or the sidecar change in the answers, and nothing else."""
    from copymark.onnx_graphs import OnnxNet, parse_onnx_spec
    from copymark.translate import load_translation_model

    path, _ = parse_onnx_spec(spec)
    model = load_translation_model(spec, device)
    net = model.net
    assert isinstance(net, OnnxNet)
    vid = file_id([path], salt="onnx:" + net.contract.text())
    task: Task = "sr" if model.scale > 1 else "style"
    query = spec.partition("?")[2]
    rebuild = f"onnx:{path.resolve()}" + (f"?{query}" if query else "")
    params = {"layout": net.contract.layout, "dtype": net.contract.dtype, "stride": model.stride}
    return ImageModel(path.stem, task, model, vid, scale=model.scale, params=params), rebuild


def _refuse_classifier(folder: Path) -> None:
    """A classifier checkpoint given as a victim: say which option serves it."""
    from copymark.files import read_json

    raw = read_json(folder / "config.json", ConfigError) if (folder / "config.json").is_file() else None
    config = raw.get("config") if isinstance(raw, dict) else None
    if isinstance(config, dict) and "num_classes" in config:
        raise ConfigError(
            f"victim spec {str(folder)!r} is a classifier ('{config.get('kind')}' with {config['num_classes']} classes)",
            hint="serve classifiers with --classifier",
        )


def load_model(spec: str, device: str = "cpu", weights: str | Path | None = None) -> ServedModel:
    """Build the model named by ``spec`` (see the module docstring); bad specs raise ConfigError.

    ``weights`` is the state dict of a ``python:`` spec (``--weights``); other formats carry
    their own weights.
    """
    spec = spec.strip()
    if not spec:
        raise ConfigError("empty victim spec", hint=valid_specs_hint())
    weights_path = Path(weights).resolve() if weights is not None else None
    if spec.startswith("python:"):
        from copymark.serving.entrypoints import python_model  # imports the user's module: only when asked

        model: ServedModel = python_model(spec, weights_path, device)
        rebuild = spec
    elif weights_path is not None:
        raise ConfigError(
            f"--weights {weights} is only for python: victims, not {spec!r}",
            hint="checkpoint folders, TorchScript files and ONNX graphs carry their own weights; drop --weights",
        )
    elif spec.startswith("onnx:"):
        model, rebuild = _onnx_model(spec, device)
    elif spec.startswith("classical:"):
        from copymark.serving.classical import classical_model  # OpenCV loads only when asked

        model = classical_model(spec)
        rebuild = spec
    elif ":" in spec.split("/")[0] and not Path(spec).exists() and len(spec.split(":")[0]) > 1:
        raise ConfigError(f"unknown victim spec scheme in {spec!r}", hint=valid_specs_hint())
    else:
        model = _learned_model(Path(spec), device)
        rebuild = str(Path(spec).resolve())  # a worker started elsewhere finds the same file
    model.source = ModelSource(rebuild, str(device), str(weights_path) if weights_path else None)
    return model


def build_from_source(source: ModelSource) -> ServedModel:
    """The model a :class:`ModelSource` describes (what the model worker builds)."""
    match source.kind:
        case "image":
            return load_model(source.spec, source.device, source.weights)
        case "label":
            from copymark.serving.classifiers import load_classifier

            return load_classifier(source.spec, source.device, source.weights, input_size=source.input_size)
    raise ConfigError(f"unknown model kind {source.kind!r}")  # pragma: no cover - a Literal


def function_model(
    fn: Callable[[torch.Tensor], torch.Tensor], name: str = "function", task: Task = "style", scale: int = 1
) -> ImageModel:
    """Wrap any deterministic tensor function as a served image model (tests, benchmarks,
    in-process nets). It has no :class:`ModelSource`, so the server runs it inline."""
    return ImageModel(name, task, fn, spec_id(f"function:{name}:{task}:{scale}"), scale=scale)


def function_classifier(
    fn: Callable[[torch.Tensor], torch.Tensor],
    num_classes: int,
    input_size: tuple[int, int],
    name: str = "function",
    class_names: tuple[str, ...] = (),
) -> LabelModel:
    """Wrap a deterministic tensor function returning ``N x num_classes`` logits as a served
    classifier (tests, in-process nets); served inline, like :func:`function_model`."""
    vid = spec_id(f"function-classifier:{name}:{num_classes}:{input_size[0]}x{input_size[1]}")
    return LabelModel(
        name, "classify", fn, vid, num_classes=num_classes, input_size=input_size, class_names=tuple(class_names)
    )
