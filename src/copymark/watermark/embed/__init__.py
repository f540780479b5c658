"""Embedding methods: training procedures that teach a host classifier its triggers.

Each is a :class:`copymark.train.loop.Procedure` on the shared loop (checkpoints, exact resume,
AMP, DDP), run by :mod:`copymark.watermark.protect` through the one run orchestrator
(:mod:`.runs`):

* :mod:`.acsac19`: hiding net + steganalyzer discriminator + host, end to end (Li et al. 2019);
* :mod:`.e2e_extraction`: hiding net + secret extractor + host, end to end (the security study);
* :mod:`.two_phase`: fine-tune a trained host on main data plus fixed triggers made by a
  separately trained codec (the security study).

Shared pieces: :mod:`.base` (the host update, trigger batches), :mod:`.labels` (the
verification-label rule), :mod:`.triggers` (covers, secrets, their pairing),
:mod:`.losses` (SSIM loss, 8-bit rounding with a straight-through gradient).
"""
