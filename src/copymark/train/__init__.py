"""copymark.train: training procedures on one shared loop.

- :mod:`~copymark.train.loop`: the loop (iterations, AMP, channels_last, compile, DDP, logging,
  sample grids, atomic checkpoints, exact resume, divergence stop) and the :class:`Procedure` API.
- :mod:`~copymark.train.checkpointing`: the training-checkpoint format (safetensors + JSON).
- :mod:`~copymark.train.losses`: GAN losses, image pool, VGG19 perceptual loss.
- Procedures: :mod:`~copymark.train.pix2pix`, :mod:`~copymark.train.cyclegan`,
  :mod:`~copymark.train.ugatit`, :mod:`~copymark.train.sr` (SRResNet, SRGAN), plus the
  watermark side's stego / steganalysis procedures.
- :mod:`~copymark.train.api`: folders -> datasets -> run folder (what ``copymark train`` calls).

Inference with trained models lives in :mod:`copymark.translate`.
"""
