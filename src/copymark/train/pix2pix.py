"""pix2pix (Isola et al. 2017): conditional GAN + L1, UNet generator, PatchGAN discriminator.

Per iteration, as the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix,
``pix2pix_model.py``): ``fake = G(A)``; D update on ``0.5 * (GAN(D(A, fake), 0) + GAN(D(A, B), 1))``;
G update on ``GAN(D(A, fake), 1) + lambda_l1 * |fake - B|_1`` with D frozen. The conditional D
sees the input and the output concatenated (6 channels). Vanilla (BCE) GAN loss, lambda 100,
Adam(2e-4, 0.5, 0.999), constant then linearly decaying LR. The UNet depth follows the training
size unless set (:func:`unet_depth_for_size`: the reference's ``unet_128`` at 128 px, ``unet_256``
at 256 px).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from copymark.config import StrictModel
from copymark.errors import ConfigError
from copymark.nets.build import PatchGANConfig, UNetConfig, build_net
from copymark.train.loop import Procedure, StepContext, adam, linear_decay, set_requires_grad
from copymark.train.losses import GanMode, gan_loss

UNET_MIN_DOWNS = 5
UNET_MAX_DOWNS = 8


def unet_depth_for_size(size: int) -> int:
    """The UNet depth (``num_downs``) ``copymark train pix2pix`` uses at ``--size`` unless told otherwise.

    The deepest UNet whose bottleneck is still a whole number of pixels, capped at the
    reference's ``unet_256``: the largest ``k <= 8`` with ``2**k`` dividing ``size``. So 128 px
    gives 7 (the reference's ``unet_128``), 256 px gives 8 (``unet_256``), 64 px 6, 32 px 5, 96 px 5
    (a 3x3 bottleneck) and 512 px 8 (``unet_256`` on larger images, a 2x2 bottleneck). A size that
    is not a multiple of 32 (``2**5``, the shallowest UNet) is a ConfigError.
    """
    k = 0
    while k < UNET_MAX_DOWNS and size % 2 ** (k + 1) == 0:
        k += 1
    if k < UNET_MIN_DOWNS:
        raise ConfigError(
            f"--size {size} does not fit a UNet generator: it must be a multiple of {2**UNET_MIN_DOWNS} "
            f"(2**num_downs, num_downs >= {UNET_MIN_DOWNS})",
            hint=f"use e.g. --size {max(2**UNET_MIN_DOWNS, size - size % 2**UNET_MIN_DOWNS)}, or crop/resize with --resize-policy",
        )
    return k


class Pix2PixConfig(StrictModel):
    kind: Literal["pix2pix"] = "pix2pix"
    generator: UNetConfig = Field(default_factory=UNetConfig)
    discriminator: PatchGANConfig = Field(default_factory=lambda: PatchGANConfig(in_channels=6))
    lr: float = Field(2e-4, gt=0, description="Adam learning rate (G and D)")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
    lambda_l1: float = Field(100.0, ge=0, description="weight of the L1 term in the generator loss")
    gan_mode: GanMode = "vanilla"
    decay_start: float = Field(0.5, ge=0, le=1, description="fraction of iterations at constant LR")


class Pix2Pix(Procedure):
    kind = "pix2pix"
    export = "G"

    def __init__(self, config: Pix2PixConfig, iters: int):
        super().__init__()
        self.config = config
        if config.discriminator.in_channels != config.generator.in_channels + config.generator.out_channels:
            raise ConfigError(
                f"pix2pix: the conditional discriminator needs in_channels = {config.generator.in_channels} + "
                f"{config.generator.out_channels}, got {config.discriminator.in_channels}"
            )
        self.nets = {"G": build_net(config.generator), "D": build_net(config.discriminator)}
        self.net_configs = {"G": config.generator, "D": config.discriminator}
        betas = (config.beta1, config.beta2)
        self.optimizers = {k: adam(n.parameters(), config.lr, betas) for k, n in self.nets.items()}
        self.schedulers = {k: linear_decay(o, iters, config.decay_start) for k, o in self.optimizers.items()}

    @property
    def stride(self) -> int:
        return 2**self.config.generator.num_downs

    def step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        a, b = batch["a"], batch["b"]
        G, D, D_plain = self.net("G"), self.net("D"), self.nets["D"]
        mode = self.config.gan_mode
        with ctx.autocast():
            fake = G(a)
        # discriminator
        set_requires_grad(D_plain, True)
        with ctx.autocast():
            pred_fake = D(torch.cat([a, fake.detach()], 1))
            pred_real = D(torch.cat([a, b], 1))
        loss_d_fake, loss_d_real = gan_loss(pred_fake, False, mode), gan_loss(pred_real, True, mode)
        loss_d = 0.5 * (loss_d_fake + loss_d_real)
        ctx.update(loss_d, self.optimizers["D"])
        # generator (D frozen; the plain module, so DDP does not wait for D's gradients)
        set_requires_grad(D_plain, False)
        with ctx.autocast():
            pred = self.frozen("D")(torch.cat([a, fake], 1))
        loss_g_gan = gan_loss(pred, True, mode)
        loss_l1 = F.l1_loss(fake.float(), b.float())
        loss_g = loss_g_gan + self.config.lambda_l1 * loss_l1
        ctx.update(loss_g, self.optimizers["G"])
        set_requires_grad(D_plain, True)
        return {
            "G_gan": loss_g_gan.detach(),
            "G_l1": loss_l1.detach(),
            "D_real": loss_d_real.detach(),
            "D_fake": loss_d_fake.detach(),
        }

    def sample_images(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        return [batch["a"], self.nets["G"](batch["a"]), batch["b"]]

    def provenance(self) -> dict[str, Any]:
        return {"procedure_config": self.config.model_dump()}
