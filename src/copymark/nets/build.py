"""Net configs, the builder, and checkpoint save/load for every architecture in ``nets/``.

One pydantic :class:`~copymark.config.StrictModel` per family, told apart by ``kind``
(a discriminated union, :data:`NetConfig`). :func:`build_net` turns a config into a fresh
``nn.Module`` with an explicit ``match``; :func:`save_net` / :func:`load_net` write and read a
copymark checkpoint folder (``model.safetensors`` + ``config.json`` whose ``config`` entry is
``config.model_dump()``), so a checkpoint always knows how to rebuild its own net. They are
the one save/load path of every net kind: translation nets, the stego codecs
(:func:`copymark.stego.codecs.save_codec` / ``load_codec`` are thin wrappers), steganalyzers
(``save_steganalyzer`` / ``load_steganalyzer``), host classifiers (:mod:`copymark.nets.classifiers`), victims and training checkpoints' nets;
:func:`copymark.checkpoints.load_checkpoint` refuses unknown config.json keys and NaN/inf weights.

Every net takes and returns images in ``[0, 1]`` (discriminators return logits); see
:mod:`copymark.nets`.

Example::

    cfg = parse_net_config({"kind": "unet", "ngf": 8, "num_downs": 5})
    net = build_net(cfg)
    save_net("ckpt", net, cfg, {"run": "runs/pix2pix-..."})
    net2, cfg2 = load_net("ckpt", expected_kind="unet")
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, TypeAdapter, ValidationError
from torch import nn

from copymark.checkpoints import load_checkpoint, load_strict, save_checkpoint
from copymark.config import StrictModel, format_validation_error
from copymark.errors import ConfigError, WeightsError
from copymark.nets.classifiers import ResNet18Config, SmallCNNConfig
from copymark.nets.steganalysis import SRNetConfig, XuNetConfig, YeNetConfig  # configs live beside their nets
from copymark.nets.stego import En2DConfig, GglNetConfig

Norm = Literal["batch", "instance", "none"]
Pos = Annotated[int, Field(ge=1)]


class UNetConfig(StrictModel):
    """pix2pix UNet generator (:class:`copymark.nets.unet.UNetGenerator`); defaults = ``unet_256``."""

    kind: Literal["unet"] = "unet"
    in_channels: Pos = 3
    out_channels: Pos = 3
    ngf: Pos = Field(64, description="filters of the outermost layer (x2 per level, at most x8)")
    num_downs: int = Field(
        8, ge=5, description="down-sampling levels; the stride is 2**num_downs (8: unet_256, 7: unet_128)"
    )
    norm: Norm = "batch"
    use_dropout: bool = Field(
        True, description="dropout 0.5 in the num_downs - 5 decoder levels next to the innermost (training only)"
    )


class PatchGANConfig(StrictModel):
    """PatchGAN D (:class:`copymark.nets.patchgan.PatchGANDiscriminator`); 70x70 at defaults.

    ``in_channels=6`` for pix2pix's conditional D (input and output images concatenated).
    """

    kind: Literal["patchgan"] = "patchgan"
    in_channels: Pos = Field(3, description="6 in pix2pix: input and output image side by side")
    ndf: Pos = Field(64, description="filters of the first layer (x2 per layer, at most x8)")
    n_layers: Pos = Field(3, description="stride-2 layers; 3 gives 70x70 patches")
    norm: Norm = "batch"


class ResnetGenConfig(StrictModel):
    """CycleGAN ResNet generator (:class:`copymark.nets.resnet_gen.ResnetGenerator`); ``resnet_9blocks``."""

    kind: Literal["resnet_gen"] = "resnet_gen"
    in_channels: Pos = 3
    out_channels: Pos = 3
    ngf: Pos = Field(64, description="filters of the first layer (x2 per down-sampling, two of them)")
    n_blocks: int = Field(
        9, ge=0, description="residual blocks at the bottleneck (9: resnet_9blocks, 6: resnet_6blocks)"
    )
    norm: Norm = "instance"
    use_dropout: bool = Field(False, description="dropout 0.5 inside the residual blocks (training only)")


class UGATITGenConfig(StrictModel):
    """UGATIT generator (:class:`copymark.nets.ugatit.UGATITGenerator`).

    Defaults = the reference's training setting (``--ch 64 --n_res 4 --img_size 256``).
    ``light=True`` pools before the gamma/beta MLP (the "light" model); the full model's MLP
    input depends on ``img_size``, so the full model only runs at that size.
    """

    kind: Literal["ugatit_gen"] = "ugatit_gen"
    in_channels: Pos = 3
    out_channels: Pos = 3
    ngf: Pos = Field(64, description="filters of the first layer (--ch of the reference)")
    n_blocks: Pos = Field(4, description="residual blocks in the encoder and AdaLIN blocks in the decoder (--n_res)")
    img_size: int = Field(256, ge=4, description="the only input size of the full model (its MLP sees the whole map)")
    light: bool = Field(False, description="pool before the gamma/beta MLP: any input size, fewer parameters")


class UGATITDiscConfig(StrictModel):
    """UGATIT CAM discriminator (:class:`copymark.nets.ugatit.UGATITDiscriminator`).

    ``n_layers=7``: the global D; ``n_layers=5``: the local D.
    """

    kind: Literal["ugatit_disc"] = "ugatit_disc"
    in_channels: Pos = 3
    ndf: Pos = Field(64, description="filters of the first layer")
    n_layers: int = Field(7, ge=3, description="7: the global discriminator, 5: the local one")


class SRResNetConfig(StrictModel):
    """SRResNet (:class:`copymark.nets.srresnet.SRResNet`); the paper's at defaults."""

    kind: Literal["srresnet"] = "srresnet"
    scale: Literal[2, 4, 8] = Field(4, description="upscaling factor")
    n_blocks: int = Field(16, ge=0, description="residual blocks")
    nf: Pos = Field(64, description="filters of every block")
    batch_norm: bool = Field(True, description="batch norm in the residual blocks (the paper's)")
    image_skip: bool = Field(
        False, description="predict a residual on the bicubic upscale (VDSR / MSRResNet style; not the paper's)"
    )


class SRGANDiscConfig(StrictModel):
    """SRGAN discriminator (:class:`copymark.nets.srresnet.SRGANDiscriminator`), any input size."""

    kind: Literal["srgan_disc"] = "srgan_disc"
    in_channels: Pos = 3
    ndf: Pos = Field(64, description="filters of the first block (x2 per block)")
    n_blocks: Pos = Field(4, description="conv blocks (each a stride-1 and a stride-2 conv)")
    dense: Pos = Field(1024, description="units of the hidden dense layer")
    pool_size: Pos = Field(
        6, description="adaptive pooling to pool_size x pool_size before the dense layers (any input size)"
    )


class SRGANLeftthomasConfig(StrictModel):
    """The leftthomas/SRGAN generator (:class:`copymark.nets.victims.LeftthomasSRGANGenerator`)."""

    kind: Literal["srgan_leftthomas"] = "srgan_leftthomas"
    scale: Literal[2, 4, 8] = 4


class FNSTMobileNetConfig(StrictModel):
    """Fast neural style MobileNetV2 transformer (:class:`copymark.nets.victims.TransformerMobileNet`)."""

    kind: Literal["fnst_mobilenet"] = "fnst_mobilenet"


class CycleGANMobileConfig(StrictModel):
    """GAN Compression's mobile ResNet-9 CycleGAN generator (:class:`copymark.nets.victims.MobileResnetGenerator`).

    Defaults = the released compressed horse->zebra student (``16_16_32_16_32_32_16_16`` at ngf 64).
    """

    kind: Literal["cyclegan_mobile"] = "cyclegan_mobile"
    stem: Pos = 16
    down: Pos = 32
    dim: Pos = 128
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [64] * 3 + [128] * 6)
    up: tuple[Pos, Pos] = (32, 16)


NetConfig = Annotated[
    UNetConfig
    | PatchGANConfig
    | ResnetGenConfig
    | UGATITGenConfig
    | UGATITDiscConfig
    | SRResNetConfig
    | SRGANDiscConfig
    | SRGANLeftthomasConfig
    | FNSTMobileNetConfig
    | CycleGANMobileConfig
    | En2DConfig
    | GglNetConfig
    | XuNetConfig
    | YeNetConfig
    | SRNetConfig
    | ResNet18Config
    | SmallCNNConfig,
    Field(discriminator="kind"),
]
NET_KINDS: tuple[str, ...] = (
    "unet",
    "patchgan",
    "resnet_gen",
    "ugatit_gen",
    "ugatit_disc",
    "srresnet",
    "srgan_disc",
    "srgan_leftthomas",
    "fnst_mobilenet",
    "cyclegan_mobile",
    "en2d",
    "gglnet",
    "xunet",
    "yenet",
    "srnet",
    "resnet18",
    "small_cnn",
)
_ADAPTER: TypeAdapter[Any] = TypeAdapter(NetConfig)


def parse_net_config(data: dict[str, Any] | StrictModel, where: str = "net config") -> NetConfig:
    """Validate a dict (e.g. from JSON) into the config class its ``kind`` names.

    Raises ConfigError naming each bad key (unknown key, bad value, unknown ``kind``).
    """
    if isinstance(data, StrictModel):
        data = data.model_dump()
    if not isinstance(data, dict) or "kind" not in data:
        raise ConfigError(f"{where}: needs a 'kind'", hint=f"one of {', '.join(NET_KINDS)}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, where), hint=f"kinds: {', '.join(NET_KINDS)}") from None


def build_net(config: NetConfig) -> nn.Module:
    """A freshly initialised net (PyTorch default init, train mode) for ``config``."""
    # Imports are local so that importing the configs stays cheap.
    match config:
        case UNetConfig():
            from copymark.nets.unet import UNetGenerator

            return UNetGenerator(
                config.in_channels, config.out_channels, config.ngf, config.num_downs, config.norm, config.use_dropout
            )
        case PatchGANConfig():
            from copymark.nets.patchgan import PatchGANDiscriminator

            return PatchGANDiscriminator(config.in_channels, config.ndf, config.n_layers, config.norm)
        case ResnetGenConfig():
            from copymark.nets.resnet_gen import ResnetGenerator

            return ResnetGenerator(
                config.in_channels, config.out_channels, config.ngf, config.n_blocks, config.norm, config.use_dropout
            )
        case UGATITGenConfig():
            from copymark.nets.ugatit import UGATITGenerator

            return UGATITGenerator(
                config.in_channels, config.out_channels, config.ngf, config.n_blocks, config.img_size, config.light
            )
        case UGATITDiscConfig():
            from copymark.nets.ugatit import UGATITDiscriminator

            return UGATITDiscriminator(config.in_channels, config.ndf, config.n_layers)
        case SRResNetConfig():
            from copymark.nets.srresnet import SRResNet

            return SRResNet(config.scale, config.n_blocks, config.nf, config.batch_norm, image_skip=config.image_skip)
        case SRGANDiscConfig():
            from copymark.nets.srresnet import SRGANDiscriminator

            return SRGANDiscriminator(config.in_channels, config.ndf, config.n_blocks, config.dense, config.pool_size)
        case SRGANLeftthomasConfig():
            from copymark.nets.victims import LeftthomasSRGANGenerator

            return LeftthomasSRGANGenerator(config.scale)
        case FNSTMobileNetConfig():
            from copymark.nets.victims import TransformerMobileNet

            return TransformerMobileNet()
        case CycleGANMobileConfig():
            from copymark.nets.victims import MobileResnetGenerator

            return MobileResnetGenerator(config.stem, config.down, config.dim, tuple(config.hidden), config.up)
        case En2DConfig() | GglNetConfig():
            from copymark.nets.stego import build_stego_net

            return build_stego_net(config)
        case XuNetConfig() | YeNetConfig() | SRNetConfig():
            from copymark.nets.steganalysis import build_steganalyzer

            return build_steganalyzer(config)
        case ResNet18Config() | SmallCNNConfig():
            from copymark.nets.classifiers import build_classifier

            return build_classifier(config)
        case _:
            raise ConfigError(f"not a net config: {type(config).__name__}", hint=f"kinds: {', '.join(NET_KINDS)}")


def unwrap(net: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(net, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            net = net.module
        elif hasattr(net, "_orig_mod") and isinstance(net._orig_mod, nn.Module):
            net = net._orig_mod
        else:
            return net


def save_net(folder: str | Path, net: nn.Module, config: NetConfig, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``net``'s weights and ``config`` as a copymark checkpoint folder (atomic files).

    Wrappers (DDP, ``torch.compile``) are unwrapped first. Raises WeightsError when ``net`` is
    not the class ``config`` builds (a checkpoint must be loadable by :func:`load_net`).
    """
    config = parse_net_config(config)
    plain = unwrap(net)
    expected = _net_class(config)
    if type(plain) is not expected:
        raise WeightsError(
            f"save_net: net is a {type(plain).__name__} but config kind '{config.kind}' builds a {expected.__name__}",
            hint="pass the config the net was built from",
        )
    return save_checkpoint(folder, plain.state_dict(), config.model_dump(), provenance)


def load_net(
    folder: str | Path,
    device: str | torch.device = "cpu",
    expected_kind: str | tuple[str, ...] | None = None,
) -> tuple[nn.Module, NetConfig]:
    """Rebuild the net of a checkpoint folder, load its weights strictly -> ``(net, config)``.

    The net is returned in **eval mode** on ``device`` (inference is deterministic: no dropout,
    BatchNorm running statistics); call ``.train()`` to continue training. ``expected_kind``
    (one kind or several) makes a checkpoint of another architecture a WeightsError.
    """
    state, meta = load_checkpoint(folder)
    try:
        config = parse_net_config(meta["config"], where=f"{folder}/config.json: config")
    except ConfigError as err:
        raise WeightsError(
            err.message, hint="this checkpoint was written for another net layout or copymark version"
        ) from None
    if expected_kind is not None:
        kinds = (expected_kind,) if isinstance(expected_kind, str) else tuple(expected_kind)
        if config.kind not in kinds:
            raise WeightsError(
                f"{folder}: checkpoint holds a '{config.kind}' net, expected {' or '.join(repr(k) for k in kinds)}",
                hint="pass a checkpoint of the right model",
            )
    net = build_net(config)
    load_strict(net, state, str(folder))
    return net.to(device).eval(), config


def _net_class(config: NetConfig) -> type[nn.Module]:
    """The class :func:`build_net` returns for ``config`` (without building it)."""
    match config:
        case UNetConfig():
            from copymark.nets.unet import UNetGenerator as cls
        case PatchGANConfig():
            from copymark.nets.patchgan import PatchGANDiscriminator as cls
        case ResnetGenConfig():
            from copymark.nets.resnet_gen import ResnetGenerator as cls
        case UGATITGenConfig():
            from copymark.nets.ugatit import UGATITGenerator as cls
        case UGATITDiscConfig():
            from copymark.nets.ugatit import UGATITDiscriminator as cls
        case SRResNetConfig():
            from copymark.nets.srresnet import SRResNet as cls
        case SRGANDiscConfig():
            from copymark.nets.srresnet import SRGANDiscriminator as cls
        case SRGANLeftthomasConfig():
            from copymark.nets.victims import LeftthomasSRGANGenerator as cls
        case FNSTMobileNetConfig():
            from copymark.nets.victims import TransformerMobileNet as cls
        case CycleGANMobileConfig():
            from copymark.nets.victims import MobileResnetGenerator as cls
        case En2DConfig():
            from copymark.nets.stego import En2D as cls
        case GglNetConfig():
            from copymark.nets.stego import GglNet as cls
        case XuNetConfig():
            from copymark.nets.steganalysis import XuNet as cls
        case YeNetConfig():
            from copymark.nets.steganalysis import YeNet as cls
        case SRNetConfig():
            from copymark.nets.steganalysis import SRNet as cls
        case ResNet18Config():
            from copymark.nets.classifiers import ResNet18 as cls
        case SmallCNNConfig():
            from copymark.nets.classifiers import SmallCNN as cls
        case _:
            raise ConfigError(f"not a net config: {type(config).__name__}")
    return cls
