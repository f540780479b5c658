"""CycleGAN (Zhu et al. 2017): two ResNet generators, two PatchGAN discriminators, LSGAN.

As the reference (junyanz/pytorch-CycleGAN-and-pix2pix, ``cycle_gan_model.py``): ``G_A: A->B``,
``G_B: B->A``; ``D_A`` judges domain B (real B vs ``G_A(A)``), ``D_B`` domain A. Generator loss
``GAN(D_A(G_A(A)), 1) + GAN(D_B(G_B(B)), 1) + lambda_cycle * (|G_B(G_A(A)) - A|_1 + |G_A(G_B(B)) - B|_1)
+ lambda_identity * lambda_cycle * (|G_A(B) - B|_1 + |G_B(A) - A|_1)`` with lambda_cycle 10 and
lambda_identity 0.5; each D on ``0.5 * (GAN(D(real), 1) + GAN(D(pool(fake)), 0))`` with a 50-image
history pool per direction. Adam(2e-4, 0.5, 0.999), constant then linearly decaying LR.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from copymark.config import StrictModel
from copymark.nets.build import PatchGANConfig, ResnetGenConfig, build_net
from copymark.train.loop import Procedure, StepContext, adam, linear_decay, set_requires_grad
from copymark.train.losses import GanMode, ImagePool, gan_loss


class CycleGANConfig(StrictModel):
    kind: Literal["cyclegan"] = "cyclegan"
    generator: ResnetGenConfig = Field(default_factory=ResnetGenConfig)
    discriminator: PatchGANConfig = Field(default_factory=lambda: PatchGANConfig(norm="instance"))
    lr: float = Field(2e-4, gt=0, description="Adam learning rate (G and D)")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
    lambda_cycle: float = Field(10.0, ge=0, description="weight of the L1 cycle-consistency terms")
    lambda_identity: float = Field(0.5, ge=0, description="times lambda_cycle")
    gan_mode: GanMode = "lsgan"
    pool_size: int = Field(50, ge=0, description="history of generated images the discriminators see (0: none)")
    decay_start: float = Field(0.5, ge=0, le=1, description="fraction of iterations at constant LR, then decay")


class CycleGAN(Procedure):
    kind = "cyclegan"
    export = "G_A"

    def __init__(self, config: CycleGANConfig, iters: int):
        super().__init__()
        self.config = config
        self.nets = {
            "G_A": build_net(config.generator),
            "G_B": build_net(config.generator),
            "D_A": build_net(config.discriminator),
            "D_B": build_net(config.discriminator),
        }
        self.net_configs = {
            "G_A": config.generator,
            "G_B": config.generator,
            "D_A": config.discriminator,
            "D_B": config.discriminator,
        }
        betas = (config.beta1, config.beta2)
        self.optimizers = {
            "G": adam(itertools.chain(self.nets["G_A"].parameters(), self.nets["G_B"].parameters()), config.lr, betas),
            "D": adam(itertools.chain(self.nets["D_A"].parameters(), self.nets["D_B"].parameters()), config.lr, betas),
        }
        self.schedulers = {k: linear_decay(o, iters, config.decay_start) for k, o in self.optimizers.items()}
        self.pool_a, self.pool_b = ImagePool(config.pool_size), ImagePool(config.pool_size)

    @property
    def stride(self) -> int:
        return 4

    def step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        c, mode = self.config, self.config.gan_mode
        real_a, real_b = batch["a"], batch["b"]
        G_A, G_B = self.net("G_A"), self.net("G_B")
        D_A, D_B = self.nets["D_A"], self.nets["D_B"]
        # generators (discriminators frozen, called as plain modules)
        set_requires_grad([D_A, D_B], False)
        with ctx.autocast():
            fake_b, fake_a = G_A(real_a), G_B(real_b)
            rec_a, rec_b = G_B(fake_b), G_A(fake_a)
            lam_idt = c.lambda_identity * c.lambda_cycle
            if lam_idt > 0:
                idt_a, idt_b = G_A(real_b), G_B(real_a)
            pred_a, pred_b = self.frozen("D_A")(fake_b), self.frozen("D_B")(fake_a)
        loss_gan_a, loss_gan_b = gan_loss(pred_a, True, mode), gan_loss(pred_b, True, mode)
        loss_cyc_a = F.l1_loss(rec_a.float(), real_a.float())
        loss_cyc_b = F.l1_loss(rec_b.float(), real_b.float())
        loss_g = loss_gan_a + loss_gan_b + c.lambda_cycle * (loss_cyc_a + loss_cyc_b)
        out = {
            "G_A": loss_gan_a.detach(),
            "G_B": loss_gan_b.detach(),
            "cycle_A": loss_cyc_a.detach(),
            "cycle_B": loss_cyc_b.detach(),
        }
        if lam_idt > 0:
            loss_idt_a = F.l1_loss(idt_a.float(), real_b.float())
            loss_idt_b = F.l1_loss(idt_b.float(), real_a.float())
            loss_g = loss_g + lam_idt * (loss_idt_a + loss_idt_b)
            out.update({"idt_A": loss_idt_a.detach(), "idt_B": loss_idt_b.detach()})
        ctx.update(loss_g, self.optimizers["G"])
        # discriminators
        set_requires_grad([D_A, D_B], True)
        dA, dB = self.net("D_A"), self.net("D_B")
        fb, fa = self.pool_b.query(fake_b.detach()), self.pool_a.query(fake_a.detach())
        with ctx.autocast():
            ra, fa_ = dA(real_b), dA(fb)
            rb, fb_ = dB(real_a), dB(fa)
        loss_d_a = 0.5 * (gan_loss(ra, True, mode) + gan_loss(fa_, False, mode))
        loss_d_b = 0.5 * (gan_loss(rb, True, mode) + gan_loss(fb_, False, mode))
        ctx.update(loss_d_a + loss_d_b, self.optimizers["D"])
        out.update({"D_A": loss_d_a.detach(), "D_B": loss_d_b.detach()})
        return out

    def sample_images(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        a, b = batch["a"], batch["b"]
        fb, fa = self.nets["G_A"](a), self.nets["G_B"](b)
        return [a, fb, self.nets["G_B"](fb), b, fa, self.nets["G_A"](fa)]

    def extra_state(self) -> dict[str, Any]:
        return {"pool_a": self.pool_a.state(), "pool_b": self.pool_b.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        dev = next(self.nets["G_A"].parameters()).device
        self.pool_a.load(state["pool_a"], dev)
        self.pool_b.load(state["pool_b"], dev)

    def provenance(self) -> dict[str, Any]:
        return {"procedure_config": self.config.model_dump()}
