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

Data: :class:`StegoPairs` pairs cover ``i`` with a secret drawn from the secret set by a
generator seeded by ``(seed, epoch, i)``, so the pairing is random but reproducible and a
resumed run sees exactly the batches an uninterrupted one would.
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
from copymark.nets.stego import En2DConfig, GglNetConfig, build_stego_net
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


def stego_train_config(
    codec: Literal["en2d", "gglnet"], lr: float | None = None, beta: float | None = None, **arch: Any
) -> StegoTrainConfig:
    """Config with the study's defaults for ``codec``; ``arch`` overrides architecture fields."""
    d = STUDY_DEFAULTS[codec]
    net = En2DConfig(**arch) if codec == "en2d" else GglNetConfig(**arch)
    return StegoTrainConfig(
        codec=net, lr=float(d["lr"] if lr is None else lr), beta=float(d["beta"] if beta is None else beta)
    )


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


class StegoProcedure(Procedure):
    """Train an En2D or GglNet codec with the two-term MSE loss."""

    kind = "stego"
    export = "codec"

    def __init__(self, config: StegoTrainConfig):
        super().__init__()
        self.config = config
        net = build_stego_net(config.codec)
        self.nets = {"codec": net}
        self.net_configs = {"codec": config.codec}
        self.optimizers = {"codec": torch.optim.Adam(net.parameters(), lr=config.lr, betas=config.adam_betas)}

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
        return {"codec": self.config.codec.kind, "lr": self.config.lr, "beta": self.config.beta}
