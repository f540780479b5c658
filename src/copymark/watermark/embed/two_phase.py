"""Two-Phase (the security study, Sec. 3.2): train the host; train a codec pair; make the
trigger set; fine-tune the host on main data plus triggers.

The phases (run in this order by :func:`copymark.watermark.protect.protect`, each a run of
its own on the shared loop, resumable):

1. **preparation, host**: an unprotected classifier (``copymark classifier train``'s
   procedure; or a trained one given with ``--host``);
2. **preparation, codec**: En2D or GglNet trained on covers drawn from the training data and
   the secret images (``copymark stego train``'s procedure, MSE loss, the study's Adam
   settings; or a trained codec given with ``--codec``, also ``lsb``);
3. **trigger set**: each cover's secret hidden by the codec, rounded to 8 bits (the PNGs of
   the kit); the verification labels avoid the cover's class and the unprotected host's
   answer *on the trigger* (:mod:`~copymark.watermark.embed.labels`);
4. **fine-tuning** (:class:`TwoPhaseFinetune`, this module): the host starts from the
   unprotected weights and takes SGD steps on each main batch with ``trigger_batch`` fixed
   triggers appended (:meth:`~copymark.watermark.embed.base.EmbedProcedure.host_update`),
   at a lower learning rate than training from scratch (0.01, cosine: the study notes that
   this phase "requires careful selection of hyperparameters such as learning rate").

The triggers are fixed images here (no augmentation), so the host learns exactly the images
the owner will later send.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from copymark.config import StrictModel
from copymark.train.classifier import AugmentConfig, SGDRecipe
from copymark.train.loop import StepContext
from copymark.watermark.embed.base import EmbedProcedure


def finetune_recipe() -> SGDRecipe:
    return SGDRecipe(lr=0.01, schedule="cosine")


class TwoPhaseConfig(StrictModel):
    """The fine-tuning phase of Two-Phase (the codec's training is in ``ProtectConfig.codec``)."""

    kind: Literal["two-phase"] = "two-phase"
    host_optim: SGDRecipe = Field(default_factory=finetune_recipe)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    trigger_batch: int = Field(20, ge=1, description="triggers appended to each main batch")
    cover_negatives: bool = Field(
        False,
        description="also append each trigger's bare cover with its own class, so that the host must learn the "
        "hidden secret rather than the cover image (not in the reference; see embed.base)",
    )


class TwoPhaseFinetune(EmbedProcedure):
    """Fine-tune the host on main batches with fixed 8-bit triggers appended."""

    kind = "two-phase"

    def __init__(self, config: TwoPhaseConfig, host_config: Any, triggers: torch.Tensor, labels: list[int], iters: int):
        super().__init__(host_config, config.host_optim, iters, labels, config.trigger_batch)
        self.config = config
        self._cpu["triggers"] = triggers.float()

    def step(self, batch: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
        x, y = batch
        t, l = self.trigger_batch_of(ctx, "triggers", "labels")
        return self.host_update(x, y, t, l, ctx)

    def sample_images(self, batch: Any) -> list[torch.Tensor]:
        dev = next(self.nets["host"].parameters()).device
        return [self.tensor("triggers", dev)[: min(4, self.n_triggers)]]

    def provenance(self) -> dict[str, Any]:
        return {"method": self.kind, "lr": self.config.host_optim.lr}
