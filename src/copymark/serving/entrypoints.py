"""``python:PKG.MODULE:FACTORY`` served models: your own ``nn.Module`` and its state dict.

``copymark serve --victim python:mynets.sr:build_generator --weights sr.safetensors`` imports
``mynets.sr`` (it must be importable: installed, or on ``PYTHONPATH``), calls
``build_generator()`` with no arguments, and loads the weights into the module it returns with
strict key matching: ``.safetensors`` files with safetensors, anything else with
``torch.load(weights_only=True)`` (a plain state dict; ``?weights_key=NAME`` picks a nested
one such as ``params_ema``). Weights with NaN or infinite values are refused. A module
without parameters or buffers needs no weights; any other module does, because its own
random initialisation is no trained model and would differ in every process.

The I/O convention (what the net's forward receives and returns) is declared by the factory
as attributes of the module, or by spec options, never guessed:

==============  =================================  ==========================
attribute       values                             default
==============  =================================  ==========================
``value_range`` ``(0, 1)``, ``(-1, 1)``, ``(0, 255)``  ``(0, 1)``
``color_order`` ``"RGB"``, ``"BGR"``                ``"RGB"``
``scale``       output side / input side           probed once
``stride``      input sides must be multiples      probed once
``fixed_size``  the only input size (tiles)        none
==============  =================================  ==========================

The spec options ``value_range=-1,1``, ``color_order=BGR``, ``scale=4``, ``stride=4`` say the
same for a module that does not declare it; an option that contradicts a declaration is an
error, and a declared scale is checked by one forward pass at load time. copymark feeds the
net float32 ``N x 3 x h x w`` in the declared range and colour order (``h, w`` padded to the
stride, see :mod:`copymark.serving.models`) and maps its output (same convention; a tuple
output: the first element) back to RGB in ``[0, 1]``.
"""

from __future__ import annotations

import importlib
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

import torch
from torch import nn

from copymark.errors import ConfigError, WeightsError
from copymark.serving.models import ImageModel, Task, file_id, spec_id

VALUE_RANGES: dict[str, tuple[float, float]] = {"0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0), "0,255": (0.0, 255.0)}
COLOR_ORDERS = ("RGB", "BGR")
OPTIONS = ("value_range", "color_order", "scale", "stride", "weights_key")
SPEC_FORM = "python:PKG.MODULE:FACTORY[?value_range=-1,1&color_order=BGR&scale=4&stride=4&weights_key=NAME]"


class ConventionAdapter(nn.Module):
    """RGB ``[0, 1]`` in and out around a net with another value range or colour order."""

    def __init__(self, net: nn.Module, value_range: tuple[float, float], color_order: str):
        super().__init__()
        self.net = net
        self.lo, self.hi = value_range
        self.bgr = color_order == "BGR"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            x = x.flip(1)
        y = self.net(x * (self.hi - self.lo) + self.lo)
        if isinstance(y, (tuple, list)):
            y = y[0]
        y = (y - self.lo) / (self.hi - self.lo)
        return y.flip(1) if self.bgr else y


def parse_python_spec(
    spec: str, allowed: tuple[str, ...] = OPTIONS, form: str = SPEC_FORM, what: str = "victim"
) -> tuple[str, str, dict[str, str]]:
    """``python:MODULE:FACTORY?options`` -> ``(module, factory, options)``; unknown options are errors."""
    target, _, query = spec[len("python:") :].partition("?")
    module, sep, factory = target.partition(":")
    if not sep or not module or not factory or ":" in factory:
        raise ConfigError(f"{what} spec {spec!r} is not of the form {form}")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise ConfigError(
                f"{what} spec {spec!r}: unknown option {key!r}",
                hint=f"options of python: {what}s: {', '.join(allowed)}",
            )
        options[key] = value
    return module, factory, options


def factory_module(spec: str, module: str, factory: str) -> nn.Module:
    """Import ``module``, call ``factory()`` and check that it built an ``nn.Module``; errors name the spec."""
    what = f"{module}:{factory}"
    fn = _import_factory(module, factory, spec)
    try:
        net = fn()
    except Exception as err:  # noqa: BLE001 - the user's factory failed
        raise ConfigError(f"spec {spec!r}: {what}() raised {type(err).__name__}: {err}") from None
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"spec {spec!r}: {what}() returned {type(net).__name__}, not a torch.nn.Module",
            hint="the factory must build and return the model (an nn.Module); copymark loads its weights",
        )
    return net


def load_factory_weights(spec: str, what: str, net: nn.Module, weights: Path | None, weights_key: str | None) -> None:
    """Load ``weights`` into the factory's module strictly; a module with tensors needs weights."""
    if weights is not None:
        match_state_dict(net, read_state_dict(weights, weights_key), weights, what)
    elif net.state_dict():
        raise ConfigError(
            f"spec {spec!r}: {what}'s module has {len(net.state_dict())} parameter/buffer tensors "
            "but no --weights were given",
            hint="pass --weights FILE (its state dict); a factory's random initialisation is not a trained model",
        )


def canonical_spec(module: str, factory: str, options: dict[str, str]) -> str:
    """The spec text that, with the weights' bytes, defines a python: model's opaque id."""
    return f"python:{module}:{factory}?" + "&".join(f"{k}={options[k]}" for k in sorted(options))


def _import_factory(module: str, factory: str, spec: str):
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"spec {spec!r}: cannot import module {module!r} ({err})",
            hint="install the package, or put its folder on PYTHONPATH (e.g. PYTHONPATH=. copymark serve ...)",
        ) from None
    except Exception as err:  # noqa: BLE001 - the user's module failed while importing
        raise ConfigError(f"spec {spec!r}: importing {module!r} failed: {type(err).__name__}: {err}") from None
    fn = getattr(mod, factory, None)
    if fn is None:
        public = sorted(
            n
            for n, obj in vars(mod).items()
            if not n.startswith("_") and callable(obj) and getattr(obj, "__module__", None) == mod.__name__
        )[:12]
        raise ConfigError(
            f"spec {spec!r}: module {module!r} has no factory {factory!r}",
            hint=f"callables in {module}: {', '.join(public) or '(none)'}",
        )
    if not callable(fn):
        raise ConfigError(f"spec {spec!r}: {module}.{factory} is a {type(fn).__name__}, not a factory function")
    return fn


def declared(net: nn.Module, name: str) -> object:
    """The module's declaration ``name`` (an attribute), or None."""
    try:
        return getattr(net, name)
    except AttributeError:
        return None


def _range_of(value: object, where: str) -> tuple[float, float]:
    if isinstance(value, str):
        key = value.replace(" ", "")
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        key = f"{value[0]:g},{value[1]:g}"
    else:
        key = repr(value)
    if key not in VALUE_RANGES:
        raise ConfigError(f"{where}: value_range {value!r} is not one of {', '.join(VALUE_RANGES)}")
    return VALUE_RANGES[key]


def _positive_int(value: object, name: str, where: str) -> int:
    try:
        n = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {name} must be a positive integer, got {value!r}") from None
    if n < 1 or (not isinstance(value, str) and n != value):
        raise ConfigError(f"{where}: {name} must be a positive integer, got {value!r}")
    return n


def declared_contract(
    net: nn.Module,
    options: dict[str, str],
    spec: str,
    extra: dict[str, Callable[[object], object]] | None = None,
    what: str = "victim",
) -> dict[str, object]:
    """The I/O convention: module attributes, or spec options; a contradiction is an error.

    ``value_range`` and ``color_order`` (with their defaults), ``scale`` and ``stride`` unless
    ``extra`` gives other declarations (name -> parser of an attribute or option value)."""
    where = f"{what} spec {spec!r}"
    parse: dict[str, Callable[[object], object]] = {
        "value_range": lambda v: _range_of(v, where),
        "color_order": lambda v: _color(v, where),
    }
    if extra is None:
        parse["scale"] = lambda v: _positive_int(v, "scale", where)
        parse["stride"] = lambda v: _positive_int(v, "stride", where)
    else:
        parse.update(extra)
    out: dict[str, object] = {}
    for name, conv in parse.items():
        raw = declared(net, name)
        said = conv(raw) if raw is not None else None
        option = conv(options[name]) if name in options else None
        if said is not None and option is not None and said != option:
            raise ConfigError(
                f"{where}: option {name}={options[name]} contradicts the module's declared {name} {raw!r}",
                hint=f"drop the {name} option (the factory already declares it) or fix the factory",
            )
        out[name] = said if said is not None else option
    out["value_range"] = out["value_range"] or (0.0, 1.0)
    out["color_order"] = out["color_order"] or "RGB"
    return out


def _color(value: object, where: str) -> str:
    text = str(value).upper()
    if text not in COLOR_ORDERS:
        raise ConfigError(f"{where}: color_order {value!r} is not RGB or BGR")
    return text


def read_state_dict(path: Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` state dict from a safetensors or ``torch.save`` file (data only)."""
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path))
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise WeightsError(
                f"{path}: refused by torch.load(weights_only=True): it holds objects other than tensors "
                f"({str(err).splitlines()[0][:160]})",
                hint="save a plain state dict: torch.save(model.state_dict(), path), or a .safetensors file",
            ) from None
        except Exception as err:  # noqa: BLE001 - truncated zip, not a torch file, ...
            raise WeightsError(
                f"{path}: cannot be read as a torch.save state dict ({type(err).__name__}: "
                f"{(str(err).splitlines() or [''])[0][:160]})"
            ) from None
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            keys = ", ".join(sorted(map(str, obj)))[:200] if isinstance(obj, dict) else type(obj).__name__
            raise WeightsError(f"{path}: no entry {key!r} (weights_key) in the file; it holds: {keys}")
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = [str(k) for k, v in obj.items() if isinstance(v, dict)] if isinstance(obj, dict) else []
        raise WeightsError(
            f"{path}: not a flat state dict of tensors (found {type(obj).__name__}"
            + (f" with nested dicts {', '.join(nested[:6])}" if nested else "")
            + ")",
            hint="pick the nested state dict with ?weights_key=NAME in the spec" if nested else None,
        )
    bad = [k for k, v in obj.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(f"{path}: tensors with NaN or infinite values: {_few(bad)}")
    return obj  # type: ignore[return-value]


def _few(names: list[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" (+{len(names) - n} more)" if len(names) > n else "")


def match_state_dict(net: nn.Module, sd: dict[str, torch.Tensor], weights: Path, what: str) -> None:
    """Load ``sd`` into ``net`` with strict matching; a mismatch names the keys."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [
        f"{k} (file {tuple(sd[k].shape)}, module {tuple(expected[k].shape)})"
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [f"missing keys {_few(missing)}"] if missing else []
        parts += [f"unexpected keys {_few(unexpected)}"] if unexpected else []
        parts += [f"shape mismatch {_few(shapes, 3)}"] if shapes else []
        hint = "the state dict must come from the architecture the factory builds (model.state_dict())"
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = "the file was saved from a DataParallel/DDP wrapper: strip the 'module.' prefix of its keys"
        raise WeightsError(f"{weights} does not match the module of {what}: " + "; ".join(parts), hint=hint)
    net.load_state_dict(sd, strict=True)


def python_model(spec: str, weights: Path | None, device: str | torch.device = "cpu") -> ImageModel:
    """The served model of a ``python:PKG.MODULE:FACTORY`` spec with its ``weights`` file."""
    from copymark.translate import wrap_module

    module, factory, options = parse_python_spec(spec)
    what = f"{module}:{factory}"
    net = factory_module(spec, module, factory)
    contract = declared_contract(net, options, spec)
    load_factory_weights(spec, what, net, weights, options.get("weights_key"))
    fixed = declared(net, "fixed_size")
    adapter = ConventionAdapter(net, contract["value_range"], str(contract["color_order"]))  # type: ignore[arg-type]
    scale, stride = contract["scale"], contract["stride"]
    model = wrap_module(
        adapter,
        device,
        source=what,
        kind="python",
        stride=stride,  # type: ignore[arg-type]
        scale=scale,  # type: ignore[arg-type]
        fixed_size=(fixed, fixed) if isinstance(fixed, int) else fixed,  # type: ignore[arg-type]
    )
    _check_scale(model, what, spec, declared=scale is not None)
    canonical = canonical_spec(module, factory, options)
    vid = file_id([weights], salt=canonical) if weights is not None else spec_id(canonical)
    task: Task = "sr" if model.scale > 1 else "style"
    return ImageModel(factory, task, model, vid, scale=model.scale, params=dict(options))


def _check_scale(model, what: str, spec: str, declared: bool) -> None:
    """One forward pass at a small valid size: the output must be 3 channels at ``scale`` x the input."""
    if model.fixed_size is not None:
        h, w = model.fixed_size
    else:
        h = w = model.stride * max(1, math.ceil(32 / model.stride))
    x = torch.full((1, 3, h, w), 0.5, device=model.device)
    try:
        with torch.inference_mode():
            y = model.net(x)
    except Exception as err:  # noqa: BLE001 - the user's forward failed on a valid size
        raise ConfigError(
            f"victim spec {spec!r}: {what}'s forward failed on a {h}x{w} input: {type(err).__name__}: "
            f"{(str(err).splitlines() or [''])[0][:200]}",
            hint="declare the module's stride (or fixed_size) so that copymark pads inputs to sizes it accepts",
        ) from None
    expected = (1, 3, h * model.scale, w * model.scale)
    if tuple(y.shape) != expected:
        said = f"declares scale {model.scale}" if declared else f"was probed as scale {model.scale}"
        raise ConfigError(
            f"victim spec {spec!r}: {what} {said}, but a {h}x{w} input came back as {tuple(y.shape)}, "
            f"expected {expected}",
            hint="fix the scale/stride the factory declares (or the spec options); outputs must be N x 3 x H x W",
        )
