"""Fixtures for training tests: small real-photo datasets in temp folders, tiny net configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from copymark.images import from_pil, save_image

# Tiny versions of every procedure's nets (32 px inputs).
TINY: dict[str, dict] = {
    "pix2pix": {"generator": {"ngf": 8, "num_downs": 5}, "discriminator": {"ndf": 8, "n_layers": 2}},
    "cyclegan": {"generator": {"ngf": 8, "n_blocks": 1}, "discriminator": {"ndf": 8, "n_layers": 2}, "pool_size": 3},
    "ugatit": {
        "generator": {"ngf": 8, "n_blocks": 1},
        "global_discriminator": {"ndf": 8, "n_layers": 5},
        "local_discriminator": {"ndf": 8, "n_layers": 4},
    },
    "srresnet": {"generator": {"scale": 2, "n_blocks": 1, "nf": 8}},
    "srgan": {
        "generator": {"scale": 2, "n_blocks": 1, "nf": 8},
        "discriminator": {"ndf": 8, "n_blocks": 1, "dense": 16, "pool_size": 2},
    },
}


def target_of(x: torch.Tensor) -> torch.Tensor:
    """The pix2pix test task: a fixed colour transform (channel swap + inversion of green)."""
    y = x[[2, 0, 1]].clone()
    y[1] = 1 - y[1]
    return y


@pytest.fixture(scope="session")
def photos() -> dict[str, torch.Tensor]:
    """The built-in sample photographs, shrunk to a short side of 80 px (PIL, fast)."""
    from copymark.data import sample_names, sample_path

    out = {}
    for n in sample_names():
        img = Image.open(sample_path(n)).convert("RGB")
        s = 80 / min(img.size)
        img = img.resize((max(80, round(img.width * s)), max(80, round(img.height * s))), Image.Resampling.BICUBIC)
        out[n] = from_pil(img)
    return out


def crops(img: torch.Tensor, size: int, step: int) -> list[torch.Tensor]:
    h, w = img.shape[-2:]
    return [
        img[:, y : y + size, x : x + size] for y in range(0, h - size + 1, step) for x in range(0, w - size + 1, step)
    ]


def write_paired(root: Path, images: list[torch.Tensor]) -> Path:
    for i, x in enumerate(images):
        save_image(x, root / "A" / f"{i:04d}.png")
        save_image(target_of(x), root / "B" / f"{i:04d}.png")
    return root


@pytest.fixture
def paired_dir(tmp_path, photos) -> Path:
    imgs = [c for n in ("astronaut", "coffee", "chelsea") for c in crops(photos[n], 32, 24)][:16]
    return write_paired(tmp_path / "paired", imgs)


@pytest.fixture
def unpaired_dir(tmp_path, photos) -> Path:
    root = tmp_path / "unpaired"
    a = crops(photos["astronaut"], 32, 24)[:6]
    b = crops(photos["rocket"], 32, 24)[:5]
    for i, x in enumerate(a):
        save_image(x, root / "trainA" / f"a{i}.png")
    for i, x in enumerate(b):
        save_image(1 - x, root / "trainB" / f"b{i}.png")
    return root


@pytest.fixture
def sr_dir(tmp_path, photos) -> Path:
    root = tmp_path / "sr"
    for i, x in enumerate(crops(photos["china"], 48, 40)[:6]):
        save_image(x, root / "HR" / f"{i}.png")
    return root


@pytest.fixture
def tiny() -> dict[str, dict]:
    """Net/procedure overrides for tiny versions of every procedure."""
    return TINY


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets run faster on one thread, and far faster when the shared cores are busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def helpers():
    """The module-level helpers (crops, target_of, write_paired) for tests."""
    import types

    return types.SimpleNamespace(crops=crops, target_of=target_of, write_paired=write_paired)
