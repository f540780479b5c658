"""copymark.train: training procedures on one shared loop.

- :mod:`~copymark.train.loop`: the loop (iterations, AMP, channels_last, compile, DDP, logging,
  sample grids, atomic checkpoints, exact resume, divergence stop) and the :class:`Procedure` API.
- :mod:`~copymark.train.checkpointing`: the training-checkpoint format (safetensors + JSON).
- :mod:`~copymark.train.losses`: GAN losses, image pool, VGG19 perceptual loss.
- Procedures: :mod:`~copymark.train.pix2pix`, :mod:`~copymark.train.cyclegan`,
  :mod:`~copymark.train.ugatit`, :mod:`~copymark.train.sr` (SRResNet, SRGAN), plus the
  watermark side's stego / steganalysis procedures.
- :mod:`~copymark.train.api`: the one run orchestrator (:class:`~copymark.train.api.RunKind`:
  validation before the run folder, seeding, DDP, resume, ``--init-from``, finishing) and the
  translation runs of ``copymark train``; codec / steganalyzer runs plug into it from
  :mod:`copymark.stego.training`.
- :mod:`~copymark.train.folders`: the translation procedures' datasets from data folders.
- :mod:`~copymark.train.describe`: every ``--net-config`` key with its default (``copymark nets show``).

Inference with trained models lives in :mod:`copymark.translate`.
"""
