"""ONNX graphs: the ``onnx:PATH?options`` spec, the graph's I/O convention, and a net that keeps
copymark's tensor contract around an onnxruntime session.

``onnx:PATH[?layout=NHWC&value_range=-1,1&color_order=BGR&scale=4&stride=8&fixed_size=HxW&batch=1&output=NAME]``
runs the graph file PATH with onnxruntime: its CPU provider, or with ``device="cuda"`` its
CUDA provider (onnxruntime-gpu; asking for CUDA where the provider is missing, or where it
cannot start, is an error, never a silent CPU run). The graph keeps copymark's contract: an
:class:`OnnxNet` maps the float32 RGB ``[0, 1]`` NCHW batch to what the graph takes and its
output back. What the graph takes is read from the graph where it can be, else declared:

==================  ===========================================  =================================
field               read from the graph                          declared (default)
==================  ===========================================  =================================
``layout``          the axis fixed at 3 channels (1: NCHW,       ``NCHW`` or ``NHWC``; required when
                    3: NHWC)                                     neither or both axes are fixed at 3
dtype               the input's element type (float32, float16,  (not declared: an fp16 graph gets
                    float64); the output's is converted back     fp16 inputs, cast at the edge)
``batch``           a fixed first axis (AnimeGANv3: 1)           ``N``: feed exactly N images per
                                                                 run (default: any batch at once)
``fixed_size``      fixed height and width axes                  ``N`` or ``HxW`` (tiles of that size)
``stride``          probed (as for any net, above)               ``N``: sides padded to multiples
``scale``           fixed output / input sides, else probed      ``N``, checked by one forward pass
``value_range``     (cannot be read)                             ``0,1`` | ``-1,1`` | ``0,255`` (``0,1``)
``color_order``     (cannot be read)                             ``RGB`` | ``BGR`` (``RGB``)
``output``          the first output                             ``NAME`` of an output
==================  ===========================================  =================================

Declarations come from the spec options and from a JSON sidecar beside the graph, ``PATH.json``
(``model.onnx`` -> ``model.onnx.json``), an object with the same keys, e.g.
``{"layout": "NHWC", "value_range": [-1, 1], "color_order": "RGB", "stride": 8,
"fixed_size": [256, 256], "batch": 1, "scale": 1, "output": "out"}`` (every key optional,
unknown keys are errors); ``copymark translate --stride/--scale`` count as declarations too.
Two sources that disagree, or a declaration the graph contradicts, are an error naming
both; so are a graph with more than one input, an input that is not a float 4-axis image
batch with 3 channels where the layout puts them, an output that is not one (wrong rank or
channels: ``output=NAME`` picks another), and a stride or scale that the probe forward pass
(a 32-pixel input, or the fixed size) contradicts or that returns NaN/inf (an fp16 graph fed
the wrong value range overflows). The output uses the input's layout, value range and colour
order. A graph of fixed batch N is fed N images at a time, the last run padded with copies
of its last image (a batch-1 graph answers each image alone, however requests were batched).
A served graph's id hashes the ``.onnx`` file: a graph saved with its weights in external data
files (models over 2 GB) is not covered by that hash; save small victims as one file.

:func:`copymark.translate.load_onnx_model` turns a spec into a translation model (and the
serving package into a served victim). This module imports only config, errors and files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import torch
from pydantic import PositiveInt, field_validator

from copymark.config import StrictModel, parse_config
from copymark.errors import ConfigError, WeightsError
from copymark.files import read_json

ONNX_SCHEME = "onnx:"
ONNX_FORM = (
    "onnx:PATH[?layout=NHWC&value_range=-1,1&color_order=BGR&scale=4&stride=8&fixed_size=HxW&batch=1&output=NAME]"
)
ONNX_VALUE_RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))
ONNX_ELEMENT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


class OnnxDeclaration(StrictModel):
    """What spec options or the sidecar ``PATH.json`` say about an ONNX graph's I/O convention.

    Every field is optional: what the graph shows itself (layout, dtype, batch, fixed size)
    need not be said, and a declaration the graph contradicts is an error."""

    layout: Literal["NCHW", "NHWC"] | None = None
    value_range: tuple[float, float] | None = None
    color_order: Literal["RGB", "BGR"] | None = None
    scale: PositiveInt | None = None
    stride: PositiveInt | None = None
    fixed_size: tuple[PositiveInt, PositiveInt] | None = None
    batch: PositiveInt | None = None
    output: str | None = None

    @field_validator("layout", "color_order", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("value_range")
    @classmethod
    def _known_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and v not in ONNX_VALUE_RANGES:
            raise ValueError("must be one of [0, 1], [-1, 1], [0, 255]")
        return v

    @field_validator("fixed_size", mode="before")
    @classmethod
    def _square(cls, v: object) -> object:
        return (v, v) if isinstance(v, int) and not isinstance(v, bool) else v


@dataclass(frozen=True)
class OnnxContract:
    """How copymark feeds one ONNX graph, resolved from its shapes and the declarations.

    ``batch`` None: any batch size; ``fixed_size`` None: any size that is a multiple of
    ``stride``. Everything here changes the answers, so :meth:`text` is part of a served
    graph's opaque id."""

    input: str
    output: str
    layout: str
    dtype: str
    value_range: tuple[float, float]
    color_order: str
    batch: int | None
    fixed_size: tuple[int, int] | None
    stride: int | None
    scale: int | None

    def text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


class OnnxRunError(RuntimeError):
    """onnxruntime failed on a batch (a size the graph does not take, out of memory, ...)."""


class OnnxNet:
    """An onnxruntime session behind copymark's image contract.

    Takes float32 ``N x 3 x h x w`` RGB in ``[0, 1]`` (CPU) and returns float32
    ``N x 3 x h' x w'`` RGB in ``[0, 1]`` (unclamped): maps to the graph's colour order,
    value range, layout and element type at the edge, feeds it ``batch`` images at a time
    (a short last chunk is padded with copies of its last image, whose answers are dropped)
    and maps the output back."""

    def __init__(self, session: Any, contract: OnnxContract, path: Path):
        self.session, self.contract, self.path = session, contract, path

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np

        c = self.contract
        lo, hi = c.value_range
        bgr, nhwc = c.color_order == "BGR", c.layout == "NHWC"
        x = x.detach().to("cpu", torch.float32)
        x = (x.flip(1) if bgr else x) * (hi - lo) + lo
        a = (x.permute(0, 2, 3, 1) if nhwc else x).contiguous().numpy().astype(c.dtype)
        n = a.shape[0]
        step = c.batch or n
        parts = []
        for i in range(0, n, step):
            part = a[i : i + step]
            if len(part) < step:
                part = np.concatenate([part, np.repeat(part[-1:], step - len(part), axis=0)])
            try:
                y = self.session.run([c.output], {c.input: part})[0]
            except Exception as err:  # noqa: BLE001 - onnxruntime raises its own error types
                first = (str(err).splitlines() or [type(err).__name__])[0][:300]
                raise OnnxRunError(f"{self.path}: onnxruntime failed on input {tuple(part.shape)}: {first}") from None
            parts.append(y[: min(step, n - i)])
        y = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if y.ndim != 4:
            raise OnnxRunError(f"{self.path}: output {c.output!r} came back with shape {y.shape}, not an image batch")
        out = torch.from_numpy(np.asarray(y, dtype=np.float32))
        out = (out.permute(0, 3, 1, 2) if nhwc else out) - lo
        out = out / (hi - lo)
        return out.flip(1) if bgr else out


def is_onnx_spec(spec: str | Path) -> bool:
    return str(spec).startswith(ONNX_SCHEME)


def parse_onnx_spec(spec: str) -> tuple[Path, dict[str, str]]:
    """``onnx:PATH?KEY=VALUE&...`` -> ``(PATH, options)``; unknown or repeated options are errors."""
    target, _, query = str(spec)[len(ONNX_SCHEME) :].partition("?")
    if not target:
        raise ConfigError(f"spec {spec!r} names no graph file", hint=f"the form is {ONNX_FORM}")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in OnnxDeclaration.model_fields:
            raise ConfigError(
                f"spec {spec!r}: unknown option {key!r}",
                hint=f"options of onnx: graphs: {', '.join(OnnxDeclaration.model_fields)}",
            )
        if key in options:
            raise ConfigError(f"spec {spec!r}: option {key!r} is given twice")
        options[key] = value
    return Path(target), options


def onnx_sidecar(path: Path) -> Path:
    """The JSON sidecar beside a graph: ``model.onnx`` -> ``model.onnx.json``."""
    return path.with_name(path.name + ".json")


def option_declaration(options: dict[str, str], spec: str) -> OnnxDeclaration:
    data: dict[str, object] = dict(options)
    if "value_range" in options:
        data["value_range"] = options["value_range"].replace(" ", "").split(",")
    if "fixed_size" in options:
        parts = options["fixed_size"].lower().replace(" ", "").split("x")
        data["fixed_size"] = parts * 2 if len(parts) == 1 else parts
    return parse_config(OnnxDeclaration, data, where=f"spec {spec!r}")


def sidecar_declaration(path: Path) -> OnnxDeclaration:
    data = read_json(path, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the sidecar must be a JSON object, got {type(data).__name__}")
    return parse_config(OnnxDeclaration, data, where=str(path))


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def merge_declarations(sources: list[tuple[str, OnnxDeclaration]]) -> tuple[dict[str, Any], dict[str, str]]:
    """One declaration from several sources (``{field: value}``, ``{field: who said it}``);
    two sources that say different things are an error."""
    merged: dict[str, Any] = {}
    said_by: dict[str, str] = {}
    for who, decl in sources:
        for key, value in decl.model_dump(exclude_none=True).items():
            if key in merged and merged[key] != value:
                raise ConfigError(
                    f"{who} says {key}={_show(value)} but {said_by[key]} says {key}={_show(merged[key])}",
                    hint="say it in one place only",
                )
            merged.setdefault(key, value)
            said_by.setdefault(key, who)
    return merged, said_by


def _dims(shape: list[object]) -> str:
    """``1 x h x w x 3`` (symbolic dimensions by name, unknown ones as ?)."""
    return " x ".join(str(d) if d is not None else "?" for d in shape) if shape else "a scalar"


def _fixed(dim: object) -> int | None:
    """A dimension fixed in the graph (an int > 0), else None (symbolic or unknown)."""
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def _graph_layout(shape: list[object], declared: str | None, where: str, name: str) -> str:
    """NCHW or NHWC: the axis fixed at 3 channels, else the declaration; contradictions are errors."""
    threes = [ax for ax in (1, 3) if _fixed(shape[ax]) == 3]
    desc = f"input {name!r} ({_dims(shape)})"
    if declared is not None:
        axis = 1 if declared == "NCHW" else 3
        if _fixed(shape[axis]) not in (None, 3):
            raise ConfigError(
                f"{where}: layout={declared} puts the channels on axis {axis}, but the graph's {desc} has "
                f"{shape[axis]} there",
                hint="fix or drop the layout declaration (copymark feeds 3 RGB channels)",
            )
        if threes == [4 - axis]:
            raise ConfigError(
                f"{where}: layout={declared} contradicts the graph's {desc} (3 channels on axis {4 - axis}: "
                f"{'NCHW' if axis == 3 else 'NHWC'})",
                hint="drop the layout declaration: the graph shows it",
            )
        return declared
    if len(threes) == 1:
        return "NCHW" if threes == [1] else "NHWC"
    if not threes and _fixed(shape[1]) and _fixed(shape[3]):
        raise ConfigError(
            f"{where}: the graph's {desc} is not an RGB image batch (no axis of 3 channels at 1 or 3)",
            hint="copymark serves graphs that take N x 3 x H x W (NCHW) or N x H x W x 3 (NHWC) images",
        )
    raise ConfigError(
        f"{where}: cannot tell the layout of the graph's {desc} from its shape",
        hint="declare it: ?layout=NCHW (channels first) or ?layout=NHWC (channels last), or in the sidecar PATH.json",
    )


def _image_output_problem(shape: list[object], element_type: str, channel_axis: int) -> str | None:
    if element_type not in ONNX_ELEMENT_TYPES:
        return f"element type {element_type}"
    if len(shape) != 4:
        return f"{len(shape)} axes"
    if _fixed(shape[channel_axis]) not in (None, 3):
        return f"{shape[channel_axis]} channels on axis {channel_axis}"
    return None


def graph_contract(session: Any, decl: dict[str, Any], said_by: dict[str, str], where: str) -> OnnxContract:
    """The contract of a graph: its input and output shapes and types, plus the declarations."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        listed = ", ".join(f"{i.name!r} ({_dims(list(i.shape or []))}, {i.type})" for i in inputs)
        raise ConfigError(
            f"{where}: the graph has {len(inputs)} inputs ({listed}); copymark feeds exactly one image input",
            hint="export the graph with the image as its only input (fold any other input into a constant)",
        )
    inp = inputs[0]
    shape = list(inp.shape or [])
    if len(shape) != 4:
        raise ConfigError(
            f"{where}: the graph's input {inp.name!r} ({_dims(shape)}) has {len(shape)} axes, not an image batch",
            hint="copymark serves graphs that take N x 3 x H x W (NCHW) or N x H x W x 3 (NHWC) images",
        )
    dtype = ONNX_ELEMENT_TYPES.get(inp.type)
    if dtype is None:
        raise ConfigError(
            f"{where}: the graph's input {inp.name!r} is {inp.type}; copymark feeds float32, float16 or float64 images",
            hint="export the graph with a float image input (and its value range declared)",
        )
    layout = _graph_layout(shape, decl.get("layout"), where, inp.name)
    c_axis, h_axis, w_axis = (1, 2, 3) if layout == "NCHW" else (3, 1, 2)
    fh, fw = _fixed(shape[h_axis]), _fixed(shape[w_axis])
    if (fh is None) != (fw is None):
        raise ConfigError(
            f"{where}: the graph's input {inp.name!r} ({_dims(shape)}) fixes one side and not the other",
            hint="export the graph with both sides free (dynamic axes) or both fixed",
        )
    fixed = (fh, fw) if fh is not None and fw is not None else None
    batch = _fixed(shape[0])
    for key, graph_value in (("fixed_size", fixed), ("batch", batch)):
        if graph_value is not None and key in decl and decl[key] != graph_value:
            raise ConfigError(
                f"{where}: {said_by[key]} says {key}={_show(decl[key])}, but the graph's input {inp.name!r} "
                f"({_dims(shape)}) has {key} {_show(graph_value)}",
                hint=f"drop the {key} declaration: the graph fixes it",
            )
    fixed = fixed or decl.get("fixed_size")
    batch = batch or decl.get("batch")
    outputs = session.get_outputs()
    names = [o.name for o in outputs]
    if "output" in decl and decl["output"] not in names:
        raise ConfigError(
            f"{where}: {said_by['output']} names output {decl['output']!r}, but the graph's outputs are "
            + ", ".join(map(repr, names))
        )
    out = next(o for o in outputs if o.name == decl.get("output", names[0]))
    oshape = list(out.shape or [])
    problem = _image_output_problem(oshape, out.type, c_axis)
    if problem is not None:
        images = [o.name for o in outputs if _image_output_problem(list(o.shape or []), o.type, c_axis) is None]
        raise ConfigError(
            f"{where}: the graph's output {out.name!r} ({_dims(oshape)}, {out.type}) is not an RGB image batch "
            f"({problem}, layout {layout})",
            hint=f"pick the image output with ?output=NAME ({', '.join(map(repr, images))})"
            if images
            else "copymark serves image -> image graphs (N x 3 x H x W or N x H x W x 3 outputs)",
        )
    scale = decl.get("scale")
    if fixed is not None and fh is not None:
        oh, ow = _fixed(oshape[h_axis]), _fixed(oshape[w_axis])
        if oh is not None and ow is not None:
            if oh % fh or ow % fw or oh // fh != ow // fw:
                raise ConfigError(
                    f"{where}: the graph maps a {fh}x{fw} input to a {oh}x{ow} output, not an integer scale",
                    hint="copymark serves graphs whose output is the input size times an integer scale",
                )
            if scale is not None and scale != oh // fh:
                raise ConfigError(
                    f"{where}: {said_by['scale']} says scale={scale}, but the graph maps {fh}x{fw} to {oh}x{ow}",
                    hint="drop the scale declaration: the graph shows it",
                )
    return OnnxContract(
        input=inp.name,
        output=out.name,
        layout=layout,
        dtype=dtype,
        value_range=tuple(decl.get("value_range", (0.0, 1.0))),  # type: ignore[arg-type]
        color_order=decl.get("color_order", "RGB"),
        batch=batch,
        fixed_size=tuple(fixed) if fixed is not None else None,  # type: ignore[arg-type]
        stride=decl.get("stride"),
        scale=scale,
    )


def onnx_session(path: Path, device: torch.device) -> Any:
    """An onnxruntime session on ``device``: the CPU provider, or the CUDA provider (never a
    silent fallback to the CPU when CUDA was asked for)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(
            "onnx: graphs need onnxruntime, which is not installed",
            hint="pip install onnxruntime (or onnxruntime-gpu for --device cuda)",
        ) from None
    match device.type:
        case "cpu":
            providers: list[Any] = ["CPUExecutionProvider"]
        case "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError(
                    f"--device {device}: this onnxruntime has no CUDA provider "
                    f"(it has {', '.join(ort.get_available_providers())})",
                    hint="install onnxruntime-gpu (in place of onnxruntime) on a machine with CUDA, or use --device cpu",
                )
            providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        case _:
            raise ConfigError(f"--device {device}: ONNX graphs run on cpu or cuda")
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures reach the caller as exceptions; probing sizes must not print errors
    options.intra_op_num_threads = torch.get_num_threads()  # what --threads (or torch's default) says
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep: cores are shared
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own error types
        first = (str(err).splitlines() or [type(err).__name__])[0][:240]
        raise WeightsError(
            f"{path}: onnxruntime cannot load the graph ({type(err).__name__}: {first})",
            hint="is it a complete ONNX model file? re-export or download it again",
        ) from None
    if device.type == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise ConfigError(
            f"--device {device}: onnxruntime could not start its CUDA provider for {path} (CUDA/cuDNN libraries?)",
            hint="check the CUDA and cuDNN versions onnxruntime-gpu needs, or use --device cpu",
        )
    return session
