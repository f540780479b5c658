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
ONNX graphs (``onnx:PATH?options``) are read by :mod:`copymark.onnx_graphs`; :func:`load_onnx_model`
wraps them as a :class:`TranslationModel` (stride probed like any net's).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from copymark.checkpoints import find_export_folder
from copymark.config import parse_config
from copymark.errors import ConfigError, ImageError, WeightsError
from copymark.onnx_graphs import (
    ONNX_FORM,
    OnnxContract,
    OnnxDeclaration,
    OnnxNet,
    OnnxRunError,
    graph_contract,
    is_onnx_spec,
    merge_declarations,
    onnx_session,
    onnx_sidecar,
    option_declaration,
    parse_onnx_spec,
    sidecar_declaration,
)

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
# ONNX graphs as translation models (the graph itself: copymark.onnx_graphs)


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
        sources.append((f"the sidecar {sidecar}", sidecar_declaration(sidecar)))
    if options:
        sources.append(("the spec", option_declaration(options, spec)))
    if stride is not None or scale is not None:
        sources.append(("--stride/--scale", parse_config(OnnxDeclaration, {"stride": stride, "scale": scale})))
    decl, said_by = merge_declarations(sources)
    dev = torch.device(device)
    session = onnx_session(path, dev)
    net = OnnxNet(session, graph_contract(session, decl, said_by, where), path)
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
