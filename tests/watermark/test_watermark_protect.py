"""``copymark protect``: all three methods watermark a small host on CPU (trigger accuracy far above
chance; labels never the cover's class nor the reference answer), the kit is written, signed, loadable
and is what was measured; resume; bad input is a one-line error, exit 2, and leaves no run folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from protect_helpers import CLASSES, write_classes, write_secrets

from copymark.checkpoints import load_checkpoint
from copymark.cli import main
from copymark.watermark.kit import generate_keypair, load_kit

SMALL_HOST = '{"net": {"widths": [16, 32, 64]}, "optim": {"lr": 0.05}}'
CHANCE = 1 / len(CLASSES)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("protect")
    pub = generate_keypair(root / "keys" / "owner.key")
    return {
        "root": root,
        "data": write_classes(root / "data"),
        "secrets": write_secrets(root / "secrets"),
        "key": root / "keys" / "owner.key",
        "pub": pub,
    }


@pytest.fixture(scope="module")
def host(world) -> Path:
    """A small unprotected host trained with `copymark classifier train` (the --host of the end-to-end tests)."""
    run = world["root"] / "host"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["classifier", "train", "--data", str(world["data"]), "--run-dir", str(run), "--net", "small_cnn",
                     "--net-config", SMALL_HOST, "--iters", "100", "--batch-size", "16", "--no-progress"]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(n)
    return run


def _args(world, method: str, run: Path, *extra: str) -> list[str]:
    return ["protect", "--method", method, "--data", str(world["data"]), "--secrets", str(world["secrets"]),
            "--run-dir", str(run), "--key", str(world["key"]), "--no-progress", *extra]  # fmt: skip


def _check_protected(run: Path, world, method: str, min_trigger_accuracy: float) -> dict:
    """What every protection must give: metrics, a loadable kit that holds what was measured, the label rule."""
    from copymark.train.classifier import load_classifier, predict
    from copymark.watermark.kit import weights_fingerprint

    m = json.loads((run / "metrics.json").read_text())
    assert m["method"] == method and m["classes"] == list(CLASSES)
    assert m["trigger_accuracy"] >= min_trigger_accuracy > 2 * CHANCE
    assert set(m["accuracy_before"]) == set(m["accuracy_after"]) == {"val", "test"}
    assert m["trigger_psnr"]["n"] == m["triggers"] and m["trigger_ssim"]["mean"] <= 1
    assert ("secret_psnr" in m) == (method != "acsac19")
    kit = load_kit(run / "kit", trusted_public_key=world["pub"], commitment=(run / "commitment.txt").read_text())
    assert kit.commitment == m["commitment"] and kit.manifest.method == method
    ref = kit.manifest.extra["reference_answers"]
    for t, r in zip(kit.manifest.triggers, ref, strict=True):
        assert t.label != t.cover_label and t.label != r  # the label rule
        assert (world["data"] / f"{t.cover_id}.png").is_file()  # cover ids name the owner's files
    assert kit.manifest.extra["reference_on"] == ("trigger" if method == "two-phase" else "cover")
    # the kit's model identity is the protected model's, and its triggers are what was measured
    net, cfg, _ = load_classifier(run / "model")
    assert kit.manifest.model.fingerprint == weights_fingerprint(load_checkpoint(run / "model")[0]) == m["fingerprint"]
    assert (kit.manifest.model.num_classes, kit.manifest.model.input_size) == (4, 32)
    assert kit.manifest.model.class_names == list(CLASSES) == cfg.class_names
    pred = predict(net, kit.trigger_images())
    assert float((pred == torch.tensor(kit.labels)).double().mean()) == m["trigger_accuracy"]
    from copymark.images import load_image

    on_covers = predict(
        net, torch.stack([load_image(world["data"] / f"{t.cover_id}.png") for t in kit.manifest.triggers])
    )
    assert float((on_covers == torch.tensor(kit.labels)).double().mean()) == m["cover_label_agreement"]
    assert (kit.codec_dir is not None) and (kit.codec_dir / "model.safetensors").is_file()
    assert (run / "visibility.png").is_file()
    return m


def test_two_phase_trains_host_and_codec_then_fine_tunes(world, tmp_path, capsys):
    run = tmp_path / "two-phase"
    args = _args(world, "two-phase", run, "--net", "small_cnn", "--host-config", SMALL_HOST, "--host-iters", "100",
                 "--codec-iters", "80", "--codec-batch-size", "8", "--codec-config", '{"codec": {"width": 16}}',
                 "--method-config", '{"host_optim": {"lr": 0.05}}', "--triggers", "16", "--trigger-batch", "16",
                 "--iters", "250", "--batch-size", "16")  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    m = _check_protected(run, world, "two-phase", 0.75)
    assert out.strip().splitlines()[-1] == f"commitment: {m['commitment']}"
    assert (run / "host" / "model").is_dir() and (run / "codec-run" / "codec").is_dir()
    assert len(list((run / "triggers").glob("*.png"))) == 16
    # the labels avoid the unprotected host's answer on the triggers themselves: it agrees with none
    assert m["unprotected_agreement"] == 0.0
    # the protected model is a classifier checkpoint the classifier commands read
    ev = tmp_path / "eval"
    assert main(["classifier", "eval", "--model", str(run), "--data", str(world["data"]), "--run-dir", str(ev)]) == 0
    assert json.loads((ev / "metrics.json").read_text())["accuracy"]["test"] == m["accuracy_after"]["test"]
    # resume: a complete run has nothing to do; a run stopped before its kit redoes only the end
    assert main(["protect", "--resume", "--run-dir", str(run), "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    labels = load_kit(run / "kit").labels
    shutil.rmtree(run / "kit")
    shutil.rmtree(run / "model")
    assert main(["protect", "--resume", "--run-dir", str(run), "--no-progress"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert load_kit(run / "kit").labels == labels and again["trigger_accuracy"] == m["trigger_accuracy"]
    assert again["fingerprint"] == m["fingerprint"]  # the same protected weights
    # a second start into the finished folder is refused
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err


E2E = '"codec": {"width": 16}, "host_optim": {"lr": 0.1}'


@pytest.mark.parametrize(
    "method, config",
    [
        ("e2e-extraction", "{" + E2E + "}"),
        ("acsac19", "{" + E2E + ', "w_ce": 1.0, "w_adv": 0.1, "discriminator": {"kind": "xunet", "width": 4}}'),
    ],
    ids=["e2e-extraction", "acsac19"],
)
def test_end_to_end_methods_protect_a_trained_host(method, config, world, host, tmp_path):
    """The end-to-end methods, starting from a trained host (--host, --start-from unprotected) so that a
    few hundred CPU iterations suffice. E2E-Extraction keeps the reference's loss weights; ACSAC19 gets
    w_ce = 1 and w_adv = 0.1 (the reference: 0.1 and 1) with a narrow XuNet: with 250 iterations the
    reference weights reach 6/8 to 8/8 triggers depending on the seed, these 8/8.
    6 of 8 triggers right by chance (1/4 each) has probability 0.004."""
    run = tmp_path / method
    args = _args(world, method, run, "--host", str(host), "--start-from", "unprotected", "--method-config", config,
                 "--triggers", "8", "--trigger-batch", "8", "--iters", "250", "--batch-size", "8")  # fmt: skip
    assert main(args) == 0
    m = _check_protected(run, world, method, 0.75)
    cfg = json.loads((run / "embed" / "config.json").read_text())
    assert cfg["init_from"] == str(host / "model") and cfg["procedure"]["kind"] == method
    kit = load_kit(run / "kit")
    assert kit.manifest.codec.kind == "en2d" and kit.manifest.codec.config["width"] == 16
    assert not (run / "host").exists()  # the given host was not retrained
    if method == "e2e-extraction":
        assert m["secret_psnr"]["n"] == 8


def test_two_phase_with_a_given_host_and_the_lsb_codec(world, host, tmp_path):
    """--host and --codec lsb: no phase but the fine-tuning runs; the kit records a codec without weights."""
    run = tmp_path / "lsb"
    args = _args(world, "two-phase", run, "--host", str(host), "--codec", "lsb", "--triggers", "8",
                 "--trigger-batch", "8", "--iters", "10", "--batch-size", "8")  # fmt: skip
    assert main(args) == 0
    assert not (run / "host").exists() and not (run / "codec-run").exists() and not (run / "codec").exists()
    kit = load_kit(run / "kit", trusted_public_key=world["pub"])
    assert (
        kit.manifest.codec.kind == "lsb"
        and kit.codec_dir is None
        and kit.manifest.codec.config == {"kind": "lsb", "bits": 4}
    )
    m = json.loads((run / "metrics.json").read_text())
    assert m["trigger_psnr"]["mean"] > 28  # 4 low bits: at most 15/255 per value
    assert m["secret_psnr"]["mean"] > 20  # the top 4 bits of the secret come back exactly
    assert m["unprotected_agreement"] == 0.0 and m["host_from"] == str(host)
    embed = json.loads((run / "embed" / "config.json").read_text())
    assert embed["init_from"] == str(host / "model") and embed["loop"]["iters"] == 10


def test_a_given_host_is_checked_against_the_data_split_not_the_folder_path(world, host, tmp_path, capsys):
    """A copy of the host's data (the same keys, hence the same split) is accepted; a folder with
    one image less (another split) is refused before any folder is made."""
    copy = tmp_path / "moved-data"
    shutil.copytree(world["data"], copy)
    small = ["--host", str(host), "--codec", "lsb", "--triggers", "8", "--trigger-batch", "8", "--iters", "2",
             "--batch-size", "8"]  # fmt: skip
    ok = tmp_path / "ok"
    args = _args(world, "two-phase", ok, *small)
    args[args.index("--data") + 1] = str(copy)
    assert main(args) == 0 and (ok / "kit" / "manifest.json").is_file()
    first = sorted((copy / CLASSES[0]).iterdir())[0]
    first.unlink()
    bad = tmp_path / "bad"
    args = _args(world, "two-phase", bad, *small)
    args[args.index("--data") + 1] = str(copy)
    capsys.readouterr()
    assert main(args) == 2
    assert "trained on another data folder or split (dir differ)" in " ".join(capsys.readouterr().err.split())
    assert not bad.exists()


def _two_classes(world, tmp_path):
    d = tmp_path / "two"
    for c in CLASSES[:2]:
        shutil.copytree(world["data"] / c, d / c)
    return ["--data", str(d)]


def _secrets_inside(world, tmp_path):
    d = tmp_path / "nested"
    shutil.copytree(world["data"], d)
    shutil.copytree(world["secrets"], d / "coffee" / "logos")
    return ["--data", str(d), "--secrets", str(d / "coffee" / "logos")]


def _secret_is_a_cover(world, tmp_path):
    d = tmp_path / "secrets"
    shutil.copytree(world["secrets"], d)
    for c in CLASSES:  # every image: whichever covers the seed picks, one of them is here
        for f in (world["data"] / c).iterdir():
            shutil.copy(f, d / f"{c}-{f.name}")
    return ["--secrets", str(d)]


def _encrypted_key(world, tmp_path):
    generate_keypair(tmp_path / "enc.key", passphrase="s3cret")  # and no $COPYMARK_KIT_PASSPHRASE
    return ["--key", str(tmp_path / "enc.key")]


@pytest.mark.parametrize(
    "method, make, message",
    [
        ("two-phase", lambda w, t: ["--key", str(t / "missing.key")], "private key not found"),
        ("two-phase", _encrypted_key, "is encrypted"),
        ("two-phase", lambda w, t: ["--secrets", str(w["data"])], "is the data folder"),
        ("two-phase", _secrets_inside, "overlap"),
        ("two-phase", _secret_is_a_cover, "is the same image as the cover"),
        ("two-phase", lambda w, t: ["--triggers", "1000"], "the train split has"),
        ("two-phase", _two_classes, "need at least 3"),
        ("two-phase", lambda w, t: ["--triggers", "8", "--trigger-batch", "9"], "larger than the 8 triggers"),
        ("two-phase", lambda w, t: ["--batch-size", "1000"], "fewer than one batch"),
        ("two-phase", lambda w, t: ["--size", "36", "--resize-policy", "resize"], "is not supported"),
        ("two-phase", lambda w, t: ["--secrets", str(t / "nowhere")], "not found"),
        ("two-phase", lambda w, t: ["--method-config", '{"w_ssim": 5}'], "unknown key 'w_ssim'"),
        ("acsac19", lambda w, t: ["--method-config", '{"discriminator": {"kind": "resnet18"}}'], "discriminator"),
        ("acsac19", lambda w, t: ["--codec", "lsb"], "cannot start it"),
        ("e2e-extraction", lambda w, t: ["--device", "cuda:7"], "cuda"),
        ("e2e-extraction", lambda w, t: ["--amp", "fp16"], "fp16"),
        ("rot13", lambda w, t: [], "unknown --method 'rot13'"),
    ],
)
def test_bad_input_is_refused_before_the_run_folder(method, make, message, world, tmp_path, capsys):
    if message == "cuda" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    if message == "fp16" and torch.cuda.is_available():
        pytest.skip("fp16 is valid where CUDA is")
    run = tmp_path / "refused"
    extra = make(world, tmp_path)
    args = _args(world, method, run, "--triggers", "8", "--trigger-batch", "4", "--net", "small_cnn", "--iters", "1")
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err, err
    assert not run.exists()


def test_a_host_of_another_task_is_refused(world, host, tmp_path, capsys):
    other = tmp_path / "other"
    for c in ("ant", "bee", "cow", "dog"):
        shutil.copytree(world["data"] / "coffee", other / c)
    run = tmp_path / "refused"
    args = ["protect", "--method", "two-phase", "--data", str(other), "--secrets", str(world["secrets"]),
            "--run-dir", str(run), "--key", str(world["key"]), "--host", str(host), "--triggers", "8",
            "--trigger-batch", "4", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert "trained on other class names" in capsys.readouterr().err and not run.exists()


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["two-phase", "e2e-extraction", "acsac19"])
def test_full_size_resnet18_at_256_px_on_the_gpu(method, tmp_path):
    """The study's setting by configuration: ResNet-18 (ImageNet stem) at 256 px, the default codec and
    discriminator, bf16 on CUDA (a few iterations: this checks the configuration runs, not its figures)."""
    from protect_helpers import write_classes_upscaled

    from copymark.images import save_image

    data = write_classes_upscaled(tmp_path / "data", size=256, per_class=12)
    secrets = tmp_path / "secrets"
    for i in range(4):  # any images will do as secrets here
        save_image(torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(i)), secrets / f"s{i}.png")
    generate_keypair(tmp_path / "owner.key")
    run = tmp_path / "run"
    args = ["protect", "--method", method, "--data", str(data), "--secrets", str(secrets), "--run-dir", str(run),
            "--key", str(tmp_path / "owner.key"), "--device", "cuda", "--amp", "bf16", "--host-iters", "20",
            "--codec-iters", "10", "--codec-batch-size", "4", "--iters", "20", "--batch-size", "8", "--triggers", "8",
            "--trigger-batch", "8", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    m = json.loads((run / "metrics.json").read_text())
    cfg = json.loads((run / "model" / "config.json").read_text())["config"]
    assert (cfg["kind"], cfg["stem"], cfg["input_size"]) == ("resnet18", "imagenet", 256)
    embed = json.loads((run / "embed" / "config.json").read_text())
    assert embed["loop"]["device"] == "cuda" and embed["loop"]["amp"] == "bf16"
    kit = load_kit(run / "kit")
    assert kit.trigger_images().shape == (8, 3, 256, 256) and m["trigger_psnr"]["n"] == 8


def test_cover_negatives_reach_the_end_to_end_embedding(world, host, tmp_path):
    """--method-config cover_negatives: the embedding run records it and its host steps score the
    bare covers (acc_cover in the loss log); metrics say how often bare covers get the trigger label."""
    run = tmp_path / "e2e-neg"
    args = _args(world, "e2e-extraction", run, "--host", str(host), "--triggers", "8", "--trigger-batch", "8",
                 "--iters", "3", "--batch-size", "8",
                 "--method-config", '{"cover_negatives": true, "codec": {"width": 4}}')  # fmt: skip
    assert main(args) == 0
    assert json.loads((run / "embed" / "config.json").read_text())["procedure"]["cover_negatives"] is True
    logged = [json.loads(line) for line in (run / "embed" / "losses.jsonl").read_text().splitlines()]
    assert logged and all(0 <= e["acc_cover"] <= 1 for e in logged)
    assert 0 <= json.loads((run / "metrics.json").read_text())["cover_label_agreement"] <= 1
