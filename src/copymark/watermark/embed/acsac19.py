"""ACSAC19 (Li et al., "How to Prove Your Model Belongs to You: A Blind-Watermark based
Framework to Protect Intellectual Property of DNN", ACSAC 2019): the hiding net, a
steganalyzer discriminator and the host trained together, end to end.

One iteration (the order of the reference implementation, zhenglisec/Blind-Watermark-for-DNN
``WM_train.py``), with ``c`` the trigger batch's covers, ``s`` their secrets, ``l`` their
verification labels and ``x, y`` the main batch:

1. **hiding net**: ``t = encode(c, s)``; the host and the discriminator see ``t`` rounded to
   8 bits (:func:`~copymark.watermark.embed.losses.straight_through_8bit`), as the trigger will
   be stored and sent;
2. **discriminator** (a steganalyzer): cross-entropy on ``[t, c]`` with targets stego / cover;
   Adam step;
3. **hiding net**: ``3 MSE(t, c) + 5 (1 - SSIM(t, c)) + 1 CE(D(t), cover) + 0.1 CE(host(t), l)``
   (the discriminator and the host frozen); Adam step;
4. **host**: one SGD step on ``[x, t]`` with labels ``[y, l]``
   (:meth:`~copymark.watermark.embed.base.EmbedProcedure.host_update`).

Settings we follow: the loss weights (3, 5, 1, 0.1), Adam lr 1e-3 betas (0.5, 0.999) for the
hiding net and the discriminator (lowered x0.2 twice, below), host SGD lr 0.1 momentum 0.9 weight decay 5e-4 with a x0.1
step decay at 40% and 80% of the run (the reference: epochs 40 and 80 of 100), a trigger batch
of 20 appended to each main batch (100 in the reference), 500 triggers made from training
images (about 1% of CIFAR-10's training set), triggers cycled in a fixed order, crop + flip
augmentation of the main images only.

Where we differ, and why:

* **Verification labels** follow :mod:`~copymark.watermark.embed.labels` (never the cover's
  class nor an unprotected model's answer on the cover); the reference draws them uniformly
  from all 10 classes, so about 1 in 10 equals the cover's class.
* **Secrets**: one per trigger from the ``--secrets`` folder (cycled); the reference hides one
  IEEE logo in every trigger (a one-image folder does the same).
* **Hiding net**: a codec of the stego zoo (En2D by default, GglNet; its encoder, while its
  revealing part stays frozen and unused) instead of the reference's two-branch UNet with a
  tanh output, so the trigger generator is the same family the other methods use and the kit
  holds a codec checkpoint; **discriminator**: a steganalyzer of the zoo (XuNet by default,
  YeNet, SRNet) on cover/stego batches together (cross-entropy on two logits) instead of the
  reference's 3072-64-32-1 MLP (which only takes 32 px) with BCE on separate batches.
* **8-bit triggers**: the reference trains on float stego images; we round them (with a
  straight-through gradient) so that trigger accuracy holds for the stored PNGs.
* **Schedules**: the reference lowers the hiding and discriminator learning rates x0.2 on
  validation-loss plateaus (ReduceLROnPlateau, patience 5 and 8 epochs); we lower them x0.2 at
  fixed points, 40% and 80% of the run (``decay_at``, ``decay_factor``), since the loop has no
  validation pass between iterations. Without any decay the co-training does not settle: a
  late Adam step (beta1 = 0.5) can throw the hiding net off in the last iterations.
* **Normalisation**: our hosts normalise inside ``forward`` (ImageNet mean/std by default; the
  reference feeds ``(x - 0.5) / 0.5``: set ``mean``/``std`` in the host config).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from copymark.config import StrictModel
from copymark.nets.steganalysis import SRNetConfig, XuNetConfig, YeNetConfig
from copymark.nets.stego import En2DConfig, GglNetConfig
from copymark.train.classifier import AugmentConfig, SGDRecipe
from copymark.train.loop import StepContext
from copymark.watermark.embed.base import EmbedProcedure, frozen_while, reveal_parameters, step_decay
from copymark.watermark.embed.losses import ssim_loss_term, straight_through_8bit

CodecNetConfig = Annotated[En2DConfig | GglNetConfig, Field(discriminator="kind")]
DetectorNetConfig = Annotated[XuNetConfig | YeNetConfig | SRNetConfig, Field(discriminator="kind")]


def reference_host_recipe() -> SGDRecipe:
    """The reference's host optimiser: SGD lr 0.1, momentum 0.9, wd 5e-4, x0.1 at 40% and 80%."""
    return SGDRecipe(lr=0.1, schedule="step", milestones=(0.4, 0.8), gamma=0.1)


class EndToEndConfig(StrictModel):
    """Settings the two end-to-end methods share (defaults: the ACSAC19 reference's)."""

    codec: CodecNetConfig = Field(default_factory=En2DConfig, description="the hiding net (a codec of the stego zoo)")
    host_optim: SGDRecipe = Field(default_factory=reference_host_recipe)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    trigger_batch: int = Field(20, ge=1, description="triggers appended to each main batch")
    cover_negatives: bool = Field(
        False,
        description="also append each trigger's bare cover with its own class, so that the host must learn the "
        "hidden secret rather than the cover image (not in the reference; see embed.base)",
    )
    codec_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the codec (and the discriminator's decay)")
    adam_betas: tuple[float, float] = (0.5, 0.999)
    decay_at: tuple[float, ...] = Field(
        (0.4, 0.8), description="fractions of the run where the codec's (and discriminator's) learning rate drops"
    )
    decay_factor: float = Field(0.2, gt=0, le=1, description="factor of each drop (the reference's plateau factor)")
    w_mse: float = Field(3.0, ge=0, description="weight of MSE(trigger, cover)")
    w_ssim: float = Field(5.0, ge=0, description="weight of 1 - SSIM(trigger, cover)")
    w_ce: float = Field(0.1, ge=0, description="weight of the host's cross-entropy on the triggers")

    @model_validator(mode="after")
    def _check(self) -> Any:
        if any(not 0 < a < 1 for a in self.decay_at) or list(self.decay_at) != sorted(self.decay_at):
            raise ValueError(f"decay_at must be increasing fractions in (0, 1), got {self.decay_at}")
        return self


class ACSAC19Config(EndToEndConfig):
    """ACSAC19 end to end: hiding net + steganalyzer discriminator + host."""

    kind: Literal["acsac19"] = "acsac19"
    discriminator: DetectorNetConfig = Field(default_factory=XuNetConfig)
    disc_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the discriminator")
    w_adv: float = Field(1.0, ge=0, description="weight of the adversarial (fool the discriminator) term")


class EncodePass(nn.Module):
    """What the loop wraps (DDP / compile) for the codec when only its encoder trains."""

    def __init__(self, codec: nn.Module):
        super().__init__()
        self.codec = codec

    def forward(self, cover: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(cover, secret)


class ACSAC19(EmbedProcedure):
    """The ACSAC19 iteration of the module docstring."""

    kind = "acsac19"

    def __init__(
        self,
        config: ACSAC19Config,
        host_config: Any,
        covers: torch.Tensor,
        secrets: torch.Tensor,
        labels: list[int],
        iters: int,
    ):
        from copymark.nets.build import build_net

        super().__init__(host_config, config.host_optim, iters, labels, config.trigger_batch)
        self.config = config
        codec, disc = build_net(config.codec), build_net(config.discriminator)
        for p in reveal_parameters(codec):  # ACSAC19 has no extractor: the codec's revealing part stays as built
            p.requires_grad_(False)
        self.nets.update({"codec": codec, "disc": disc})
        self.net_configs.update({"codec": config.codec, "disc": config.discriminator})
        betas = config.adam_betas
        self.optimizers["codec"] = torch.optim.Adam(
            [p for p in codec.parameters() if p.requires_grad], lr=config.codec_lr, betas=betas
        )
        self.optimizers["disc"] = torch.optim.Adam(disc.parameters(), lr=config.disc_lr, betas=betas)
        for name in ("codec", "disc"):
            self.schedulers[name] = step_decay(self.optimizers[name], config.decay_at, config.decay_factor, iters)
        self._cpu.update({"covers": covers.float(), "secrets": secrets.float()})

    def train_module(self, name: str) -> nn.Module:
        return EncodePass(self.nets["codec"]) if name == "codec" else self.nets[name]

    def step(self, batch: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
        x, y = batch
        c, s, l = self.trigger_batch_of(ctx, "covers", "secrets", "labels")
        cfg = self.config
        with ctx.autocast():
            stego = self.net("codec")(c, s)
        stego = stego.float()
        seen = straight_through_8bit(stego)
        b = len(c)
        # discriminator: 1 = stego, 0 = cover
        with ctx.autocast():
            d = self.net("disc")(torch.cat([seen.detach(), c]))
        target = torch.cat([torch.ones(b), torch.zeros(b)]).long().to(d.device)
        loss_d = F.cross_entropy(d.float(), target)
        ctx.update(loss_d, self.optimizers["disc"])
        # hiding net, with the discriminator and the host frozen
        with frozen_while([self.nets["disc"], self.nets["host"]]):
            with ctx.autocast():
                d_fake = self.frozen("disc")(seen)
                logits = self.frozen("host")(seen)
            mse = F.mse_loss(stego, c)
            ssim = ssim_loss_term(stego, c)
            adv = F.cross_entropy(d_fake.float(), torch.zeros(b, dtype=torch.long, device=d_fake.device))
            ce = F.cross_entropy(logits.float(), l)
            loss_h = cfg.w_mse * mse + cfg.w_ssim * (1 - ssim) + cfg.w_adv * adv + cfg.w_ce * ce
            ctx.update(loss_h, self.optimizers["codec"])
        out = self.host_update(x, y, seen.detach(), l, ctx)
        return {
            "loss_disc": loss_d.detach(),
            "loss_hide": loss_h.detach(),
            "mse": mse.detach(),
            "ssim": ssim.detach(),
            "adv": adv.detach(),
            "ce_trigger": ce.detach(),
            **out,
        }

    def sample_images(self, batch: Any) -> list[torch.Tensor]:
        """Rows: cover, trigger, |trigger - cover| x 5, secret (the first triggers)."""
        dev = next(self.nets["host"].parameters()).device
        k = min(4, self.n_triggers)
        c, s = self.tensor("covers", dev)[:k], self.tensor("secrets", dev)[:k]
        t = self.nets["codec"].encode(c, s).clamp(0, 1)
        return [c, t, ((t - c).abs() * 5).clamp(0, 1), s]

    def provenance(self) -> dict[str, Any]:
        return {"method": self.kind, "codec": self.config.codec.kind, "discriminator": self.config.discriminator.kind}
