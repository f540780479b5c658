"""Training procedure of the steganalyzers (XuNet, YeNet, SRNet) on the shared loop.

Batches are *paired*: every cover comes with its own stego image (the cover the stego was
made from), the standard way steganalyzers are trained (Boroumand et al. 2019 and Ye et al.
2017 both feed cover/stego pairs), because the pair differs only by the embedding, so the net
cannot learn image content instead of the stego signal. One step classifies the ``2B``
images (label 0 cover, 1 stego) with cross-entropy on the two logits.

Optimiser: Adam (lr 1e-3 by default). The papers used SGD with momentum (XuNet), AdaDelta
(YeNet) and Adamax (SRNet); one well-behaved optimiser for all three keeps the comparison about
the architecture. Optional random flips / 90-degree rotations (the same for cover and stego)
are the augmentation SRNet used.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import Dataset

from copymark.config import StrictModel
from copymark.data.transforms import item_generator
from copymark.images import from_uint8
from copymark.nets.steganalysis import SRNetConfig, XuNetConfig, YeNetConfig, build_steganalyzer
from copymark.train.loop import Procedure, StepContext

DetectorNetConfig = Annotated[XuNetConfig | YeNetConfig | SRNetConfig, Field(discriminator="kind")]


class SteganalysisTrainConfig(StrictModel):
    """What the steganalysis procedure trains and how."""

    kind: Literal["steganalysis"] = "steganalysis"
    model: DetectorNetConfig = Field(default_factory=SRNetConfig)
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    augment: bool = Field(True, description="random flips and 90-degree rotations, identical for a cover and its stego")


def steganalysis_train_config(
    model: Literal["xunet", "yenet", "srnet"], lr: float = 1e-3, **arch: Any
) -> SteganalysisTrainConfig:
    """Config for ``model`` with architecture overrides ``arch`` (e.g. tiny widths for tests)."""
    match model:
        case "xunet":
            net: Any = XuNetConfig(**arch)
        case "yenet":
            net = YeNetConfig(**arch)
        case "srnet":
            net = SRNetConfig(**arch)
    return SteganalysisTrainConfig(model=net, lr=lr)


class CoverStegoPairs(Dataset):
    """Paired ``uint8`` covers and stegos -> items ``{"cover": 3xHxW, "stego": 3xHxW}``.

    With ``augment`` each pair gets one of the 8 flip/rotation symmetries, drawn from a
    generator seeded by ``(seed, epoch, index)``.
    """

    def __init__(self, covers: torch.Tensor, stegos: torch.Tensor, seed: int = 0, augment: bool = True):
        if covers.shape != stegos.shape:
            raise ValueError(f"covers {tuple(covers.shape)} and stegos {tuple(stegos.shape)} differ")
        self.covers, self.stegos, self.seed, self.augment, self.epoch = covers, stegos, seed, augment, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.covers)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        c, s = from_uint8(self.covers[index]), from_uint8(self.stegos[index])
        if self.augment:
            g = item_generator(self.seed, self.epoch, index)
            k = int(torch.randint(8, (1,), generator=g))
            if k >= 4:
                c, s = c.flip(-1), s.flip(-1)
            c, s = torch.rot90(c, k % 4, dims=(-2, -1)), torch.rot90(s, k % 4, dims=(-2, -1))
        return {"cover": c.contiguous(), "stego": s.contiguous()}


class SteganalysisProcedure(Procedure):
    """Binary cover/stego classification with cross-entropy on paired batches."""

    kind = "steganalysis"
    export = "detector"

    def __init__(self, config: SteganalysisTrainConfig):
        super().__init__()
        self.config = config
        net = build_steganalyzer(config.model)
        self.nets = {"detector": net}
        self.net_configs = {"detector": config.model}
        self.optimizers = {
            "detector": torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        }

    def step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        cover, stego = batch["cover"], batch["stego"]
        x = torch.cat([cover, stego])
        y = torch.cat([torch.zeros(len(cover)), torch.ones(len(stego))]).long().to(x.device)
        with ctx.autocast():
            logits = self.net("detector")(x)
        loss = F.cross_entropy(logits.float(), y)
        ctx.update(loss, self.optimizers["detector"])
        acc = (logits.detach().argmax(1) == y).float().mean()
        return {"loss": loss.detach(), "accuracy": acc}

    def provenance(self) -> dict[str, Any]:
        return {"model": self.config.model.kind, "lr": self.config.lr}
