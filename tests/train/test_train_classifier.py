"""``copymark classifier train | eval``: the 8:1:1 split (reproducible, recorded), CIFAR's train/test
layout, train -> exact resume -> eval through the CLI, the augmentation, and bad input (exit 2, no folder)."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from copymark.cli import main
from copymark.data.class_splits import class_folder_splits, detect_layout
from copymark.data.splits import read_split_manifest
from copymark.errors import DataError
from copymark.images import save_image
from copymark.train.classifier import PadCropFlip

CLASSES = ("astronaut", "chelsea", "coffee", "rocket")
TINY = '{"net": {"widths": [8, 16]}, "optim": {"lr": 0.05}}'


def write_classes(root: Path, photos, crops, per_class: int = 40, step: int = 8) -> Path:
    """Class folders of 32 px tiles, one photograph per class (a task a tiny CNN learns in a few dozen steps)."""
    for c in CLASSES:
        tiles = crops(photos[c], 32, step)
        assert len(tiles) >= per_class
        for i, t in enumerate(tiles[:per_class]):
            save_image(t, root / c / f"{i:03d}.png")
    return root


@pytest.fixture
def classes_dir(tmp_path, photos, helpers) -> Path:
    return write_classes(tmp_path / "classes", photos, helpers.crops)


def _train_args(data: Path, run: Path, *extra: str) -> list[str]:
    return ["classifier", "train", "--data", str(data), "--run-dir", str(run), "--net", "small_cnn",
            "--batch-size", "16", "--net-config", TINY, "--no-progress", *extra]  # fmt: skip


def test_split_is_reproducible_and_recorded(classes_dir, tmp_path):
    a = class_folder_splits(classes_dir)
    b = class_folder_splits(classes_dir)
    assert a.layout == "classes" and a.classes == list(CLASSES)
    assert [s.keys for s in (a.train, a.val, a.test)] == [s.keys for s in (b.train, b.val, b.test)]
    n = sum(a.counts.values())
    assert n == 160 and set(a.train.keys).isdisjoint(a.test.keys) and set(a.val.keys).isdisjoint(a.test.keys)
    # 8:1:1 in expectation: the train count is Binomial(160, 0.8), sd 5; 6 sd either way
    assert abs(a.counts["train"] - 128) <= 30 and a.counts["test"] > 0
    assert a.train.keys[0].split("/")[0] in CLASSES  # keys are paths relative to the data folder
    another = class_folder_splits(classes_dir, salt="x")
    assert another.test.keys != a.test.keys  # the salt is what changes a split
    a.manifest.verify()
    # a key's split depends on the key alone: adding an image moves no other
    save_image(torch.rand(3, 32, 32), classes_dir / "coffee" / "new.png")
    c = class_folder_splits(classes_dir)
    assert set(a.test.keys) <= set(c.test.keys) and set(a.train.keys) <= set(c.train.keys)


def test_train_resume_exactly_then_eval(classes_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_args(classes_dir, run, "--iters", "40", "--save-every", "20")) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["accuracy"]) == {"train", "val", "test"} and sum(metrics["n"].values()) == 160
    assert metrics["accuracy"]["train"] > 0.5  # chance is 0.25
    manifest = read_split_manifest(run / "split.json")
    assert manifest.extra["layout"] == "classes" and len(manifest.splits["test"]) == metrics["n"]["test"]
    # a run stopped after its checkpoint at 20 resumes to the same weights, bitwise
    crashed = tmp_path / "crashed"
    shutil.copytree(run, crashed)
    shutil.rmtree(crashed / "checkpoints" / "iter-00000040")
    (crashed / "checkpoints" / "LATEST").write_text("iter-00000020\n")
    shutil.rmtree(crashed / "model")
    (crashed / "metrics.json").unlink()
    assert main(["classifier", "train", "--resume", "--run-dir", str(crashed), "--no-progress"]) == 0
    a, b = load_file(run / "model" / "model.safetensors"), load_file(crashed / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # eval on the training folder uses the model's recorded split: the same accuracies
    capsys.readouterr()
    ev = tmp_path / "eval"
    assert main(["classifier", "eval", "--model", str(run), "--data", str(classes_dir), "--run-dir", str(ev)]) == 0
    out = json.loads((ev / "metrics.json").read_text())
    assert out["recorded_split"] is True
    assert {k: out["accuracy"][k] for k in ("train", "val", "test")} == metrics["accuracy"]
    assert out["n"]["all"] == 160 and out["accuracy"]["all"] == sum(out["correct"][k] for k in metrics["n"]) / 160
    # --resume --iters N: the refusal names the command of a longer run, which works
    assert main(["classifier", "train", "--resume", "--run-dir", str(run), "--iters", "44", "--no-progress"]) == 2
    err = capsys.readouterr().err
    cmd = shlex.split(err[err.index("copymark classifier") :].replace("\n", " "))[1:]
    assert cmd[cmd.index("--init-from") + 1] == str(run)
    assert main(cmd + ["--no-progress"]) == 0
    assert json.loads((Path(f"{run}-44") / "metrics.json").read_text())["init_from"]["source"] == str(run)


def test_cifar_train_test_layout(tmp_path, photos, helpers):
    root = tmp_path / "cifar"
    write_classes(root / "train", photos, helpers.crops, per_class=30)
    for c in CLASSES:  # 5 test images per class, tiles the train folder does not have
        for i, t in enumerate(helpers.crops(photos[c], 32, 8)[30:35]):
            save_image(t, root / "test" / c / f"{i:03d}.png")
    assert detect_layout(root) == "train_test"
    s = class_folder_splits(root)
    assert s.counts["test"] == 20 and all(k.startswith("test/") for k in s.test.keys)
    assert s.counts["train"] + s.counts["val"] == 120 and all(k.startswith("train/") for k in s.train.keys)
    run = tmp_path / "run"
    assert main(_train_args(root, run, "--iters", "4")) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["n"]["test"] == 20 and m["classes"] == list(CLASSES)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["layout"] == "train_test" and cfg["data"]["size"] == 32  # the size read from the images
    # train/ and test/ with other classes are refused by name
    shutil.rmtree(root / "test" / "rocket")
    with pytest.raises(DataError, match="only in train: \\['rocket'\\]"):
        class_folder_splits(root)


def test_pad_crop_flip_is_a_shifted_window_of_the_padded_image():
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    seen = set()
    for seed in range(40):
        y = PadCropFlip(padding=2, flip=True)([x], torch.Generator().manual_seed(seed))[0]
        assert y.shape == x.shape
        hits = [
            (top, left, f)
            for top in range(5)
            for left in range(5)
            for f in (False, True)
            if torch.equal(y, (padded.flip(-1) if f else padded)[:, top : top + 8, left : left + 8])
        ]
        assert hits
        seen.add(hits[0])
    assert len(seen) > 10  # offsets and flips vary with the generator
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(PadCropFlip()([x], g1)[0], PadCropFlip()([x], g2)[0])


def _mixed_sizes(tmp_path, classes_dir):
    save_image(torch.rand(3, 40, 40), classes_dir / "chelsea" / "odd.png")
    return classes_dir


def _one_class(tmp_path, classes_dir):
    d = tmp_path / "one"
    shutil.copytree(classes_dir / "coffee", d / "coffee")
    return d


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (lambda t, c: t / "missing", [], "not found"),
        (_one_class, [], "needs at least 2"),
        (_mixed_sizes, ["--size", "32"], "odd.png: image is 40x40"),
        (lambda t, c: c, ["--net", "vgg"], "unknown classifier net 'vgg'"),
        (lambda t, c: c, ["--net-config", '{"optim": {"lrr": 1}}'], "unknown key 'optim.lrr'"),
        (lambda t, c: c, ["--net-config", '{"net": {"num_classes": 7}}'], "contradicts the data"),
        (lambda t, c: c, ["--split", "8:1"], "expected TRAIN:VAL:TEST"),
        (lambda t, c: c, ["--batch-size", "500"], "fewer than one batch"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_folder(make, extra, message, classes_dir, tmp_path, capsys):
    data = make(tmp_path, classes_dir)
    run = tmp_path / "refused"
    assert main(_train_args(data, run, "--iters", "2", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error:")
    assert not run.exists()


def test_eval_refuses_data_of_another_task(classes_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_args(classes_dir, run, "--iters", "2")) == 0
    other = tmp_path / "other"
    for c in ("ant", "bee", "cow", "dog"):
        shutil.copytree(classes_dir / "coffee", other / c)
    ev = tmp_path / "eval"
    assert main(["classifier", "eval", "--model", str(run / "model"), "--data", str(other), "--run-dir", str(ev)]) == 2
    assert "trained on other class names" in capsys.readouterr().err and not ev.exists()
    assert main(["classifier", "eval", "--model", str(tmp_path), "--data", str(classes_dir), "--run-dir", str(ev)]) == 2
    assert "no classifier checkpoint" in capsys.readouterr().err and not ev.exists()


def test_nets_show_classifier_lists_keys_the_command_accepts(capsys):
    from copymark.train.classifier import ClassifierTrainConfig, procedure_config
    from copymark.train.describe import show

    s = show("classifier")
    nested: dict = {}
    for k in s.keys:
        if k.default == "(--size)" or k.key.split(".")[-1] in ("num_classes", "class_names"):
            continue  # set from the data
        *path, last = k.key.split(".")
        d = nested
        for p in path:
            d = d.setdefault(p, {})
        d[last] = k.default
    assert procedure_config("resnet18", list(CLASSES), 32, nested) == procedure_config("resnet18", list(CLASSES), 32)
    assert {k.key for k in s.keys} >= {"optim.lr", "optim.schedule", "augment.crop_padding", "net.stem"}
    assert ClassifierTrainConfig().optim.lr == 0.1 and ClassifierTrainConfig().optim.weight_decay == 5e-4
    assert main(["nets", "show"]) == 0
    assert "classifier" in capsys.readouterr().out
