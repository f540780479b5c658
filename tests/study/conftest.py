"""Fixtures for the user-study tests: small real image folders and a study made from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from copymark.study.design import create_study


def write_images(folder: Path, stems: list[str], seed: int, size: int = 24, suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for s in stems:
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{s}{suffix}")


@pytest.fixture
def image_folders(tmp_path: Path) -> dict[str, Path]:
    stems = [f"img{i:02d}" for i in range(12)]
    f = {
        "victim": tmp_path / "victim",
        "surrogate": tmp_path / "surrogate",
        "examples": tmp_path / "examples",
        "inputs": tmp_path / "inputs",
    }
    write_images(f["victim"], stems, 1)
    write_images(f["surrogate"], stems, 2, suffix=".jpg")
    write_images(f["inputs"], stems, 3)
    write_images(f["examples"], ["style_a", "style_b"], 4)
    return f


@pytest.fixture
def study_dir(tmp_path: Path, image_folders) -> Path:
    out = tmp_path / "study"
    create_study(
        image_folders["victim"],
        image_folders["surrogate"],
        image_folders["examples"],
        out,
        per_participant=6,
        seed=3,
        attention_checks=1,
    )
    return out
