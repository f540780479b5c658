"""What ``--net-config`` takes, for every procedure and net kind: ``copymark nets show KIND``
(the translation procedures, ``classifier`` for ``copymark classifier train``, and every net kind).

Each key (nested models flattened as ``generator.ngf``) with its type, its default and its
description, read from the pydantic configs themselves, so the listing cannot drift from what
the commands accept. Settings that follow ``--size`` (pix2pix's UNet depth, U-GAT-IT's
``img_size``) say so instead of showing a fixed default.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from copymark.errors import ConfigError


@dataclass(frozen=True)
class Key:
    key: str
    type: str
    default: Any
    description: str


@dataclass(frozen=True)
class Shown:
    kind: str
    command: str  # what takes these keys
    what: str  # one line: what the kind is
    keys: list[Key]
    notes: list[str]


def _type_name(annotation: Any, metadata: list[Any]) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and args:
        return " or ".join(_type_name(a, []) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0], list(args[1:]) + metadata)
    if origin is tuple:
        return "[" + ", ".join("..." if a is Ellipsis else _type_name(a, []) for a in args) + "]"
    name = "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))
    bounds = []
    for m in metadata:  # annotated_types bounds (Field(ge=..., ...)) carry the bound as an attribute
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                bounds.append(f"{op} {getattr(m, attr)}")
    return name + (" " + ", ".join(bounds) if bounds else "")


def config_keys(config: BaseModel, prefix: str = "") -> list[Key]:
    """Every field of ``config`` (an instance: its values are the defaults shown), nested models flattened."""
    out: list[Key] = []
    fields = type(config).model_fields
    for name, field in fields.items():
        value = getattr(config, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out += config_keys(value, key + ".")
            continue
        out.append(Key(key, _type_name(field.annotation, list(field.metadata)), value, field.description or ""))
    return out


def _procedure(kind: str) -> Shown:
    from copymark.train.api import procedure_config

    notes = []
    follows: dict[str, str] = {}
    if kind == "pix2pix":
        follows["generator.num_downs"] = "follows --size: the largest k <= 8 with 2^k dividing it (128: 7, 256: 8)"
        notes.append(
            "the UNet depth follows --size unless set: 32 px -> 5, 64 -> 6, 128 -> 7 (unet_128), 256 -> 8 (unet_256)"
        )
    if kind == "ugatit":
        follows["generator.img_size"] = "follows --size (the full generator runs only at its img_size)"
    keys = []
    for k in config_keys(procedure_config(kind)):
        if k.key == "kind" or k.key.endswith(".kind"):
            continue
        keys.append(Key(k.key, k.type, "(--size)", follows[k.key]) if k.key in follows else k)
    notes.append('nested keys merge into the defaults: --net-config \'{"generator": {"ngf": 32}}\' changes only ngf')
    what = {
        "pix2pix": "paired translation: UNet generator G, conditional PatchGAN discriminator D",
        "cyclegan": "unpaired translation: ResNet generators G_A, G_B, PatchGAN discriminators D_A, D_B",
        "ugatit": "unpaired translation: U-GAT-IT generators A2B, B2A, CAM discriminators GA, GB, LA, LB",
        "srresnet": "super-resolution, pixel MSE: SRResNet generator G",
        "srgan": "super-resolution, perceptual + adversarial: SRResNet G, SRGAN discriminator D",
    }[kind]
    return Shown(kind, f"copymark train {kind} --net-config JSON", what, keys, notes)


CLASSIFIER = "classifier"
"""The classifier procedure of ``copymark classifier train`` (a procedure kind beside the translation ones)."""

_DATA_KEYS = ("num_classes", "class_names")


def _classifier_key(k: Key, prefix: str = "") -> Key:
    """Classifier net keys the data sets: shown with their config defaults, and saying so."""
    key = k.key.removeprefix(prefix)
    if key in _DATA_KEYS:
        return Key(k.key, k.type, k.default, "set from the data: its class folders (sorted names = labels)")
    if key == "input_size":
        return Key(k.key, k.type, "(--size)", "follows --size (the image side)")
    if key == "stem":
        return Key(k.key, k.type, "(--size)", "follows --size: < 64 px cifar, < 128 tiny, else imagenet")
    return k


def _classifier() -> Shown:
    from copymark.train.classifier import ClassifierTrainConfig

    keys = [
        _classifier_key(k, "net.")
        for k in config_keys(ClassifierTrainConfig())
        if k.key != "kind" and not k.key.endswith(".kind")
    ]
    return Shown(
        CLASSIFIER,
        "copymark classifier train --net resnet18|small_cnn --net-config JSON",
        "image classifier: cross-entropy, SGD with momentum, cosine or step decay, crop + flip augmentation",
        keys,
        [
            "net.* keys shown are resnet18's; small_cnn has net.widths instead of net.stem (`copymark nets show small_cnn`)",
            'the ACSAC19 reference recipe: --batch-size 100 --net-config \'{"optim": {"schedule": "step", "milestones": [0.4, 0.8]}, '
            '"net": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}\'',
        ],
    )


def _architecture(kind: str) -> Shown:
    from copymark.nets.build import parse_net_config

    keys = [k for k in config_keys(parse_net_config({"kind": kind})) if k.key != "kind"]
    if kind in ("resnet18", "small_cnn"):
        keys = [_classifier_key(k) for k in keys]
        what = {
            "resnet18": "host classifier: torchvision's ResNet-18 with a stem for the input size",
            "small_cnn": "host classifier: a small CNN for tests",
        }[kind]
        return Shown(
            kind,
            f"copymark classifier train --net {kind} --net-config '{{\"net\": {{...}}}}'",
            what,
            keys,
            ["inputs in [0, 1]; (x - mean) / std is applied inside the net"],
        )
    if kind in ("en2d", "gglnet"):
        from copymark.train.stego import STUDY_DEFAULTS

        d = STUDY_DEFAULTS[kind]
        return Shown(
            kind,
            f"copymark stego train --codec {kind} --net-config JSON",
            "steganography codec (hides a whole RGB secret image in a cover)",
            keys,
            [
                f"procedure options: --lr (default {d['lr']}), --beta (default {d['beta']}), --batch-size (default {d['batch_size']})"
            ],
        )
    if kind in ("xunet", "yenet", "srnet"):
        return Shown(
            kind,
            f"copymark stego detect-train --model {kind} --net-config JSON",
            "steganalyzer (cover vs stego classifier)",
            keys,
            ["procedure options: --lr (default 0.001), --augment/--no-augment (default on)"],
        )
    parts = {  # kind -> (where it sits, the procedure and key that hold it)
        "unet": ("pix2pix's UNet generator", "pix2pix", "generator"),
        "patchgan": ("pix2pix's and cyclegan's PatchGAN discriminator", "pix2pix", "discriminator"),
        "resnet_gen": ("cyclegan's ResNet generator", "cyclegan", "generator"),
        "ugatit_gen": ("ugatit's generator", "ugatit", "generator"),
        "ugatit_disc": ("ugatit's CAM discriminators", "ugatit", "global_discriminator"),
        "srgan_disc": ("srgan's discriminator", "srgan", "discriminator"),
    }
    if kind in parts:
        what, proc, key = parts[kind]
        notes = ["copymark train pix2pix sets num_downs from --size unless given"] if kind == "unet" else []
        return Shown(kind, f"copymark train {proc} --net-config '{{\"{key}\": {{...}}}}'", what, keys, notes)
    return Shown(
        kind, "a checkpoint's config.json 'config' (no training command)", "third-party victim architecture", keys, []
    )


def show(kind: str) -> Shown:
    """What ``kind`` (a procedure of ``copymark train`` or a net kind) takes, with defaults."""
    from copymark.nets.build import NET_KINDS
    from copymark.train.api import PROCEDURE_KINDS

    if kind in PROCEDURE_KINDS:
        return _procedure(kind)
    if kind == CLASSIFIER:  # not in all_kinds(), which lists `copymark train` procedures and net kinds
        return _classifier()
    if kind in NET_KINDS:
        return _architecture(kind)
    raise ConfigError(
        f"unknown kind {kind!r}",
        hint=f"procedures: {', '.join(PROCEDURE_KINDS)}, {CLASSIFIER}; nets: {', '.join(k for k in NET_KINDS if k not in PROCEDURE_KINDS)}",
    )


def all_kinds() -> list[str]:
    from copymark.nets.build import NET_KINDS
    from copymark.train.api import PROCEDURE_KINDS

    return list(PROCEDURE_KINDS) + [k for k in NET_KINDS if k not in PROCEDURE_KINDS]


def _fmt(value: Any) -> str:
    import json

    return value if isinstance(value, str) and value == "(--size)" else json.dumps(value)


def render(shown: Shown) -> str:
    """Plain text (no colour, so it reads the same in a pipe)."""
    rows = [(k.key, _fmt(k.default), k.type, k.description) for k in shown.keys]
    w = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(("key", "default", "type"))]
    lines = [f"{shown.kind}: {shown.what}", f"keys of: {shown.command}", ""]
    lines.append(f"  {'key':<{w[0]}}  {'default':<{w[1]}}  {'type':<{w[2]}}  description")
    if not rows:
        lines.append("  (no keys: the architecture is fixed)")
    for r in rows:
        lines.append(f"  {r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}".rstrip())
    if shown.notes:
        lines.append("")
        lines += [f"note: {n}" for n in shown.notes]
    return "\n".join(lines)
