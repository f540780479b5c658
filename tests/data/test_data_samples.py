"""Built-in samples: shipped in the scikit-image / scikit-learn wheels, no downloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from copymark import images as im
from copymark.data import (
    ImageFolder,
    sample_info,
    sample_names,
    sample_path,
    sample_split,
    samples,
    samples_to_folder,
)
from copymark.errors import DataError


def test_default_samples_are_colour_photos_matching_the_libraries():
    names = sample_names()
    assert {"astronaut", "coffee", "chelsea", "china", "flower"} <= set(names)
    assert not {"camera", "moon", "text", "page", "logo"} & set(names)
    ss = samples(["astronaut", "china"])
    import skimage.io
    from sklearn.datasets import load_sample_image

    ref = {
        "astronaut": skimage.io.imread(sample_path("astronaut")),  # the file skimage.data.astronaut() reads
        "china": load_sample_image("china.jpg"),
    }
    for s in ss:
        assert s.image.dtype == torch.float32 and s.image.shape[0] == 3
        assert np.array_equal(im.to_uint8(s.image).permute(1, 2, 0).numpy(), ref[s.name])
        assert s.info.license and s.info.description


def test_every_sample_loads_and_is_an_rgb_photo():
    for s in samples(include_grayscale=True, max_side=64):
        assert s.image.shape[0] == 3 and max(s.image.shape[1:]) == 64
        assert 0 <= s.image.min() and s.image.max() <= 1
        gray = torch.equal(s.image[0], s.image[1]) and torch.equal(s.image[1], s.image[2])
        assert gray == s.info.grayscale, s.name
        assert s.image.std() > 0.02, s.name  # not a flat image


def test_grayscale_only_on_request():
    assert set(sample_names(include_grayscale=True)) - set(sample_names()) == {"camera", "coins", "moon"}


def test_files_come_from_the_installed_packages():
    for n in sample_names(include_grayscale=True):
        p = sample_path(n)
        assert p.is_file() and ("skimage" in p.parts or "sklearn" in p.parts)


def test_unknown_sample():
    with pytest.raises(DataError, match="unknown sample 'lena'"):
        samples(["lena"])


def test_samples_to_folder_round_trip(tmp_path):
    paths = samples_to_folder(tmp_path, ["chelsea", "coffee"], max_side=48)
    assert [p.name for p in paths] == ["chelsea.png", "coffee.png"]
    ds = ImageFolder(tmp_path)
    assert ds.keys == ["chelsea", "coffee"]
    orig = samples(["chelsea"], max_side=48)[0].image
    assert torch.equal(ds[0]["image"], orig)  # saved at 8 bits, and samples are 8-bit already


def test_sample_split_disjoint_and_deterministic():
    s = sample_split(n_test=3)
    assert len(s.test) == 3 and set(s.attacker).isdisjoint(s.test)
    assert set(s.attacker) | set(s.test) == set(sample_names())
    assert sample_split(n_test=3) == s
    assert any(sample_split(n_test=3, salt=f"salt{i}").test != s.test for i in range(3))
    with pytest.raises(DataError):
        sample_split(n_test=0)


def test_sample_info_names_license():
    assert sample_info("china").license == "CC BY 2.0"
    assert sample_info("astronaut").license == "public domain"
