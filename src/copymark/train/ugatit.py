"""U-GAT-IT (Kim et al. 2020): CAM attention + AdaLIN generators, global and local CAM discriminators.

As the reference PyTorch implementation (znxlwm/UGATIT-pytorch, ``UGATIT.py``): generators
``A2B`` and ``B2A``; discriminators ``GA``/``LA`` (global 7-layer / local 5-layer, domain A) and
``GB``/``LB`` (domain B); LSGAN (MSE) adversarial losses on both the patch logits and the CAM
logits of every discriminator; the generators' CAM logits trained with BCE to tell source from
target domain; L1 cycle and identity losses. Weights: adversarial 1, cycle 10, identity 10,
CAM 1000. Adam(1e-4, 0.5, 0.999, weight decay 1e-4); constant then linearly decaying LR; after
every generator step every AdaLIN/ILN ``rho`` is clipped to [0, 1].
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from copymark.config import StrictModel
from copymark.nets.build import UGATITDiscConfig, UGATITGenConfig, build_net
from copymark.train.loop import Procedure, StepContext, adam, linear_decay, set_requires_grad


class UGATITConfig(StrictModel):
    kind: Literal["ugatit"] = "ugatit"
    generator: UGATITGenConfig = Field(default_factory=UGATITGenConfig)
    global_discriminator: UGATITDiscConfig = Field(default_factory=lambda: UGATITDiscConfig(n_layers=7))
    local_discriminator: UGATITDiscConfig = Field(default_factory=lambda: UGATITDiscConfig(n_layers=5))
    lr: float = Field(1e-4, gt=0, description="Adam learning rate")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
    weight_decay: float = Field(1e-4, ge=0, description="Adam weight decay")
    adv_weight: float = Field(1.0, ge=0, description="weight of the adversarial terms")
    cycle_weight: float = Field(10.0, ge=0, description="weight of the L1 cycle terms")
    identity_weight: float = Field(10.0, ge=0, description="weight of the L1 identity terms")
    cam_weight: float = Field(1000.0, ge=0, description="weight of the generators' CAM (domain) terms")
    decay_start: float = Field(0.5, ge=0, le=1, description="fraction of iterations at constant LR, then decay")


class _CamForward(nn.Module):
    """``forward = net.forward_cam`` so DDP / compile see the training outputs (image, CAM logits)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net.forward_cam(x)  # type: ignore[operator]


def _mse(x: torch.Tensor, target: float) -> torch.Tensor:
    x = x.float()
    return F.mse_loss(x, torch.full_like(x, target))


def _bce(x: torch.Tensor, target: float) -> torch.Tensor:
    x = x.float()
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, target))


class UGATIT(Procedure):
    kind = "ugatit"
    export = "A2B"
    GENS = ("A2B", "B2A")
    DISCS = ("GA", "GB", "LA", "LB")

    def __init__(self, config: UGATITConfig, iters: int):
        super().__init__()
        self.config = config
        g, dg, dl = config.generator, config.global_discriminator, config.local_discriminator
        self.nets = {
            "A2B": build_net(g),
            "B2A": build_net(g),
            "GA": build_net(dg),
            "GB": build_net(dg),
            "LA": build_net(dl),
            "LB": build_net(dl),
        }
        self.net_configs = {"A2B": g, "B2A": g, "GA": dg, "GB": dg, "LA": dl, "LB": dl}
        betas = (config.beta1, config.beta2)
        gp = itertools.chain(*(self.nets[k].parameters() for k in self.GENS))
        dp = itertools.chain(*(self.nets[k].parameters() for k in self.DISCS))
        self.optimizers = {
            "G": adam(gp, config.lr, betas, config.weight_decay),
            "D": adam(dp, config.lr, betas, config.weight_decay),
        }
        self.schedulers = {k: linear_decay(o, iters, config.decay_start) for k, o in self.optimizers.items()}

    def train_module(self, name: str) -> nn.Module:
        return _CamForward(self.nets[name])

    def step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        c = self.config
        real_a, real_b = batch["a"], batch["b"]
        A2B, B2A = self.net("A2B"), self.net("B2A")
        # ---- discriminators
        set_requires_grad([self.nets[k] for k in self.DISCS], True)
        with ctx.autocast(), torch.no_grad():
            fake_a2b, _, _ = A2B(real_a)
            fake_b2a, _, _ = B2A(real_b)
        loss_d = {}
        with ctx.autocast():
            for name, real, fake in (
                ("GA", real_a, fake_b2a),
                ("LA", real_a, fake_b2a),
                ("GB", real_b, fake_a2b),
                ("LB", real_b, fake_a2b),
            ):
                D = self.net(name)
                r_logit, r_cam, _ = D(real)
                f_logit, f_cam, _ = D(fake.detach())
                loss_d[name] = _mse(r_logit, 1) + _mse(f_logit, 0) + _mse(r_cam, 1) + _mse(f_cam, 0)
        d_loss_a = c.adv_weight * (loss_d["GA"] + loss_d["LA"])
        d_loss_b = c.adv_weight * (loss_d["GB"] + loss_d["LB"])
        ctx.update(d_loss_a + d_loss_b, self.optimizers["D"])
        # ---- generators (discriminators frozen, plain modules)
        set_requires_grad([self.nets[k] for k in self.DISCS], False)
        with ctx.autocast():
            fake_a2b, fake_a2b_cam, _ = A2B(real_a)
            fake_b2a, fake_b2a_cam, _ = B2A(real_b)
            fake_a2b2a, _, _ = B2A(fake_a2b)
            fake_b2a2b, _, _ = A2B(fake_b2a)
            fake_a2a, fake_a2a_cam, _ = B2A(real_a)
            fake_b2b, fake_b2b_cam, _ = A2B(real_b)
            adv = {}
            for name, fake in (("GA", fake_b2a), ("LA", fake_b2a), ("GB", fake_a2b), ("LB", fake_a2b)):
                logit, cam, _ = self.frozen(name)(fake)
                adv[name] = _mse(logit, 1) + _mse(cam, 1)
        recon_a = F.l1_loss(fake_a2b2a.float(), real_a.float())
        recon_b = F.l1_loss(fake_b2a2b.float(), real_b.float())
        idt_a = F.l1_loss(fake_a2a.float(), real_a.float())
        idt_b = F.l1_loss(fake_b2b.float(), real_b.float())
        cam_a = _bce(fake_b2a_cam, 1) + _bce(fake_a2a_cam, 0)
        cam_b = _bce(fake_a2b_cam, 1) + _bce(fake_b2b_cam, 0)
        g_loss_a = (
            c.adv_weight * (adv["GA"] + adv["LA"])
            + c.cycle_weight * recon_a
            + c.identity_weight * idt_a
            + c.cam_weight * cam_a
        )
        g_loss_b = (
            c.adv_weight * (adv["GB"] + adv["LB"])
            + c.cycle_weight * recon_b
            + c.identity_weight * idt_b
            + c.cam_weight * cam_b
        )
        ctx.update(g_loss_a + g_loss_b, self.optimizers["G"])
        set_requires_grad([self.nets[k] for k in self.DISCS], True)
        for k in self.GENS:
            self.nets[k].clip_rho_()  # type: ignore[operator]
        return {
            "D_A": d_loss_a.detach(),
            "D_B": d_loss_b.detach(),
            "G_adv": (adv["GA"] + adv["LA"] + adv["GB"] + adv["LB"]).detach(),
            "cycle": (recon_a + recon_b).detach(),
            "identity": (idt_a + idt_b).detach(),
            "cam": (cam_a + cam_b).detach(),
        }

    def sample_images(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        a, b = batch["a"], batch["b"]
        ab, ba = self.nets["A2B"](a), self.nets["B2A"](b)
        return [a, ab, self.nets["B2A"](ab), b, ba, self.nets["A2B"](ba)]

    def provenance(self) -> dict[str, Any]:
        return {"procedure_config": self.config.model_dump()}
