"""Transforms, hashed splits + manifest, seeded loader."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from datahelpers import write_folder

from copymark.data import (
    Compose,
    ImageFolder,
    PairedRandomCrop,
    RandomCrop,
    RandomHFlip,
    SplitManifest,
    assign_split,
    hash_fraction,
    item_generator,
    loader,
    paired_random_crop,
    random_crop,
    read_split_manifest,
    split_keys,
    subset,
    write_split_manifest,
)
from copymark.errors import DataError

# ----------------------------------------------------------------------------- transforms


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_random_crop_same_window_for_all_images():
    x = torch.arange(3 * 10 * 12, dtype=torch.float32).view(3, 10, 12)
    a, b = random_crop([x, x + 1000], (4, 5), _gen(0))
    assert a.shape == (3, 4, 5) and torch.equal(b, a + 1000)
    # the window is a real sub-block of x
    top = int(a[0, 0, 0].item()) // 12
    left = int(a[0, 0, 0].item()) % 12
    assert torch.equal(a, x[:, top : top + 4, left : left + 5])


def test_random_crop_reproducible_and_covers_positions():
    x = torch.arange(100, dtype=torch.float32).view(1, 10, 10).expand(3, 10, 10)
    assert torch.equal(random_crop([x], 3, _gen(7))[0], random_crop([x], 3, _gen(7))[0])
    corners = {int(random_crop([x], 3, _gen(s))[0][0, 0, 0].item()) for s in range(200)}
    assert 0 in corners and 77 in corners  # extreme windows (0,0) and (7,7) are reachable
    assert len(corners) > 40  # 64 possible windows


def test_random_crop_errors():
    with pytest.raises(DataError, match="larger than the image"):
        random_crop([torch.zeros(3, 4, 4)], 5, _gen(0))
    with pytest.raises(DataError, match="differ in size"):
        random_crop([torch.zeros(3, 4, 4), torch.zeros(3, 5, 4)], 2, _gen(0))


def test_paired_random_crop_matches_scale():
    hr = torch.rand(3, 40, 48)
    lr = hr[:, ::4, ::4].clone()  # each LR pixel = the top-left HR pixel of its 4x4 block
    lc, hc = paired_random_crop(lr, hr, 5, 4, _gen(3))
    assert lc.shape == (3, 5, 5) and hc.shape == (3, 20, 20)
    assert torch.equal(hc[:, ::4, ::4], lc)
    with pytest.raises(DataError, match="is not 4 x LR"):
        paired_random_crop(lr, hr[:, :-1], 5, 4, _gen(0))


def test_compose_flip_crop_on_lr_hr_group():
    hr = torch.rand(3, 32, 32)
    lr = hr[:, ::2, ::2].clone()
    t = Compose([PairedRandomCrop(6, 2), RandomHFlip(1.0)])
    lc, hc = t([lr, hr], _gen(1))
    assert torch.equal(hc[:, ::2, 1::2], lc)  # flipped together: LR pixel j <-> HR pixel 2j+1 from the right
    assert torch.equal(RandomHFlip(0.0)([lr], _gen(0))[0], lr)
    assert torch.equal(RandomCrop(32)([hr], _gen(0))[0], hr)


def test_item_generator_depends_on_all_three():
    draws = {
        tuple(torch.rand(4, generator=item_generator(*k)).tolist())
        for k in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    }
    assert len(draws) == 4
    assert torch.equal(
        torch.rand(4, generator=item_generator(3, 2, 1)), torch.rand(4, generator=item_generator(3, 2, 1))
    )


# ----------------------------------------------------------------------------- splits


def test_hash_fraction_is_sha256_of_salted_key():
    d = hashlib.sha256(b"saltimg_001").digest()
    assert hash_fraction("img_001", "salt") == int.from_bytes(d[:8], "big") / 2**64
    assert 0 <= hash_fraction("x") < 1


def test_split_ratios_and_disjointness():
    keys = [f"img_{i:05d}" for i in range(4000)]
    s = split_keys(keys, (0.7, 0.2, 0.1))
    n = {k: len(v) for k, v in s.items()}
    assert sum(n.values()) == 4000
    assert set(s["train"]).isdisjoint(s["val"]) and set(s["val"]).isdisjoint(s["test"])
    # binomial sd for 4000 draws at p=0.7 is ~29; allow 5 sd
    assert abs(n["train"] - 2800) < 145 and abs(n["val"] - 800) < 130 and abs(n["test"] - 400) < 100


def test_split_stable_when_files_added():
    old = [f"a{i}" for i in range(300)]
    new = old + [f"b{i}" for i in range(300)]
    s_old, s_new = split_keys(old), split_keys(new)
    for split in ("train", "val", "test"):
        assert set(s_old[split]) == set(s_new[split]) & set(old)


def test_salt_changes_assignment():
    keys = [str(i) for i in range(200)]
    assert split_keys(keys, salt="a") != split_keys(keys, salt="b")


def test_bad_ratios():
    with pytest.raises(DataError, match="sum to 1"):
        assign_split("x", (0.5, 0.2, 0.2))
    with pytest.raises(DataError):
        split_keys(["x"], (0.5, 0.5))


def test_manifest_round_trip_and_verify(tmp_path):
    keys = [f"k{i}" for i in range(50)]
    p = tmp_path / "split.json"
    m = write_split_manifest(p, keys, (0.6, 0.2, 0.2), salt="s1", source="folder X")
    obj = json.loads(p.read_text())
    assert obj["hash_method"].startswith("sha256") and obj["salt"] == "s1"
    assert obj["ratios"] == {"train": 0.6, "val": 0.2, "test": 0.2}
    assert sum(obj["counts"].values()) == 50 and sorted(sum(obj["splits"].values(), [])) == sorted(keys)
    back = read_split_manifest(p)
    assert back.splits == m.splits and back.ratios == m.ratios and back.source == "folder X"
    # an edited manifest (key moved to another split) is caught
    k = obj["splits"]["train"].pop()
    obj["splits"]["test"].append(k)
    p.write_text(json.dumps(obj))
    with pytest.raises(DataError, match=f"'{k}'"):
        read_split_manifest(p)


def test_manifest_read_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_split_manifest(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_split_manifest(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="not a copymark split manifest"):
        read_split_manifest(tmp_path / "other.json")


def test_subset_of_dataset_by_manifest(tmp_path):
    write_folder(tmp_path / "imgs", [f"{i:03d}.png" for i in range(30)], 8, 8)
    ds = ImageFolder(tmp_path / "imgs")
    m = SplitManifest.build(ds.keys, (0.5, 0.25, 0.25))
    parts = {s: subset(ds, m.splits[s]) for s in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == 30
    assert [parts["val"][i]["key"] for i in range(len(parts["val"]))] == m.splits["val"]
    with pytest.raises(DataError, match="not in the dataset"):
        subset(ds, ["999"])


# ----------------------------------------------------------------------------- loader


def _keys_of(dl):
    return [k for batch in dl for k in batch["key"]]


def test_loader_deterministic_given_seed(tmp_path):
    write_folder(tmp_path, [f"{i:02d}.png" for i in range(20)], 10, 10)
    ds = ImageFolder(tmp_path, size=6, resize_policy="random_crop", transform=RandomHFlip(), seed=1)
    a, b = loader(ds, 4, shuffle=True, seed=11), loader(ds, 4, shuffle=True, seed=11)
    batches_a, batches_b = list(a), list(b)
    assert [x["key"] for x in batches_a] == [x["key"] for x in batches_b]
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(batches_a, batches_b, strict=True))
    order = _keys_of(a)  # second epoch of the same loader: another order
    assert sorted(order) == sorted(ds.keys) and order != [k for x in batches_a for k in x["key"]]
    assert _keys_of(loader(ds, 4, shuffle=True, seed=12)) != [k for x in batches_a for k in x["key"]]
    assert _keys_of(loader(ds, 4, shuffle=False)) == ds.keys
    with pytest.raises(DataError, match="batch_size"):
        loader(ds, 0)


def test_loader_same_batches_with_workers(tmp_path):
    write_folder(tmp_path, [f"{i:02d}.png" for i in range(8)], 10, 10)
    ds = ImageFolder(tmp_path, size=6, resize_policy="random_crop", seed=2)
    serial = list(loader(ds, 4, shuffle=True, seed=5))
    parallel = list(loader(ds, 4, shuffle=True, seed=5, num_workers=2))
    assert [x["key"] for x in serial] == [x["key"] for x in parallel]
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(serial, parallel, strict=True))
