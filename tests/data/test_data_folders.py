"""Folder datasets: validation errors, pairing by stem, class folders, SR pairs."""

from __future__ import annotations

import pytest
import torch
from datahelpers import write_folder, write_image
from tests.conftest import require_shared

from copymark import images as im
from copymark.data import (
    ClassFolders,
    ImageFolder,
    PairedFolders,
    PairedRandomCrop,
    RandomHFlip,
    SRPairs,
    UnpairedFolders,
    loader,
)
from copymark.errors import DataError

# ----------------------------------------------------------------------------- folder validation


def test_missing_directory_names_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as e:
        ImageFolder(missing)
    assert str(missing) in str(e.value) and "not found" in str(e.value)
    assert e.value.hint


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "x.png"
    write_image(f)
    with pytest.raises(DataError, match="not a directory"):
        ImageFolder(f)


def test_empty_folder(tmp_path):
    with pytest.raises(DataError) as e:
        ImageFolder(tmp_path)
    assert "empty" in str(e.value) and str(tmp_path) in str(e.value)


def test_folder_without_supported_images(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    with pytest.raises(DataError) as e:
        ImageFolder(tmp_path)
    msg = str(e.value)
    assert "no images of a supported type" in msg and "notes.txt" in msg and ".png" in msg


def test_only_subfolders_suggests_recursive(tmp_path):
    write_image(tmp_path / "sub" / "a.png")
    with pytest.raises(DataError, match="recursive=True"):
        ImageFolder(tmp_path)
    ds = ImageFolder(tmp_path, recursive=True)
    assert ds.keys == ["sub/a"]


# ----------------------------------------------------------------------------- ImageFolder


def test_image_folder_items_sorted_and_exact(tmp_path):
    arrs = write_folder(tmp_path, ["b.png", "a.png", "c.bmp"])
    (tmp_path / ".hidden.png").write_bytes(b"junk")  # hidden files are skipped
    (tmp_path / "readme.md").write_text("x")  # non-image files are skipped
    ds = ImageFolder(tmp_path)
    assert ds.keys == ["a", "b", "c"]
    item = ds[1]
    assert item["key"] == "b" and item["path"].endswith("b.png")
    assert item["image"].shape == (3, 16, 20) and item["image"].dtype == torch.float32
    expected = torch.from_numpy(arrs["b.png"]).permute(2, 0, 1).float() / 255
    assert torch.equal(item["image"], expected)


def test_size_policy_error_names_file_and_size(tmp_path):
    write_image(tmp_path / "a.png", 16, 16)
    write_image(tmp_path / "big.png", 24, 30)
    ds = ImageFolder(tmp_path, size=16)
    assert ds[0]["image"].shape == (3, 16, 16)
    with pytest.raises(DataError) as e:
        ds[1]
    assert "big.png" in str(e.value) and "24x30" in str(e.value)


@pytest.mark.parametrize("policy", ["resize", "center_crop", "random_crop"])
def test_size_policies_give_target_size(tmp_path, policy):
    write_image(tmp_path / "a.png", 16, 16)
    write_image(tmp_path / "big.png", 24, 30)
    ds = ImageFolder(tmp_path, size=(12, 14), resize_policy=policy)
    batch = next(iter(loader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 3, 12, 14)
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1


def test_center_crop_policy_values(tmp_path):
    arr = write_image(tmp_path / "a.png", 20, 20)
    out = ImageFolder(tmp_path, size=10, resize_policy="center_crop")[0]["image"]
    assert torch.equal(out, torch.from_numpy(arr[5:15, 5:15]).permute(2, 0, 1).float() / 255)


def test_crop_policy_smaller_image_is_error(tmp_path):
    write_image(tmp_path / "small.png", 8, 8)
    with pytest.raises(DataError, match="small.png"):
        ImageFolder(tmp_path, size=10, resize_policy="center_crop")[0]


def test_unknown_policy(tmp_path):
    write_image(tmp_path / "a.png")
    with pytest.raises(DataError, match="resize_policy"):
        ImageFolder(tmp_path, resize_policy="stretch")  # type: ignore[arg-type]


def test_mixed_sizes_in_batch_give_data_error(tmp_path):
    write_image(tmp_path / "a.png", 16, 16)
    write_image(tmp_path / "b.png", 8, 8)
    with pytest.raises(DataError) as e:
        next(iter(loader(ImageFolder(tmp_path), batch_size=2)))
    assert "differ in size" in str(e.value) and "a" in str(e.value)


def test_png_named_jpg_decodes_by_content(tmp_path):
    arr = write_image(tmp_path / "fake.jpg", fmt="PNG")
    x = ImageFolder(tmp_path)[0]["image"]
    assert torch.equal(x, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)  # lossless: PNG was used


# ----------------------------------------------------------------------------- paired / unpaired


def test_paired_mismatch_lists_missing_names_and_counts(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    write_folder(a, [f"{i:02d}.png" for i in range(10)])
    write_folder(b, [f"{i:02d}.jpg" for i in range(3, 12)])
    with pytest.raises(DataError) as e:
        PairedFolders(a, b)
    msg = str(e.value)
    assert "3 missing in B" in msg and "['00', '01', '02']" in msg
    assert "2 missing in A" in msg and "['10', '11']" in msg
    assert "has 10 images" in msg and "has 9" in msg


def test_paired_mismatch_lists_at_most_five(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    write_folder(a, [f"{i:02d}.png" for i in range(12)])
    write_folder(b, ["00.png"])
    with pytest.raises(DataError) as e:
        PairedFolders(a, b)
    assert "11 missing in B" in str(e.value) and "'05'" in str(e.value) and "'06'" not in str(e.value)


def test_paired_duplicate_stem_is_error(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    write_folder(a, ["x.png", "x.jpg"])
    write_folder(b, ["x.png"])
    with pytest.raises(DataError, match="two images with the stem 'x'"):
        PairedFolders(a, b)


def test_paired_matches_by_stem_across_extensions_and_transforms_together(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    arr_a = write_folder(a, ["p.png", "q.png"], 12, 12, seed=0)
    arr_b = write_folder(b, ["p.bmp", "q.bmp"], 12, 12, seed=10)
    ds = PairedFolders(a, b, size=8, resize_policy="random_crop", transform=RandomHFlip(0.5), seed=3)
    assert ds.keys == ["p", "q"]
    full_a = torch.from_numpy(arr_a["q.png"]).permute(2, 0, 1).float() / 255
    full_b = torch.from_numpy(arr_b["q.bmp"]).permute(2, 0, 1).float() / 255
    flips = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        item = ds[1]
        # find where the A crop came from; the B crop must be the same window (and same flip)
        found = False
        for flip in (False, True):
            ca = item["a"].flip(-1) if flip else item["a"]
            cb = item["b"].flip(-1) if flip else item["b"]
            for t in range(5):
                for left in range(5):
                    if torch.equal(full_a[:, t : t + 8, left : left + 8], ca):
                        assert torch.equal(full_b[:, t : t + 8, left : left + 8], cb)
                        found = True
                        flips.add(flip)
        assert found
    assert flips == {False, True}  # over 8 epochs both outcomes occur (p = 1 - 2 * 0.5**8)


def test_paired_size_mismatch_names_both_files(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    write_image(a / "x.png", 16, 16)
    write_image(b / "x.png", 8, 8)
    with pytest.raises(DataError) as e:
        PairedFolders(a, b)[0]
    assert str(a / "x.png") in str(e.value) and str(b / "x.png") in str(e.value)


def test_paired_missing_folder_b(tmp_path):
    write_image(tmp_path / "A" / "x.png")
    with pytest.raises(DataError, match="folder B not found"):
        PairedFolders(tmp_path / "A", tmp_path / "B")


def test_unpaired_length_and_seeded_partners(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    write_folder(a, [f"a{i}.png" for i in range(3)], 8, 8)
    write_folder(b, [f"b{i}.png" for i in range(7)], 8, 8)
    ds = UnpairedFolders(a, b, seed=1)
    assert len(ds) == 7
    keys = [(ds[i]["key_a"], ds[i]["key_b"]) for i in range(7)]
    assert [k[0] for k in keys] == ["a0", "a1", "a2", "a0", "a1", "a2", "a0"]
    assert keys == [(ds[i]["key_a"], ds[i]["key_b"]) for i in range(7)]  # reproducible
    assert keys == [(x["key_a"], x["key_b"]) for x in UnpairedFolders(a, b, seed=1)]
    other = [UnpairedFolders(a, b, seed=2)[i]["key_b"] for i in range(7)]
    ds.set_epoch(1)
    epoch1 = [ds[i]["key_b"] for i in range(7)]
    # another seed or another epoch re-draws the partners (7 draws from 7: equal by chance w.p. 7**-7)
    assert other != [k[1] for k in keys] and epoch1 != [k[1] for k in keys]
    with pytest.raises(IndexError):
        ds[7]


# ----------------------------------------------------------------------------- class folders


def test_class_folders_labels_follow_sorted_names(tmp_path):
    write_folder(tmp_path / "zebra", ["1.png", "2.png"])
    write_folder(tmp_path / "ant", ["1.png"])
    ds = ClassFolders(tmp_path)
    assert ds.classes == ["ant", "zebra"]
    assert ds.targets == [0, 1, 1]
    assert ds.keys == ["ant/1", "zebra/1", "zebra/2"]
    x, y = ds[2]
    assert x.shape == (3, 16, 20) and y == 1


def test_class_folders_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        ClassFolders(tmp_path / "missing")
    write_image(tmp_path / "loose.png")
    with pytest.raises(DataError, match="no class subfolders"):
        ClassFolders(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError) as e:
        ClassFolders(tmp_path)
    assert "'cat'" in str(e.value) and "empty" in str(e.value)


def test_class_folders_cifar10():
    root = require_shared("cifar10", "train")
    ds = ClassFolders(root)
    assert len(ds) == 5000 and ds.classes[0] == "airplane" and ds.classes[-1] == "truck"
    x, y = ds[len(ds) - 1]
    assert x.shape == (3, 32, 32) and y == 9
    xb, yb = next(iter(loader(ds, batch_size=16, shuffle=True, seed=0)))
    assert xb.shape == (16, 3, 32, 32) and yb.dtype == torch.int64


def test_class_folders_tiny_imagenet_grayscale_jpegs_become_rgb():
    root = require_shared("tiny_imagenet", "val")
    ds = ClassFolders(root)
    assert len(ds) == 5000 and len(ds.classes) == 100
    wnids = (root.parent / "wnids.txt").read_text().split()
    assert ds.classes == wnids  # class index = line index of wnids.txt
    from PIL import Image

    # find a grayscale JPEG (70 exist) by header, in a few classes only to stay fast
    gray = None
    for i, p in enumerate(ds.files[:1500]):
        with Image.open(p) as img:
            if img.mode == "L":
                gray = i
                break
    assert gray is not None, "expected a grayscale JPEG among the first 1500 files"
    x, _ = ds[gray]
    assert x.shape == (3, 64, 64)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


# ----------------------------------------------------------------------------- SR pairs


def test_sr_pairs_generated_lr_is_bicubic_of_mod_cropped_hr(tmp_path):
    write_image(tmp_path / "hr" / "x.png", 35, 42)
    ds = SRPairs(tmp_path / "hr", scale=4)
    item = ds[0]
    assert item["hr"].shape == (3, 32, 40) and item["lr"].shape == (3, 8, 10)
    hr_full = im.load_image(tmp_path / "hr" / "x.png")
    assert torch.equal(item["hr"], hr_full[:, :32, :40])
    assert torch.equal(item["lr"], im.downscale_bicubic(hr_full, 4))
    assert torch.equal(item["lr"], im.quantize(item["lr"]))  # 8-bit, as a stored LR would be


def test_sr_pairs_size_mismatch_names_file(tmp_path):
    write_image(tmp_path / "hr" / "x.png", 32, 32)
    write_image(tmp_path / "lr" / "x.png", 9, 8)
    with pytest.raises(DataError) as e:
        SRPairs(tmp_path / "hr", tmp_path / "lr", scale=4)
    assert "x.png" in str(e.value) and "32x32" in str(e.value) and "9x8" in str(e.value)


def test_sr_pairs_set5_with_given_lr_and_paired_crop():
    root = require_shared("sr", "Set5")
    ds = SRPairs(root / "HR", root / "LR_x4", scale=4, transform=PairedRandomCrop(16, 4), seed=0)
    assert ds.keys == [f"img_00{i}" for i in range(1, 6)]
    item = ds[0]
    assert item["lr"].shape == (3, 16, 16) and item["hr"].shape == (3, 64, 64)
    # the HR crop is the region the LR crop was made from: downscaling it reproduces the LR
    # crop up to border effects; compare interiors
    lr_from_hr = im.downscale_bicubic(item["hr"], 4)
    diff = (lr_from_hr - item["lr"])[:, 2:-2, 2:-2].abs().mean().item()
    assert diff < 2 / 255, diff
    # wrong scale: named error
    with pytest.raises(DataError, match="img_001"):
        SRPairs(root / "HR", root / "LR_x4", scale=2)


def test_sr_pairs_unmatched_stems(tmp_path):
    write_folder(tmp_path / "hr", ["a.png", "b.png"], 16, 16)
    write_folder(tmp_path / "lr", ["a.png"], 4, 4)
    with pytest.raises(DataError, match=r"1 missing in B, e.g. \['b'\]"):
        SRPairs(tmp_path / "hr", tmp_path / "lr", scale=4)


def test_dataset_items_do_not_depend_on_fetch_order(tmp_path):
    write_folder(tmp_path, [f"{i}.png" for i in range(4)], 12, 12)
    ds = ImageFolder(tmp_path, size=6, resize_policy="random_crop", seed=5)
    forward = [ds[i]["image"] for i in range(4)]
    backward = [ds[i]["image"] for i in reversed(range(4))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward, strict=True))
    reseeded = ImageFolder(tmp_path, size=6, resize_policy="random_crop", seed=6)
    assert not all(torch.equal(a, reseeded[i]["image"]) for i, a in enumerate(forward))


def test_paired_random_crop_policy_needs_equal_sizes(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    write_image(a / "x.png", 16, 16)
    write_image(b / "x.png", 12, 12)
    with pytest.raises(DataError) as e:
        PairedFolders(a, b, size=8, resize_policy="random_crop")[0]
    assert "16x16" in str(e.value) and "12x12" in str(e.value) and str(b / "x.png") in str(e.value)
    # resize brings both to the target
    item = PairedFolders(a, b, size=8, resize_policy="resize")[0]
    assert item["a"].shape == item["b"].shape == (3, 8, 8)
