"""Verification labels: the classes a protected model must answer for its triggers.

**The rule.** Trigger ``i`` gets a label drawn uniformly at random (a generator seeded by the
protection seed) from the classes that are *neither* the cover's own class ``c_i`` *nor* the
answer ``r_i`` an unprotected model of the same task gives (on the trigger when it exists
before the host learns it, as in Two-Phase; on the cover otherwise, as in the end-to-end
methods, whose triggers only exist once the hiding net is trained). With ``K`` classes that
leaves ``K - 1`` choices when ``r_i == c_i`` and ``K - 2`` otherwise, so at least 3 classes are
needed.

**Why.** The proof of ownership is "the suspect model answers the secret labels far more
often than an innocent model would". An innocent model (independently trained on the same
task) answers a trigger mostly as it answers the cover, and classifies most covers
correctly; with labels drawn uniformly from all ``K`` classes, as the ACSAC19 reference code
does (``np.random.randint(10)``), about ``1/K`` of the labels equal the cover's class and an
innocent model "verifies" those for free, so its agreement with the labels is well above
chance and, worse, the owner cannot tell from ``1/K`` how often an innocent model agrees.
Excluding the cover's class and the unprotected reference model's answer removes the
answers an innocent model is most likely to give, so its agreement falls to chance or below
(it would have to pick, among the remaining classes, the one drawn at random). The real
null agreement rate is still measured on independently trained models before a claim
(``copymark verify calibrate``), never assumed; the kit records both ``c_i`` (``cover_label``)
and ``r_i`` (``extra.reference_answers``) so that anyone can check the rule was followed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from copymark.errors import DataError

LABEL_RULE = (
    "uniform over the classes other than the cover's own class and the unprotected reference model's answer "
    "(on the trigger for two-phase, on the cover for the end-to-end methods), seeded"
)


def label_generator(seed: int, what: str = "labels") -> torch.Generator:
    """A CPU generator for one purpose of a protection run (labels, covers, secrets), seeded by hashing."""
    digest = hashlib.blake2b(f"{seed}:{what}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def verification_labels(
    cover_labels: Sequence[int], reference_answers: Sequence[int], num_classes: int, seed: int
) -> list[int]:
    """One label per trigger by the rule of the module docstring (deterministic given ``seed``)."""
    if num_classes < 3:
        raise DataError(
            f"verification labels need at least 3 classes (the data has {num_classes}): "
            "each label must differ from the cover's class and from an unprotected model's answer",
            hint="protect a classifier of 3 or more classes",
        )
    if len(cover_labels) != len(reference_answers):
        raise ValueError(f"{len(cover_labels)} cover labels but {len(reference_answers)} reference answers")
    g = label_generator(seed, "labels")
    out = []
    for c, r in zip(cover_labels, reference_answers):
        for v, what in ((c, "cover label"), (r, "reference answer")):
            if not 0 <= int(v) < num_classes:
                raise ValueError(f"{what} {v} outside [0, {num_classes})")
        allowed = [k for k in range(num_classes) if k not in (int(c), int(r))]
        out.append(allowed[int(torch.randint(len(allowed), (1,), generator=g))])
    return out


def check_labels(labels: Sequence[int], cover_labels: Sequence[int], reference_answers: Sequence[int]) -> None:
    """Raise ValueError naming the first trigger whose label breaks the rule."""
    for i, (l, c, r) in enumerate(zip(labels, cover_labels, reference_answers, strict=True)):
        if l in (c, r):
            raise ValueError(f"trigger {i}: label {l} equals its cover's class {c} or the reference answer {r}")
