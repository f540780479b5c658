"""Super-resolution: SRResNet (MSE) and SRGAN (perceptual + adversarial) (Ledig et al. 2017).

* ``srresnet``: the generator alone on the pixel MSE between ``G(LR)`` and HR (the paper's
  SRResNet-MSE, used to initialise SRGAN). Adam(1e-4, 0.9, 0.999).
* ``srgan``: generator loss ``content + 1e-3 * GAN(D(G(LR)), 1)`` where ``content`` is the VGG5,4
  feature MSE (feature maps scaled by 1/12.75, as the paper) from a **local** torchvision VGG19
  weight file; discriminator on ``GAN(D(HR), 1) + GAN(D(G(LR)), 0)`` (BCE). Without a VGG file
  this is a :class:`~copymark.errors.WeightsError`; ``perceptual=False`` (``--no-perceptual``)
  trains with the pixel MSE as content loss instead, and only when asked. As the paper, start
  the generator from a trained SRResNet: ``copymark train srgan --init-from SRRESNET_RUN`` (the
  orchestrator's ``init_from``, :mod:`copymark.train.api`; G from the run's G, D fresh).

LR schedule: constant, then (``schedule="step"``) x0.1 for the second half as SRGAN's 1e-4 ->
1e-5, or (``"linear"``) linear decay.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from copymark.config import StrictModel
from copymark.errors import ConfigError
from copymark.nets.build import SRGANDiscConfig, SRResNetConfig, build_net
from copymark.train.loop import Procedure, StepContext, adam, linear_decay, set_requires_grad
from copymark.train.losses import GanMode, PerceptualLoss, gan_loss, load_vgg19_features


def step_decay(
    optimizer: torch.optim.Optimizer, iters: int, at: float = 0.5, gamma: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """LR x ``gamma`` from iteration ``at * iters`` on (SRGAN: 1e-4, then 1e-5)."""
    boundary = int(round(iters * at))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0 if it < boundary else gamma)


def _schedule(
    opt: torch.optim.Optimizer, iters: int, kind: str, decay_start: float
) -> torch.optim.lr_scheduler.LambdaLR:
    return step_decay(opt, iters, decay_start) if kind == "step" else linear_decay(opt, iters, decay_start)


class SRResNetTrainConfig(StrictModel):
    kind: Literal["srresnet"] = "srresnet"
    generator: SRResNetConfig = Field(default_factory=SRResNetConfig)
    lr: float = Field(1e-4, gt=0, description="Adam learning rate")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
    schedule: Literal["step", "linear"] = "step"
    decay_start: float = Field(1.0, ge=0, le=1, description="1.0: constant LR")


class SRGANTrainConfig(StrictModel):
    kind: Literal["srgan"] = "srgan"
    generator: SRResNetConfig = Field(default_factory=SRResNetConfig)
    discriminator: SRGANDiscConfig = Field(default_factory=SRGANDiscConfig)
    lr: float = Field(1e-4, gt=0, description="Adam learning rate")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
    adv_weight: float = Field(1e-3, ge=0, description="weight of the adversarial term (the paper's 1e-3)")
    gan_mode: GanMode = "vanilla"
    perceptual: bool = True
    vgg_weights: str | None = Field(None, description="local torchvision vgg19 state dict (.pth)")
    schedule: Literal["step", "linear"] = "step"
    decay_start: float = Field(0.5, ge=0, le=1, description="fraction of iterations at constant LR, then decay")


class SRResNetProcedure(Procedure):
    kind = "srresnet"
    export = "G"

    def __init__(self, config: SRResNetTrainConfig, iters: int):
        super().__init__()
        self.config = config
        self.nets = {"G": build_net(config.generator)}
        self.net_configs = {"G": config.generator}
        self.optimizers = {"G": adam(self.nets["G"].parameters(), config.lr, (config.beta1, config.beta2))}
        self.schedulers = {"G": _schedule(self.optimizers["G"], iters, config.schedule, config.decay_start)}

    def step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        with ctx.autocast():
            sr = self.net("G")(batch["lr"])
        loss = F.mse_loss(sr.float(), batch["hr"].float())
        ctx.update(loss, self.optimizers["G"])
        return {"mse": loss.detach()}

    def sample_images(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        lr, hr = batch["lr"], batch["hr"]
        up = F.interpolate(lr, size=hr.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
        return [up, self.nets["G"](lr), hr]

    def provenance(self) -> dict[str, Any]:
        return {"procedure_config": self.config.model_dump()}


class SRGANProcedure(SRResNetProcedure):
    kind = "srgan"
    export = "G"

    def __init__(self, config: SRGANTrainConfig, iters: int):
        Procedure.__init__(self)
        self.config = config  # type: ignore[assignment]
        if config.perceptual:
            self.perceptual: PerceptualLoss | None = PerceptualLoss(load_vgg19_features(config.vgg_weights))
        elif config.vgg_weights:
            raise ConfigError(
                "srgan: vgg_weights given but perceptual=False", hint="drop one of --vgg-weights / --no-perceptual"
            )
        else:
            self.perceptual = None
        self.nets = {"G": build_net(config.generator), "D": build_net(config.discriminator)}
        self.net_configs = {"G": config.generator, "D": config.discriminator}
        betas = (config.beta1, config.beta2)
        self.optimizers = {k: adam(n.parameters(), config.lr, betas) for k, n in self.nets.items()}
        self.schedulers = {
            k: _schedule(o, iters, config.schedule, config.decay_start) for k, o in self.optimizers.items()
        }

    def step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        c: SRGANTrainConfig = self.config  # type: ignore[assignment]
        lr, hr = batch["lr"], batch["hr"]
        G, D, D_plain = self.net("G"), self.net("D"), self.nets["D"]
        if self.perceptual is not None and next(self.perceptual.parameters()).device != hr.device:
            self.perceptual.to(hr.device)
        with ctx.autocast():
            sr = G(lr)
        set_requires_grad(D_plain, True)
        with ctx.autocast():
            pr, pf = D(hr), D(sr.detach())
        loss_d = gan_loss(pr, True, c.gan_mode) + gan_loss(pf, False, c.gan_mode)
        ctx.update(loss_d, self.optimizers["D"])
        set_requires_grad(D_plain, False)
        with ctx.autocast():
            adv = gan_loss(self.frozen("D")(sr), True, c.gan_mode)
            content = self.perceptual(sr, hr) if self.perceptual is not None else F.mse_loss(sr.float(), hr.float())
        loss_g = content.float() + c.adv_weight * adv
        ctx.update(loss_g, self.optimizers["G"])
        set_requires_grad(D_plain, True)
        name = "vgg" if self.perceptual is not None else "mse"
        return {name: content.detach(), "G_adv": adv.detach(), "D": loss_d.detach()}

    def provenance(self) -> dict[str, Any]:
        return {"procedure_config": self.config.model_dump()}
