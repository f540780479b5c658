"""Steganography codecs behind one interface: ``hide(cover, secret) -> stego``, ``reveal(stego) -> secret``.

A *codec* hides a whole RGB secret image inside an RGB cover image of the same size. All
codecs take and return float ``N x 3 x H x W`` batches in ``[0, 1]`` (the image convention of
:mod:`copymark.images`), for sizes that are multiples of 8 from 32 to 256 px per side.

* :class:`LSBCodec` (``kind="lsb"``): the classical baseline, no training. The secret's top
  ``bits`` bits replace the cover's low ``bits`` bits (8-bit arithmetic); ``reveal`` shifts
  them back up and fills the lost low bits with the middle of their range. The top ``bits``
  bits of every secret pixel survive exactly.
* :class:`NeuralCodec` (``kind="en2d"`` or ``"gglnet"``): a trained net of
  :mod:`copymark.nets.stego`, run in eval mode without gradients; the stego image is clamped
  to ``[0, 1]``.

Checkpoints (:func:`save_codec` / :func:`load_codec`) are copymark net checkpoint folders
(written and read by :func:`copymark.nets.build.save_net` / :func:`~copymark.nets.build.load_net`,
the one path every net kind uses) whose ``config.kind`` names the codec; an LSB codec is a
config with no weights. Loading one of another kind than expected is a
:class:`~copymark.errors.WeightsError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from pydantic import Field

from copymark.checkpoints import load_checkpoint, read_checkpoint_meta, save_checkpoint
from copymark.config import StrictModel, parse_config
from copymark.errors import ImageError, WeightsError
from copymark.images import from_uint8, to_uint8
from copymark.nets.build import load_net, save_net
from copymark.nets.stego import En2D, En2DConfig, GglNet, GglNetConfig, build_stego_net

MIN_SIZE = 32
MAX_SIZE = 256
SIZE_STEP = 8

CodecKind = Literal["lsb", "en2d", "gglnet"]
CODEC_KINDS: tuple[str, ...] = ("lsb", "en2d", "gglnet")


class LSBCodecConfig(StrictModel):
    """The classical baseline: ``bits`` low bits of the cover carry the secret's top bits."""

    kind: Literal["lsb"] = "lsb"
    bits: int = Field(4, ge=1, le=7, description="how many low bits of each cover byte carry the secret")


CodecConfig = LSBCodecConfig | En2DConfig | GglNetConfig


class Codec(Protocol):
    """What every codec offers."""

    @property
    def kind(self) -> str: ...

    def hide(self, cover: torch.Tensor, secret: torch.Tensor) -> torch.Tensor: ...

    def reveal(self, stego: torch.Tensor) -> torch.Tensor: ...


# ---------------------------------------------------------------------------------------------
# input checks


def check_image_batch(x: Any, what: str) -> None:
    """Raise :class:`ImageError` unless ``x`` is a float ``N x 3 x H x W`` batch in [0, 1] of a codec size."""
    if not isinstance(x, torch.Tensor):
        raise ImageError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ImageError(
            f"{what}: expected a batch of shape N x 3 x H x W, got shape {tuple(x.shape)}",
            hint="add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else None,
        )
    if x.shape[1] == 1:
        raise ImageError(
            f"{what}: grayscale (1-channel) input {tuple(x.shape)}; codecs hide RGB in RGB",
            hint="repeat the channel (x.expand(-1, 3, -1, -1)) or load files with copymark.images.load_image, "
            "which converts grayscale to RGB",
        )
    if x.shape[1] != 3:
        raise ImageError(f"{what}: expected 3 (RGB) channels, got {x.shape[1]} in shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ImageError(
            f"{what}: expected a float tensor in [0, 1], got {x.dtype}", hint="use copymark.images.from_uint8"
        )
    h, w = x.shape[-2:]
    for name, n in (("height", h), ("width", w)):
        if n % SIZE_STEP or not MIN_SIZE <= n <= MAX_SIZE:
            raise ImageError(
                f"{what}: {name} {n} px is not supported; sizes must be multiples of {SIZE_STEP} "
                f"from {MIN_SIZE} to {MAX_SIZE} (got {h}x{w})",
                hint="resize or crop the images, e.g. with copymark.images.center_crop / resize_bicubic",
            )
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if not (lo >= -1e-6 and hi <= 1 + 1e-6):  # also catches NaN
            raise ImageError(f"{what}: values must lie in [0, 1], got min {lo:.4g}, max {hi:.4g}")


def check_pair(cover: Any, secret: Any) -> None:
    """Check a cover and a secret batch: each valid, and of the same shape."""
    check_image_batch(cover, "cover")
    check_image_batch(secret, "secret")
    if cover.shape != secret.shape:
        raise ImageError(
            f"cover {tuple(cover.shape)} and secret {tuple(secret.shape)} differ in shape; "
            "a codec hides one secret of the cover's size in each cover",
            hint="resize the secrets to the covers' size and pass as many of each",
        )


# ---------------------------------------------------------------------------------------------
# codecs


class LSBCodec:
    """Classical LSB substitution of the secret's top ``bits`` bits (no training)."""

    def __init__(self, config: LSBCodecConfig | None = None):
        self.config = config or LSBCodecConfig()

    @property
    def kind(self) -> str:
        return "lsb"

    @property
    def bits(self) -> int:
        return self.config.bits

    def hide(self, cover: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        check_pair(cover, secret)
        k = self.bits
        low_mask = (1 << k) - 1
        c8 = to_uint8(cover)
        s8 = to_uint8(secret)
        stego8 = (c8 & (255 - low_mask)) | (s8 >> (8 - k))
        return from_uint8(stego8)

    def reveal(self, stego: torch.Tensor) -> torch.Tensor:
        check_image_batch(stego, "stego")
        k = self.bits
        low_mask = (1 << k) - 1
        top = (to_uint8(stego) & low_mask) << (8 - k)
        mid = 1 << (8 - k - 1)  # centre of the range of the lost low bits
        return from_uint8(top | mid)


class NeuralCodec:
    """A trained En2D or GglNet net behind the codec interface (eval mode, no gradients)."""

    def __init__(self, config: En2DConfig | GglNetConfig, net: En2D | GglNet | None = None):
        self.config = config
        self.net = net if net is not None else build_stego_net(config)

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> NeuralCodec:
        self.net.to(device)
        return self

    def hide(self, cover: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        check_pair(cover, secret)
        self.net.eval()
        dev = self.device
        with torch.no_grad():
            stego = self.net.encode(cover.to(dev, torch.float32), secret.to(dev, torch.float32))
        return stego.clamp(0, 1).to(cover.device)

    def reveal(self, stego: torch.Tensor) -> torch.Tensor:
        check_image_batch(stego, "stego")
        self.net.eval()
        with torch.no_grad():
            out = self.net.decode(stego.to(self.device, torch.float32))
        return out.clamp(0, 1).to(stego.device)


def build_codec(config: CodecConfig) -> LSBCodec | NeuralCodec:
    """A fresh codec for ``config`` (neural codecs start from random weights)."""
    match config:
        case LSBCodecConfig():
            return LSBCodec(config)
        case En2DConfig() | GglNetConfig():
            return NeuralCodec(config)
    raise TypeError(f"not a codec config: {type(config).__name__}")


# ---------------------------------------------------------------------------------------------
# checkpoints


def save_codec(folder: str | Path, codec: LSBCodec | NeuralCodec, provenance: dict[str, Any] | None = None) -> Path:
    """Write a codec checkpoint folder: a neural codec through the one net checkpoint path
    (:func:`copymark.nets.build.save_net`); LSB as a config with no weights."""
    if isinstance(codec, NeuralCodec):
        return save_net(folder, codec.net, codec.config, provenance)
    return save_checkpoint(folder, {}, codec.config.model_dump(), provenance)


def load_codec(
    folder: str | Path, expected_kind: CodecKind | None = None, map_location: str | torch.device = "cpu"
) -> LSBCodec | NeuralCodec:
    """Load a codec checkpoint (neural codecs through :func:`copymark.nets.build.load_net`:
    strict weights, eval mode). A checkpoint of another kind than ``expected_kind``, or of a
    model that is no codec, is a WeightsError."""
    meta = read_checkpoint_meta(folder)
    kind = meta["config"].get("kind")
    if kind not in CODEC_KINDS:
        raise WeightsError(
            f"{folder}/config.json: kind {kind!r} is not a steganography codec (expected one of {', '.join(CODEC_KINDS)})",
            hint="pass a checkpoint written by `copymark stego train`",
        )
    if expected_kind is not None and kind != expected_kind:
        raise WeightsError(
            f"{folder}: checkpoint holds a {kind!r} model, not a {expected_kind!r} codec",
            hint=f"pass a checkpoint trained with --codec {expected_kind}",
        )
    if kind == "lsb":
        state, _ = load_checkpoint(folder)
        if state:
            raise WeightsError(f"{folder}: an LSB codec has no weights, but the checkpoint holds {len(state)} tensors")
        return LSBCodec(parse_config(LSBCodecConfig, meta["config"], where=f"{folder}/config.json"))
    net, config = load_net(folder, map_location, expected_kind=kind)
    return NeuralCodec(config, net)  # type: ignore[arg-type]
