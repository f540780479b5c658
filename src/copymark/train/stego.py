"""Training procedure of the learned steganography codecs (En2D, GglNet) on the shared loop.

One step: hide a batch of secrets in a batch of covers, reveal them, and minimise

    loss = MSE(stego, cover) + beta * MSE(revealed, secret)

with one Adam optimiser over the whole codec (hiding and revealing nets together), as the
security study trained both codecs ("the widely-used mean-squared-error loss function and the
Adam optimizer"; Baluja 2017 and ur Rehman et al. 2018 use the same two-term loss). The cover
term only reaches the hiding part; the secret term trains both. GglNet adds its training noise
to the stego image inside its ``forward``.

Study defaults (:data:`STUDY_DEFAULTS`): En2D lr 1e-3, batch 30; GglNet lr 1e-4, batch 20.
``beta`` is not stated in the study; we use 1.0 for En2D and 0.75 for GglNet (the value of
Baluja's paper figures and common re-implementations).

Options (defaults: the study's training): ``schedule="cosine"`` decays the learning rate to 0
over the run (it needs the run's ``iters``); ``round_stego`` lets the decoder see the stego
clamped and rounded to 8 bits, as a PNG trigger holds it, with a straight-through gradient
(:func:`straight_through_round`). Measured on CIFAR-10 (benchmarks/stego_quality.py): rounding is
not what limits quality at these PSNRs (revealing from the unrounded stego gains < 0.1 dB below
31 dB) and it cost about 1 dB in a 1,000-iteration run, so the recommended setting leaves it off;
it is there for codecs whose residual nears the 8-bit step (stego PSNR well above 40 dB).

:data:`RECOMMENDED` is the setting for CPU budgets: the residual En2D with a 16-filter decoder
(see :mod:`copymark.nets.stego`), cosine schedule and batch 2. Small batches win on a CPU
because the codec is small and learning is limited by the number of updates: for the same
16,000 training images, batch 16 / 8 / 4 / 2 gave 48.4 / 50.7 / 52.4 / 54.0 dB of stego + secret
PSNR on held-out CIFAR-10 pairs.

Data: :class:`StegoPairs` pairs cover ``i`` with a secret drawn from the secret set by a
generator seeded by ``(seed, epoch, i)``, so the pairing is random but reproducible and a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

from copymark.config import StrictModel
from copymark.data.transforms import item_generator
from copymark.errors import ConfigError
from copymark.images import from_uint8
from copymark.nets.stego import En2D, En2DConfig, GglNet, GglNetConfig, build_stego_net
from copymark.train.loop import Procedure, StepContext

CodecNetConfig = Annotated[En2DConfig | GglNetConfig, Field(discriminator="kind")]

STUDY_DEFAULTS: dict[str, dict[str, float | int]] = {
    "en2d": {"lr": 1e-3, "batch_size": 30, "beta": 1.0},
    "gglnet": {"lr": 1e-4, "batch_size": 20, "beta": 0.75},
}
"""Learning rate and batch size of the security study per codec; beta as explained above."""


class StegoTrainConfig(StrictModel):
    """What the stego procedure trains and how (the loop's own settings are in LoopConfig)."""

    kind: Literal["stego"] = "stego"
    codec: CodecNetConfig = Field(default_factory=En2DConfig)
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    beta: float = Field(1.0, ge=0, description="weight of the revealed-secret MSE")
    adam_betas: tuple[float, float] = (0.9, 0.999)
    round_stego: bool = Field(
        False,
        description="the decoder sees the stego clamped and rounded to 8 bits (as a PNG holds it), "
        "with a straight-through gradient",
    )
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning-rate schedule over the run's iterations (cosine: down to 0 at the end)"
    )


_RECOMMENDED_CODEC = {"kind": "en2d", "width": 16, "decoder_width": 16, "residual_scale": 1.0}

RECOMMENDED: dict[str, Any] = {
    "procedure": {"kind": "stego", "codec": _RECOMMENDED_CODEC, "lr": 1e-3, "beta": 1.0, "schedule": "cosine"},
    "batch_size": 2,
}
"""The recommended codec training on CPU (measured in benchmarks/results/stego_quality_*.json):
a residual En2D (stego = cover + tanh(encoder)) with six 16-filter decoder layers, Adam 1e-3 with
a cosine decay, batch 2. Pass ``procedure`` as the procedure config and ``batch_size`` as the
loop's batch size; set the loop's ``iters`` to the budget (the schedule spans it)."""

RECOMMENDED_FINETUNE: dict[str, Any] = {
    "procedure": {"kind": "stego", "codec": _RECOMMENDED_CODEC, "lr": 5e-4, "beta": 0.25, "schedule": "cosine"},
    "batch_size": 2,
}
"""The second stage: a run started (``init_from``) from a :data:`RECOMMENDED` codec with the
cover MSE weighted 4x more and half the learning rate, which moves the codec toward the stego
PSNR target; also the stage that carries a 32 px codec to 64 px images."""


def recommended_train_config(stage: Literal["train", "finetune"] = "train") -> StegoTrainConfig:
    """The procedure config of :data:`RECOMMENDED` (``train``) or :data:`RECOMMENDED_FINETUNE`."""
    return StegoTrainConfig.model_validate((RECOMMENDED if stage == "train" else RECOMMENDED_FINETUNE)["procedure"])


def stego_train_config(
    codec: Literal["en2d", "gglnet"], lr: float | None = None, beta: float | None = None, **arch: Any
) -> StegoTrainConfig:
    """Config with the study's defaults for ``codec``; ``arch`` overrides architecture fields."""
    d = STUDY_DEFAULTS[codec]
    net = En2DConfig(**arch) if codec == "en2d" else GglNetConfig(**arch)
    return StegoTrainConfig(
        codec=net, lr=float(d["lr"] if lr is None else lr), beta=float(d["beta"] if beta is None else beta)
    )


PRESETS = ("study", "recommended", "recommended-finetune")


def preset_train_config(
    preset: str,
    codec: Literal["en2d", "gglnet"],
    lr: float | None = None,
    beta: float | None = None,
    schedule: str | None = None,
    arch: dict[str, Any] | None = None,
) -> tuple[StegoTrainConfig, int]:
    """The procedure config and batch size of a named preset, explicit values overriding it.

    ``study``: :data:`STUDY_DEFAULTS` (constant schedule); ``recommended`` and
    ``recommended-finetune``: :data:`RECOMMENDED` and :data:`RECOMMENDED_FINETUNE` (En2D only;
    ``arch`` keys override the residual En2D's).
    """
    if preset not in PRESETS:
        raise ConfigError(
            f"--preset {preset!r} is not a codec training preset", hint=f"use one of {', '.join(PRESETS)}"
        )
    if schedule is not None and schedule not in ("constant", "cosine"):
        raise ConfigError(f"--schedule {schedule!r} is not a schedule", hint="use constant or cosine")
    if preset == "study":
        base = stego_train_config(codec, lr=lr, beta=beta, **(arch or {}))
        bs = int(STUDY_DEFAULTS[codec]["batch_size"])
        return (base if schedule is None else base.model_copy(update={"schedule": schedule})), bs
    if codec != "en2d":
        raise ConfigError(f"--preset {preset} is an En2D setting, not one for {codec}", hint="use --codec en2d")
    chosen = RECOMMENDED if preset == "recommended" else RECOMMENDED_FINETUNE
    proc = dict(chosen["procedure"])
    proc["codec"] = {**proc["codec"], **(arch or {})}
    for key, value in (("lr", lr), ("beta", beta), ("schedule", schedule)):
        if value is not None:
            proc[key] = value
    return StegoTrainConfig.model_validate(proc), int(chosen["batch_size"])


class StegoPairs(Dataset):
    """Covers (``uint8`` ``N x 3 x S x S``) each paired with a seeded random secret.

    Items are ``{"cover": 3xSxS, "secret": 3xSxS}`` floats in [0, 1]; ``set_epoch`` re-draws
    the pairing (the loop calls it).
    """

    def __init__(self, covers: torch.Tensor, secrets: torch.Tensor, seed: int = 0):
        if covers.shape[1:] != secrets.shape[1:]:
            raise ValueError(f"covers {tuple(covers.shape)} and secrets {tuple(secrets.shape)} differ in image size")
        self.covers, self.secrets, self.seed, self.epoch = covers, secrets, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.covers)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = item_generator(self.seed, self.epoch, index)
        j = int(torch.randint(len(self.secrets), (1,), generator=g))
        return {"cover": from_uint8(self.covers[index]), "secret": from_uint8(self.secrets[j])}


def straight_through_round(x: torch.Tensor) -> torch.Tensor:
    """``x`` clamped to [0, 1] and rounded to the nearest 8-bit level in the forward pass, with
    the identity as gradient (the straight-through estimator of Bengio et al. 2013): the decoder
    learns from the stego a PNG file holds, and the encoder still gets the decoder's gradient."""
    q = torch.round(x.clamp(0, 1) * 255) / 255
    return x + (q - x).detach()


class CodecTrainPass(nn.Module):
    """The codec's training pass (what the loop wraps in DDP / compile): encode, optionally
    round to 8 bits (:func:`straight_through_round`), the net's training channel (GglNet's noise),
    decode. Returns ``(stego, revealed)``; the stego is the unrounded one."""

    def __init__(self, net: En2D | GglNet, round_stego: bool):
        super().__init__()
        self.codec = net
        self.round_stego = round_stego

    def forward(self, cover: torch.Tensor, secret: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stego = self.codec.encode(cover, secret)
        seen = straight_through_round(stego) if self.round_stego else stego
        return stego, self.codec.decode(self.codec.channel(seen))


def lr_factor(step: int, iters: int, schedule: Literal["constant", "cosine"]) -> float:
    """Multiplier of the base learning rate after ``step`` scheduler steps of a run of ``iters``
    (``cosine``: from 1 at the first iteration down to 0 after the last)."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, iters) / iters))
    return 1.0


class StegoProcedure(Procedure):
    """Train an En2D or GglNet codec with the two-term MSE loss.

    ``iters`` (the run's length) is needed by the ``cosine`` schedule; the constant one (the
    study's) needs none.
    """

    kind = "stego"
    export = "codec"

    def __init__(self, config: StegoTrainConfig, iters: int | None = None):
        super().__init__()
        self.config = config
        net = build_stego_net(config.codec)
        self.nets = {"codec": net}
        self.net_configs = {"codec": config.codec}
        opt = torch.optim.Adam(net.parameters(), lr=config.lr, betas=config.adam_betas)
        self.optimizers = {"codec": opt}
        if config.schedule != "constant":
            if iters is None:
                raise ConfigError(
                    f"stego procedure: schedule {config.schedule!r} needs the run's iterations",
                    hint="pass iters= to StegoProcedure (the run orchestrator passes the loop's iters)",
                )
            self.schedulers = {
                "codec": torch.optim.lr_scheduler.LambdaLR(
                    opt, partial(lr_factor, iters=iters, schedule=config.schedule)
                )
            }
        self._train_pass = CodecTrainPass(net, config.round_stego)

    def train_module(self, name: str) -> nn.Module:
        return self._train_pass if name == "codec" else super().train_module(name)

    def step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        cover, secret = batch["cover"], batch["secret"]
        net = self.net("codec")
        with ctx.autocast():
            stego, revealed = net(cover, secret)
        mse_cover = F.mse_loss(stego.float(), cover.float())
        mse_secret = F.mse_loss(revealed.float(), secret.float())
        loss = mse_cover + self.config.beta * mse_secret
        ctx.update(loss, self.optimizers["codec"])
        return {"loss": loss.detach(), "mse_cover": mse_cover.detach(), "mse_secret": mse_secret.detach()}

    def sample_images(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Rows: cover, stego, |stego - cover| x 5, secret, revealed (the study's figure layout)."""
        net = self.nets["codec"]
        cover, secret = batch["cover"], batch["secret"]
        stego = net.encode(cover, secret).clamp(0, 1)
        revealed = net.decode(stego).clamp(0, 1)
        return [cover, stego, ((stego - cover).abs() * 5).clamp(0, 1), secret, revealed]

    def provenance(self) -> dict[str, Any]:
        c = self.config
        out: dict[str, Any] = {"codec": c.codec.kind, "lr": c.lr, "beta": c.beta}
        if c.round_stego or c.schedule != "constant":
            out.update(round_stego=c.round_stego, schedule=c.schedule)
        return out
