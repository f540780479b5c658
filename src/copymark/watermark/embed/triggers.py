"""The raw material of a trigger set: covers drawn from the training data, secrets, their pairing.

* **Covers** are training images (as in the ACSAC19 reference, whose triggers are made from
  training images): ``n`` positions of the train split drawn without replacement by a
  permutation seeded with the protection seed (:func:`select_covers`), so the same seed picks
  the same covers on every machine. A cover keeps its place in the main training data with
  its true label; only its stego version gets a verification label.
* **Secrets** come from their own folder, which must not be (or contain, or lie inside) the
  data folder, and no secret may be pixel-identical to a cover (:func:`check_disjoint`).
  Trigger ``i`` hides secret ``order[i mod S]`` of a seeded permutation of the ``S`` secrets
  (:func:`assign_secrets`): each secret is used equally often, one logo for all triggers (the
  reference's IEEE logo) being the case ``S = 1``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from copymark.errors import DataError
from copymark.watermark.embed.labels import label_generator


@dataclass
class TriggerSources:
    """Covers and the secret paired with each (float ``N x 3 x S x S`` in [0, 1]), with their keys."""

    cover_keys: list[str]
    cover_labels: list[int]
    covers: torch.Tensor
    secret_keys: list[str]
    secrets: torch.Tensor

    def __len__(self) -> int:
        return len(self.cover_keys)


def select_covers(n_train: int, n: int, seed: int) -> list[int]:
    """``n`` distinct positions in a train split of ``n_train`` images, by a seeded permutation."""
    if not 1 <= n <= n_train:
        raise DataError(
            f"{n} triggers asked for, but the train split has {n_train} images to make them from",
            hint="lower --triggers (the reference uses about 1% of the training images), or add images",
        )
    return torch.randperm(n_train, generator=label_generator(seed, "covers"))[:n].tolist()


def assign_secrets(n_triggers: int, n_secrets: int, seed: int) -> list[int]:
    """Secret index of each trigger: a seeded permutation of the secrets, repeated as needed."""
    if n_secrets < 1:
        raise DataError("no secret images", hint="put at least one image in the --secrets folder")
    order = torch.randperm(n_secrets, generator=label_generator(seed, "secrets")).tolist()
    return [order[i % n_secrets] for i in range(n_triggers)]


def check_secrets_folder(secrets: str | Path, data: str | Path) -> None:
    """The secrets folder must be apart from the data folder (neither inside the other)."""
    s, d = Path(secrets).resolve(), Path(data).resolve()
    if s == d:
        raise DataError(
            f"--secrets {secrets} is the data folder; covers and secrets must be disjoint",
            hint="keep the secret images (e.g. logos) in a folder of their own",
        )
    if s.is_relative_to(d) or d.is_relative_to(s):
        inner, outer = (s, d) if s.is_relative_to(d) else (d, s)
        raise DataError(
            f"--secrets {secrets} and --data {data} overlap ({inner} lies inside {outer}); covers and secrets must be disjoint",
            hint="move the secret images out of the data folder",
        )


def _digest(x: torch.Tensor) -> str:
    from copymark.images import to_uint8

    return hashlib.sha256(to_uint8(x).contiguous().numpy().tobytes()).hexdigest()


def check_disjoint(covers: torch.Tensor, cover_keys: list[str], secrets: torch.Tensor, secret_keys: list[str]) -> None:
    """No secret may be pixel-identical (8-bit) to a cover; a DataError names the first such pair."""
    seen = {_digest(c): k for c, k in zip(covers, cover_keys)}
    for s, k in zip(secrets, secret_keys):
        d = _digest(s)
        if d in seen:
            raise DataError(
                f"secret {k!r} is the same image as the cover {seen[d]!r}; covers and secrets must be disjoint",
                hint="remove the image from the --secrets folder (or from the data)",
            )


def load_covers(split, keys: list[str]) -> tuple[torch.Tensor, list[int]]:
    """The images (no augmentation) and labels of ``keys`` in a :class:`~copymark.data.class_splits.ClassSplit`."""
    plain = split.with_transform(None)
    items = [plain[i] for i in split.index_of(keys)]
    return torch.stack([x for x, _ in items]), [int(y) for _, y in items]
