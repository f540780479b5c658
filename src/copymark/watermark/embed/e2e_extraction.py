"""E2E-Extraction (the security study, Sec. 3.2): the ACSAC19 end-to-end loop with the codec's
secret extractor in place of the steganalyzer, so the secret can be recovered from a trigger.

The study keeps ACSAC19's training strategy and loss and replaces the pair (hiding net,
steganalyzer) by a codec pair (hiding net, extractor) trained together. One iteration, with
``c, s, l`` the trigger batch's covers, secrets and labels and ``x, y`` the main batch:

1. **codec**: ``t = encode(c, s)``; ``r = decode(q(t))`` where ``q`` rounds to 8 bits with a
   straight-through gradient (the owner reveals from the stored 8-bit trigger; GglNet adds
   its training noise before revealing, as in its own training);
2. **codec**: ``3 MSE(t, c) + 5 (1 - SSIM(t, c)) + w_reveal MSE(r, s) + 0.1 CE(host(q(t)), l)``
   with the host frozen; one Adam step over the encoder and the extractor (``w_reveal`` = 1:
   the extraction term takes the adversarial term's place and weight);
3. **host**: one SGD step on ``[x, q(t)]`` with labels ``[y, l]``.

Everything else (optimisers, schedules, trigger batches, labels, what differs from the
reference) is as in :mod:`~copymark.watermark.embed.acsac19`. ``codec_from`` (set by
``copymark protect --codec CKPT``) starts the codec from a trained En2D/GglNet of the same
architecture instead of from scratch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from copymark.train.loop import StepContext
from copymark.watermark.embed.acsac19 import EndToEndConfig
from copymark.watermark.embed.base import EmbedProcedure, frozen_while, step_decay
from copymark.watermark.embed.losses import ssim_loss_term, straight_through_8bit


class E2EExtractionConfig(EndToEndConfig):
    """E2E-Extraction end to end: codec (hiding net + extractor) + host."""

    kind: Literal["e2e-extraction"] = "e2e-extraction"
    w_reveal: float = Field(1.0, ge=0, description="weight of MSE(revealed secret, secret)")


class HideRevealPass(nn.Module):
    """What the loop wraps for the codec: encode, round to 8 bits (straight through), reveal."""

    def __init__(self, codec: nn.Module):
        super().__init__()
        self.codec = codec

    def forward(self, cover: torch.Tensor, secret: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stego = self.codec.encode(cover, secret)
        seen = straight_through_8bit(stego.float()).to(stego.dtype)
        noise = float(getattr(self.codec, "noise_std", 0.0))
        revealed_from = seen + noise * torch.randn_like(seen) if self.codec.training and noise > 0 else seen
        return stego, seen, self.codec.decode(revealed_from)


class E2EExtraction(EmbedProcedure):
    """The E2E-Extraction iteration of the module docstring."""

    kind = "e2e-extraction"

    def __init__(
        self,
        config: E2EExtractionConfig,
        host_config: Any,
        covers: torch.Tensor,
        secrets: torch.Tensor,
        labels: list[int],
        iters: int,
    ):
        from copymark.nets.build import build_net

        super().__init__(host_config, config.host_optim, iters, labels, config.trigger_batch)
        self.config = config
        codec = build_net(config.codec)
        self.nets["codec"] = codec
        self.net_configs["codec"] = config.codec
        self.optimizers["codec"] = torch.optim.Adam(codec.parameters(), lr=config.codec_lr, betas=config.adam_betas)
        self.schedulers["codec"] = step_decay(self.optimizers["codec"], config.decay_at, config.decay_factor, iters)
        self._cpu.update({"covers": covers.float(), "secrets": secrets.float()})

    def train_module(self, name: str) -> nn.Module:
        return HideRevealPass(self.nets["codec"]) if name == "codec" else self.nets[name]

    def step(self, batch: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
        x, y = batch
        c, s, l = self.trigger_batch_of(ctx, "covers", "secrets", "labels")
        cfg = self.config
        with frozen_while([self.nets["host"]]):
            with ctx.autocast():
                stego, seen, revealed = self.net("codec")(c, s)
                logits = self.frozen("host")(seen)
            stego = stego.float()
            mse = F.mse_loss(stego, c)
            ssim = ssim_loss_term(stego, c)
            reveal = F.mse_loss(revealed.float(), s)
            ce = F.cross_entropy(logits.float(), l)
            loss_h = cfg.w_mse * mse + cfg.w_ssim * (1 - ssim) + cfg.w_reveal * reveal + cfg.w_ce * ce
            ctx.update(loss_h, self.optimizers["codec"])
        out = self.host_update(x, y, seen.detach().float(), l, ctx)
        return {
            "loss_codec": loss_h.detach(),
            "mse": mse.detach(),
            "ssim": ssim.detach(),
            "mse_secret": reveal.detach(),
            "ce_trigger": ce.detach(),
            **out,
        }

    def sample_images(self, batch: Any) -> list[torch.Tensor]:
        """Rows: cover, trigger, |trigger - cover| x 5, secret, revealed secret (the study's figure layout)."""
        dev = next(self.nets["host"].parameters()).device
        k = min(4, self.n_triggers)
        c, s = self.tensor("covers", dev)[:k], self.tensor("secrets", dev)[:k]
        codec = self.nets["codec"]
        t = torch.round(codec.encode(c, s).clamp(0, 1) * 255) / 255
        return [c, t, ((t - c).abs() * 5).clamp(0, 1), s, codec.decode(t).clamp(0, 1)]

    def provenance(self) -> dict[str, Any]:
        return {"method": self.kind, "codec": self.config.codec.kind}
