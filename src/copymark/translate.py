"""Inference with image-translation models: any input size, tiles, deterministic.

The public API (used by ``copymark translate`` and by the serving package):

* :func:`load_translation_model(path, device) <load_translation_model>` ->
  :class:`TranslationModel`, a callable ``N x 3 x H x W`` in ``[0, 1]`` ->
  ``N x 3 x (H*scale) x (W*scale)`` in ``[0, 1]``, with attributes ``scale``, ``stride`` and
  ``fixed_size``. ``path`` may be

  - a copymark net checkpoint folder (``model.safetensors`` + ``config.json``, written by
    :func:`copymark.nets.build.save_net`),
  - a training run folder or one of its checkpoints (the procedure's exported net, e.g. the
    generator A->B, is used; see :mod:`copymark.train.loop`),
  - a TorchScript file (``.pt`` / ``.ts`` loaded with :func:`torch.jit.load`). TorchScript
    archives are programs: load only files from a trusted source. :func:`load_torchscript`
    first checks the zip archive (every member's CRC-32, the TorchScript layout), so a
    truncated, damaged or tampered file is refused with what is wrong instead of loading
    modified weights silently; torch's deprecation warning for ``torch.jit.load`` is kept from
    users. copymark recommends a ``python:MODULE:FACTORY`` entry point with a safetensors state
    dict instead (see :mod:`copymark.serving.models`); ``torch.export`` is the successor
    upstream.
  - ``onnx:PATH?options``, an ONNX graph run by onnxruntime (see "ONNX graphs" below).

* :func:`translate_batch(model, x, tile=None, overlap=32) <translate_batch>`: the same with
  optional overlapping tiles for images too large for memory.
* :func:`translate_folder`: every image of a folder -> PNGs in another folder.

How any size works: the image is reflect-padded so that height and width are multiples of
the net's *stride* (the product of its down-sampling factors; a UNet-256 needs 256, a
ResNet generator with two stride-2 convolutions needs 4, SRResNet 1), run, and the output is
cropped back to ``H*scale x W*scale``. With ``tile=T`` the padded image is cut into ``T x T``
tiles (T rounded up to the stride) whose start positions are multiples of the stride (so
every tile sees the same pixel alignment as whole-image inference) and which overlap by
about ``overlap`` pixels; each output pixel is a linearly blended average of the tiles
covering it (across an overlap, the outer quarters belong to the tile whose interior they
are and the middle half ramps linearly; weights sum to one). For a fully-convolutional net
whose receptive field is within a quarter of the overlap the result equals whole-image inference
up to float rounding; nets with global statistics (instance norm, attention) differ by
design, which is the price of bounded memory.

Determinism: the net is put in eval mode (no dropout, BatchNorm uses running statistics),
inference runs under :func:`torch.inference_mode`, and nothing random is drawn, so the same
input gives the same output.

Stride and scale come from the net's ``stride`` / ``scale`` attributes when it has them,
else they are probed once: the smallest power of two ``s`` for which an input of side
``3*s`` comes back as ``3*s*k`` for an integer ``k`` is the stride, ``k`` the scale.
ONNX graphs
-----------
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
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import torch
import torch.nn.functional as F
from pydantic import PositiveInt, field_validator
from torch import nn

from copymark.checkpoints import find_export_folder
from copymark.config import StrictModel, parse_config
from copymark.errors import ConfigError, ImageError, WeightsError
from copymark.files import read_json

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".torchscript", ".jit")
MAX_PROBE_STRIDE = 256


@dataclass
class TranslationModel:
    """A loaded translation net plus what inference needs to know about it.

    ``net`` maps a ``N x 3 x h x w`` batch in ``[0, 1]`` (h, w multiples of ``stride``, or
    exactly ``fixed_size`` when set) to ``N x 3 x h*scale x w*scale``. Calling the object
    handles any size (padding) and clamps to ``[0, 1]``.
    """

    net: Callable[[torch.Tensor], torch.Tensor]
    scale: int = 1
    stride: int = 1
    fixed_size: tuple[int, int] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    source: str = ""
    kind: str = ""
    tile: int | None = None
    overlap: int = 32

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return translate_batch(self, x, tile=self.tile, overlap=self.overlap)


# ---------------------------------------------------------------------------------------------
# forward helpers


def _first_output(y: object, source: str) -> torch.Tensor:
    """Nets such as UGATIT's generator return (image, cam_logits, heatmap): take the image."""
    if isinstance(y, (tuple, list)):
        y = y[0]
    if not isinstance(y, torch.Tensor):
        raise WeightsError(f"{source}: the model returned {type(y).__name__}, not an image tensor")
    return y


def _run(model: TranslationModel, x: torch.Tensor) -> torch.Tensor:
    y = _first_output(model.net(x), model.source)
    if y.dim() != 4 or y.shape[1] != 3:
        raise WeightsError(f"{model.source}: the model returned shape {tuple(y.shape)}, expected N x 3 x H x W")
    return y.float()


def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect padding of any amount (repeated reflection when the pad exceeds the image).

    A 1-pixel side cannot be reflected and is replicated instead.
    """
    while top > 0 or bottom > 0 or left > 0 or right > 0:
        h, w = x.shape[-2:]
        lim_h, lim_w = max(h - 1, 0), max(w - 1, 0)
        t, b, l, r = min(top, lim_h), min(bottom, lim_h), min(left, lim_w), min(right, lim_w)
        if (t, b, l, r) == (0, 0, 0, 0):  # 1-pixel image: replicate the rest at once
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        x = F.pad(x, (l, r, t, b), mode="reflect")
        top, bottom, left, right = top - t, bottom - b, left - l, right - r
    return x


def _round_up(n: int, m: int) -> int:
    return int(math.ceil(n / m) * m)


def _check_input(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ImageError(f"translate: expected an RGB batch N x 3 x H x W, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ImageError(f"translate: expected float images in [0, 1], got dtype {x.dtype}")
    return x


def _starts(length: int, tile: int, step: int, stride: int) -> list[int]:
    """Tile start positions along one axis: multiples of ``stride``, last one flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    last = length - tile  # a multiple of stride since both are
    if starts[-1] != last:
        starts.append(last)
    assert all(s % stride == 0 for s in starts)
    return starts


def _ramp_up(ov: int) -> torch.Tensor:
    """Weights of the later tile across an overlap of ``ov`` pixels; the earlier tile gets
    ``1 - ramp``. The outer quarter on each side is given fully to the tile whose interior it
    is (a tile's own border pixels, which saw padding instead of their neighbours, get weight
    0), and the middle half ramps linearly."""
    m = ov // 4
    i = torch.arange(ov, dtype=torch.float32)
    r = (i - m + 1) / (ov - 2 * m + 1)
    return r.clamp(0, 1)


def _ramps(starts: list[int], tile: int, scale: int) -> list[torch.Tensor]:
    """1-D blending weights (output resolution) per tile; overlapping weights sum to one."""
    out = []
    n = tile * scale
    for k, s in enumerate(starts):
        w = torch.ones(n, dtype=torch.float32)
        if k > 0:
            ov = (starts[k - 1] + tile - s) * scale
            if ov > 0:
                w[:ov] = _ramp_up(ov)
        if k < len(starts) - 1:
            ov = (s + tile - starts[k + 1]) * scale
            if ov > 0:
                w[n - ov :] *= 1 - _ramp_up(ov)
        out.append(w)
    return out


def _tiled(model: TranslationModel, x: torch.Tensor, th: int, tw: int, overlap: int, tile_batch: int) -> torch.Tensor:
    """Run ``x`` (already padded to the stride) in overlapping tiles and blend."""
    n, _, h, w = x.shape
    s, k = model.stride, model.scale
    ov_h = min(_round_up(overlap, s), max(th - s, 0))
    ov_w = min(_round_up(overlap, s), max(tw - s, 0))
    ys, xs = _starts(h, th, th - ov_h, s), _starts(w, tw, tw - ov_w, s)
    wy, wx = _ramps(ys, th, k), _ramps(xs, tw, k)
    out = torch.zeros(n, 3, h * k, w * k, dtype=torch.float32, device=x.device)
    norm = torch.zeros(1, 1, h * k, w * k, dtype=torch.float32, device=x.device)
    boxes = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    for b0 in range(0, len(boxes), max(1, tile_batch)):
        chunk = boxes[b0 : b0 + max(1, tile_batch)]
        tiles = torch.cat([x[:, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] for i, j in chunk])
        ys_out = _run(model, tiles)
        if ys_out.shape[-2:] != (th * k, tw * k):
            raise WeightsError(
                f"{model.source}: a {th}x{tw} tile came back as {tuple(ys_out.shape[-2:])}, expected "
                f"{th * k}x{tw * k} (scale {k})"
            )
        for c, (i, j) in enumerate(chunk):
            wgt = (wy[i].to(x.device)[:, None] * wx[j].to(x.device)[None, :])[None, None]
            oy, ox = ys[i] * k, xs[j] * k
            out[:, :, oy : oy + th * k, ox : ox + tw * k] += ys_out[c * n : (c + 1) * n] * wgt
            norm[:, :, oy : oy + th * k, ox : ox + tw * k] += wgt
    return out / norm


def translate_batch(
    model: TranslationModel,
    x: torch.Tensor,
    tile: int | None = None,
    overlap: int = 32,
    tile_batch: int = 4,
) -> torch.Tensor:
    """Translate a batch of any size: ``N x 3 x H x W`` in [0, 1] -> ``N x 3 x H*s x W*s`` in [0, 1].

    ``tile``: if given and the (padded) image is larger than ``tile`` in a dimension, it is
    processed in overlapping ``tile x tile`` pieces (``overlap`` pixels, linear blending);
    ``tile_batch`` tiles go through the net at once. Nets with a ``fixed_size`` are always
    tiled at that size. The result is clamped to [0, 1] and returned on the input's device.
    """
    x = _check_input(x)
    in_device = x.device
    n, _, h, w = x.shape
    s, k = model.stride, model.scale
    x = x.to(model.device, torch.float32)
    if model.fixed_size is not None:
        th, tw = model.fixed_size
        if th % s or tw % s:
            raise WeightsError(f"{model.source}: fixed size {th}x{tw} is not a multiple of the stride {s}")
        ph, pw = max(_round_up(h, s), th) - h, max(_round_up(w, s), tw) - w
    else:
        ph, pw = _round_up(h, s) - h, _round_up(w, s) - w
        th = tw = 0
    top, left = ph // 2, pw // 2
    xp = reflect_pad(x, top, ph - top, left, pw - left)
    hp, wp = xp.shape[-2:]
    with torch.inference_mode():
        if model.fixed_size is not None:
            y = _run(model, xp) if (hp, wp) == (th, tw) else _tiled(model, xp, th, tw, overlap, tile_batch)
        elif tile is not None and (hp > tile or wp > tile):
            t = _round_up(max(tile, s), s)
            y = _tiled(model, xp, min(t, hp), min(t, wp), overlap, tile_batch)
        else:
            y = _run(model, xp)
    if y.shape[-2:] != (hp * k, wp * k):
        raise WeightsError(
            f"{model.source}: output size {tuple(y.shape[-2:])} is not input {hp}x{wp} times scale {k}",
            hint="is the stride/scale of this model right? pass them explicitly",
        )
    y = y[:, :, top * k : (top + h) * k, left * k : (left + w) * k]
    return y.clamp(0, 1).to(in_device)


# ---------------------------------------------------------------------------------------------
# loading


def probe_stride_scale(
    net: Callable[[torch.Tensor], torch.Tensor], device: torch.device, source: str = "model"
) -> tuple[int, int]:
    """Find (stride, scale) by trial: the smallest power of two ``s`` such that an input of
    side ``3*s`` maps to side ``3*s*k`` with integer ``k`` (an odd multiple of a smaller
    power of two misaligns any net with more down-sampling, so it errors or changes size)."""
    s = 1
    last_err: str | None = None
    with torch.inference_mode():
        while s <= MAX_PROBE_STRIDE:
            side = 3 * s
            x = torch.full((1, 3, side, side), 0.5, device=device)
            try:
                y = _first_output(net(x), source)
            except WeightsError:
                raise
            except Exception as err:  # noqa: BLE001 - a wrong size may raise anything
                last_err = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                s *= 2
                continue
            hh, ww = y.shape[-2:]
            if hh == ww and hh % side == 0 and hh > 0:
                return s, hh // side
            s *= 2
    raise WeightsError(
        f"{source}: could not determine the model's stride and scale by probing sizes up to {3 * MAX_PROBE_STRIDE}"
        + (f" (last error: {last_err})" if last_err else ""),
        hint="pass the stride and scale explicitly (--stride / --scale)",
    )


def _net_attr(net: object, name: str) -> int | None:
    try:
        v = getattr(net, name)
    except Exception:  # noqa: BLE001 - TorchScript raises RuntimeError for missing attributes
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        return None
    return v


def _fixed_size_attr(net: object) -> tuple[int, int] | None:
    try:
        v = net.fixed_size
    except Exception:  # noqa: BLE001
        # the full U-GAT-IT generator: its MLP input depends on img_size
        light, size = getattr(net, "light", None), getattr(net, "img_size", None)
        if light is False and isinstance(size, int):
            return (size, size)
        return None
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(a, int) for a in v):
        return (int(v[0]), int(v[1]))
    return None


def wrap_module(
    net: nn.Module | torch.jit.ScriptModule,
    device: str | torch.device = "cpu",
    source: str = "model",
    kind: str = "",
    stride: int | None = None,
    scale: int | None = None,
    fixed_size: tuple[int, int] | None = None,
) -> TranslationModel:
    """Wrap a module (eval mode, on ``device``) as a :class:`TranslationModel`.

    ``stride``/``scale``/``fixed_size`` default to the module's attributes of those names,
    then to probing (see :func:`probe_stride_scale`).
    """
    dev = torch.device(device)
    net = net.to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    fixed_size = fixed_size if fixed_size is not None else _fixed_size_attr(net)
    stride = stride if stride is not None else _net_attr(net, "stride")
    scale = scale if scale is not None else _net_attr(net, "scale")
    if fixed_size is None and stride is None:
        p_stride, p_scale = probe_stride_scale(net, dev, source)
        stride = p_stride
        scale = scale if scale is not None else p_scale
    if scale is None:  # one forward at the smallest valid size tells the scale
        k = max(1, -(-32 // stride))  # at least 32 px: instance norm needs > 1 pixel at the bottleneck
        side = fixed_size if fixed_size is not None else (stride * k, stride * k)
        with torch.inference_mode():
            y = _first_output(net(torch.full((1, 3, *side), 0.5, device=dev)), source)
        scale = max(1, y.shape[-1] // side[1])
    stride = stride if stride is not None else 1
    return TranslationModel(
        net=net, scale=int(scale), stride=int(stride), fixed_size=fixed_size, device=dev, source=source, kind=kind
    )


def resolve_net_folder(path: Path) -> Path:
    """A net checkpoint folder inside ``path``: ``path`` itself, a run's exported net, or the
    exported net of a training checkpoint (see :mod:`copymark.train.loop` for the layout)."""
    if (path / "model.safetensors").is_file():
        return path
    found = find_export_folder(path)
    if found is None:
        raise WeightsError(
            f"{path}: no model found (neither model.safetensors + config.json, nor a training run / "
            "checkpoint with an exported net)",
            hint="pass a net checkpoint folder, a run folder made by `copymark train`, or a TorchScript .pt file",
        )
    return found


_TS_HINT = "get an intact copy from its trusted source (TorchScript files are code: never load one of unknown origin)"


def check_torchscript_archive(path: Path) -> None:
    """Refuse a truncated, damaged or tampered TorchScript archive, naming what is wrong.

    A TorchScript file is a zip archive; torch reads it without checking the members' CRC-32,
    so flipped bytes in the weights load silently. This reads every member once (like
    ``zipfile.testzip``) and checks the layout (``code/`` and ``constants.pkl``).
    """
    import zipfile
    import zlib

    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise WeightsError(
            f"{path}: not a TorchScript archive: {err} (the file is truncated, or not a zip archive at all)",
            hint=_TS_HINT,
        ) from None
    except (OSError, ValueError, EOFError, UnicodeDecodeError) as err:
        raise WeightsError(
            f"{path}: damaged TorchScript archive: unreadable zip directory ({err})", hint=_TS_HINT
        ) from None
    with archive:
        for info in archive.infolist():
            try:
                with archive.open(info) as member:
                    while member.read(1 << 20):
                        pass
            except zipfile.BadZipFile as err:  # CRC mismatch, header/directory mismatch
                raise WeightsError(
                    f"{path}: damaged TorchScript archive: member {info.filename!r}: {err} "
                    "(the file was modified or corrupted after it was saved)",
                    hint=_TS_HINT,
                ) from None
            except (zlib.error, EOFError, OSError, ValueError, UnicodeDecodeError) as err:
                raise WeightsError(
                    f"{path}: damaged TorchScript archive: member {info.filename!r} cannot be read "
                    f"({type(err).__name__}: {err})",
                    hint=_TS_HINT,
                ) from None
        names = archive.namelist()
    if not any("/code/" in n or n.startswith("code/") for n in names) or not any(
        n.endswith("constants.pkl") for n in names
    ):
        if any(n.endswith("data.pkl") for n in names):
            raise WeightsError(
                f"{path}: a torch.save archive (pickled tensors or module), not a TorchScript program",
                hint="serve a state dict with --victim python:PKG.MODULE:FACTORY --weights FILE",
            )
        raise WeightsError(f"{path}: a zip archive without TorchScript code (no code/ and constants.pkl members)")


def load_torchscript(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript file after :func:`check_torchscript_archive`; errors say what is wrong.

    torch's ``FutureWarning`` that ``torch.jit.load`` is deprecated is not shown: it is
    addressed to whoever exported the model, not to the user serving it.
    """
    import warnings

    p = Path(path)
    check_torchscript_archive(p)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load", category=FutureWarning)
            return torch.jit.load(str(p), map_location=torch.device(device))
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError with C++ text
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise WeightsError(
            f"{p}: the TorchScript archive is intact but torch cannot load it ({type(err).__name__}: {first})",
            hint="was it saved by a much newer torch? re-export it with torch.jit.script(model).save(path)",
        ) from None


def load_translation_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    stride: int | None = None,
    scale: int | None = None,
) -> TranslationModel:
    """Load a translation model from a net checkpoint folder, a run folder / training
    checkpoint, a TorchScript file or an ``onnx:PATH?options`` spec. See the module docstring."""
    if is_onnx_spec(path):
        return load_onnx_model(str(path), device, stride=stride, scale=scale)
    p = Path(path)
    if not p.exists():
        raise WeightsError(
            f"model not found: {p}", hint="pass a checkpoint folder, a run folder or a TorchScript .pt file"
        )
    dev = torch.device(device)
    if p.is_file():
        if p.suffix.lower() in TORCHSCRIPT_SUFFIXES:
            net = load_torchscript(p, dev)
            return wrap_module(net, dev, source=str(p), kind="torchscript", stride=stride, scale=scale)
        if p.name in ("model.safetensors", "config.json"):
            p = p.parent
        elif p.suffix.lower() == ".onnx":
            raise WeightsError(f"{p}: an ONNX graph is given as onnx:{p}", hint=f"the form is {ONNX_FORM}")
        else:
            raise WeightsError(
                f"{p}: unsupported model file",
                hint=f"TorchScript files end in {', '.join(TORCHSCRIPT_SUFFIXES)}; copymark checkpoints are folders; "
                "ONNX graphs are given as onnx:PATH",
            )
    folder = resolve_net_folder(p)
    from copymark.nets.build import load_net  # local import: nets pull in every family

    net, config = load_net(folder, dev)
    kind = str(getattr(config, "kind", "")) if not isinstance(config, dict) else str(config.get("kind", ""))
    return wrap_module(net, dev, source=str(folder), kind=kind, stride=stride, scale=scale)


def translate_folder(
    model: TranslationModel,
    input_dir: str | Path,
    output_dir: str | Path,
    tile: int | None = None,
    overlap: int = 32,
    progress: bool = True,
) -> list[Path]:
    """Translate every image of ``input_dir`` into ``output_dir/<stem>.png``; returns the paths."""
    from copymark.images import list_images, load_image, save_image

    src, dst = Path(input_dir), Path(output_dir)
    if not src.is_dir():
        raise ImageError(f"input folder not found: {src}")
    files = list_images(src)
    if not files:
        raise ImageError(f"{src}: no images (looked for .png, .jpg, .jpeg, .webp, .bmp, .tif)")
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})[:3]
        raise ImageError(f"{src}: several files share a name stem ({dup}); outputs would overwrite each other")
    dst.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("translate", total=len(files))
        for f in files:
            y = translate_batch(model, load_image(f)[None], tile=tile, overlap=overlap)
            out.append(save_image(y[0], dst / f"{f.stem}.png"))
            bar.advance(task)
    meta = {
        "model": model.source,
        "kind": model.kind,
        "scale": model.scale,
        "stride": model.stride,
        "tile": tile,
        "overlap": overlap,
        "count": len(out),
    }
    (dst / "translate.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


# ---------------------------------------------------------------------------------------------
# ONNX graphs: ``onnx:PATH?options`` (see the module docstring)

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


def _option_declaration(options: dict[str, str], spec: str) -> OnnxDeclaration:
    data: dict[str, object] = dict(options)
    if "value_range" in options:
        data["value_range"] = options["value_range"].replace(" ", "").split(",")
    if "fixed_size" in options:
        parts = options["fixed_size"].lower().replace(" ", "").split("x")
        data["fixed_size"] = parts * 2 if len(parts) == 1 else parts
    return parse_config(OnnxDeclaration, data, where=f"spec {spec!r}")


def _sidecar_declaration(path: Path) -> OnnxDeclaration:
    data = read_json(path, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the sidecar must be a JSON object, got {type(data).__name__}")
    return parse_config(OnnxDeclaration, data, where=str(path))


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _merge_declarations(sources: list[tuple[str, OnnxDeclaration]]) -> tuple[dict[str, Any], dict[str, str]]:
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


def _graph_contract(session: Any, decl: dict[str, Any], said_by: dict[str, str], where: str) -> OnnxContract:
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


def _settle_stride_scale(net: OnnxNet, said_by: dict[str, str], where: str) -> OnnxContract:
    """Stride (probed when neither declared nor fixed) and scale, checked by one forward pass."""
    c = net.contract
    stride = c.stride
    if c.fixed_size is None and stride is None:
        stride, _ = probe_stride_scale(net, torch.device("cpu"), where)
    stride = stride or 1
    if c.fixed_size is not None:
        h, w = c.fixed_size
        if h % stride or w % stride:
            raise ConfigError(f"{where}: fixed size {h}x{w} is not a multiple of the stride {stride}")
    else:
        h = w = stride * max(1, -(-32 // stride))  # at least 32 px: norms need more than one pixel deep down
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    try:
        y = net(x)
    except OnnxRunError as err:
        raise ConfigError(
            f"{where}: the graph fails on a {h}x{w} probe input ({err})",
            hint="declare the size it needs: ?stride=N (sides multiples of N) or ?fixed_size=HxW",
        ) from None
    oh, ow = y.shape[-2:]
    if y.shape[:2] != (1, 3) or oh == 0 or oh % h or ow % w or oh // h != ow // w:
        raise ConfigError(
            f"{where}: a 1 x 3 x {h} x {w} probe input came back as {tuple(y.shape)} (as NCHW), "
            "not an RGB image an integer times its size",
            hint="check the declared stride or fixed_size; copymark serves image -> image graphs whose output "
            "is the input size times an integer scale",
        )
    scale = oh // h
    if c.scale is not None and scale != c.scale:
        raise ConfigError(
            f"{where}: {said_by.get('scale', 'the declaration')} says scale={c.scale}, but one forward pass maps "
            f"{h}x{w} to {oh}x{ow} (scale {scale})",
            hint="fix or drop the scale declaration",
        )
    if not bool(torch.isfinite(y).all()):
        raise ConfigError(
            f"{where}: a {h}x{w} probe input came back with NaN or infinite values",
            hint="is the value_range right? (a float16 graph overflows on inputs in the wrong range)",
        )
    return replace(c, stride=stride, scale=scale)


def load_onnx_model(
    spec: str, device: str | torch.device = "cpu", stride: int | None = None, scale: int | None = None
) -> TranslationModel:
    """The :class:`TranslationModel` of an ``onnx:PATH?options`` spec (see the module docstring).

    The convention comes from the graph's input/output shapes and element types, the sidecar
    ``PATH.json``, the spec options and ``stride``/``scale`` (``copymark translate --stride
    --scale``); any two that disagree, or a graph they do not fit, raise ConfigError."""
    path, options = parse_onnx_spec(spec)
    if not path.is_file():
        raise WeightsError(
            f"ONNX graph not found: {path}" + (" (a folder)" if path.is_dir() else ""),
            hint=f"the form is {ONNX_FORM}",
        )
    where = f"ONNX graph {path}"
    sources: list[tuple[str, OnnxDeclaration]] = []
    sidecar = onnx_sidecar(path)
    if sidecar.is_file():
        sources.append((f"the sidecar {sidecar}", _sidecar_declaration(sidecar)))
    if options:
        sources.append(("the spec", _option_declaration(options, spec)))
    if stride is not None or scale is not None:
        sources.append(("--stride/--scale", parse_config(OnnxDeclaration, {"stride": stride, "scale": scale})))
    decl, said_by = _merge_declarations(sources)
    dev = torch.device(device)
    session = onnx_session(path, dev)
    net = OnnxNet(session, _graph_contract(session, decl, said_by, where), path)
    net.contract = _settle_stride_scale(net, said_by, where)
    c = net.contract
    assert c.stride is not None and c.scale is not None
    return TranslationModel(
        net=net,
        scale=c.scale,
        stride=c.stride,
        fixed_size=c.fixed_size,
        device=torch.device("cpu"),  # tensors stay on the CPU; onnxruntime moves them to its provider
        source=str(path),
        kind="onnx",
    )
