"""Every procedure trains a few iterations on CPU with tiny nets; checkpoints load back."""

from __future__ import annotations

import json

import pytest
import torch

from copymark.cli import main
from copymark.errors import ConfigError, DataError, WeightsError
from copymark.train import api
from copymark.translate import load_translation_model

TINY: dict = {}


@pytest.fixture(autouse=True)
def _tiny(tiny):
    TINY.update(tiny)


def _cfg(kind, data, **kw):
    loop = {"iters": 3, "batch_size": 2, "progress": False, "log_every": 1}
    loop.update(kw.pop("loop", {}))
    size = kw.pop("size", 32)
    init_from = kw.pop("init_from", None)
    return api.make_train_config(kind, data, {**TINY[kind], **kw}, size=size, init_from=init_from, **loop)


@pytest.mark.parametrize("kind", ["pix2pix", "cyclegan", "ugatit", "srresnet"])
def test_procedure_trains_and_exports(kind, tmp_path, paired_dir, unpaired_dir, sr_dir):
    data = {"pix2pix": paired_dir, "cyclegan": unpaired_dir, "ugatit": unpaired_dir, "srresnet": sr_dir}[kind]
    run_dir = tmp_path / "run"
    res = api.train(_cfg(kind, data), run_dir)
    assert res.iterations == 3 and res.last_losses
    assert all(torch.isfinite(torch.tensor(v)) for v in res.last_losses.values())
    rows = [json.loads(x) for x in (run_dir / "losses.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert (run_dir / "samples" / "iter-00000003.png").is_file()
    assert (run_dir / "checkpoints" / "LATEST").read_text().strip() == "iter-00000003"
    # the exported net loads for inference from the run folder, any size
    m = load_translation_model(run_dir)
    x = torch.rand(1, 3, 37, 45)
    y = m(x)
    scale = 2 if kind == "srresnet" else 1
    if kind == "ugatit":  # full U-GAT-IT runs at its fixed size only: tiles
        assert m.fixed_size == (32, 32)
    assert y.shape == (1, 3, 37 * scale, 45 * scale)
    assert torch.equal(y, m(x))  # deterministic
    # a training checkpoint and the net folder inside it load the same net
    ckpt = run_dir / "checkpoints" / "iter-00000003"
    export = json.loads((ckpt / "meta.json").read_text())["export"]
    for p in (ckpt, ckpt / "nets" / export):
        assert torch.equal(load_translation_model(p)(x), y)


def test_srgan_perceptual_needs_weights(sr_dir, tmp_path):
    with pytest.raises(WeightsError, match="VGG19 weights"):
        api.train(_cfg("srgan", sr_dir), tmp_path / "run")
    with pytest.raises(WeightsError, match="not found"):
        api.train(_cfg("srgan", sr_dir, vgg_weights=str(tmp_path / "missing.pth")), tmp_path / "run2")


def test_srgan_with_vgg_file_and_without_perceptual(sr_dir, tmp_path):
    from copymark.train.losses import VGGFeatures

    torch.manual_seed(0)
    vgg = tmp_path / "vgg19.pth"
    torch.save(VGGFeatures().state_dict(), vgg)  # a torchvision-layout features.* state dict (random weights)
    res = api.train(_cfg("srgan", sr_dir, vgg_weights=str(vgg), loop={"iters": 2}), tmp_path / "run")
    assert set(res.last_losses) == {"vgg", "G_adv", "D"}
    # explicit opt-out: pixel MSE content loss, initialised from an SRResNet run
    api.train(_cfg("srresnet", sr_dir, loop={"iters": 1}), tmp_path / "pre")
    res = api.train(
        _cfg("srgan", sr_dir, perceptual=False, init_from=str(tmp_path / "pre"), loop={"iters": 2}), tmp_path / "run2"
    )
    assert set(res.last_losses) == {"mse", "G_adv", "D"}


def test_cli_train_and_translate(paired_dir, tmp_path):
    run_dir = tmp_path / "run"
    net = json.dumps(TINY["pix2pix"])
    rc = main(
        [
            "train",
            "pix2pix",
            "--data",
            str(paired_dir),
            "--run-dir",
            str(run_dir),
            "--size",
            "32",
            "--batch-size",
            "2",
            "--iters",
            "2",
            "--net-config",
            net,
            "--no-progress",
            "--sample-every",
            "1",
        ]
    )
    assert rc == 0
    assert (run_dir / "samples" / "iter-00000001.png").is_file()
    assert "G_l1" in (run_dir / "log.txt").read_text()
    # resuming a finished run changes nothing
    before = json.loads((run_dir / "metrics.json").read_text())
    assert main(["train", "pix2pix", "--run-dir", str(run_dir), "--resume", "--no-progress"]) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["final_losses"] == before["final_losses"]
    assert "already finished" in (run_dir / "log.txt").read_text()
    out = tmp_path / "out"
    rc = main(
        [
            "translate",
            "--model",
            str(run_dir),
            "--input",
            str(paired_dir / "A"),
            "--output",
            str(out),
            "--tile",
            "32",
            "--overlap",
            "8",
            "--no-progress",
        ]
    )
    assert rc == 0 and len(list(out.glob("*.png"))) == 16
    # an existing run is not overwritten
    assert (
        main(
            [
                "train",
                "pix2pix",
                "--data",
                str(paired_dir),
                "--run-dir",
                str(run_dir),
                "--size",
                "32",
                "--net-config",
                net,
                "--no-progress",
            ]
        )
        == 2
    )


def test_bad_data_is_a_clear_error(tmp_path, paired_dir, photos):
    from copymark.images import save_image

    (tmp_path / "empty" / "A").mkdir(parents=True)
    (tmp_path / "empty" / "B").mkdir(parents=True)
    with pytest.raises(DataError, match="empty"):
        api.train(_cfg("pix2pix", tmp_path / "empty"), tmp_path / "r1")
    with pytest.raises(DataError, match="no paired A/B folders"):
        api.train(_cfg("pix2pix", tmp_path), tmp_path / "r2")
    # more batch than data
    with pytest.raises(DataError, match="fewer than one batch"):
        api.train(_cfg("pix2pix", paired_dir, loop={"batch_size": 64}), tmp_path / "r6")
    # a mixed-size folder: error naming the file, unless a resize policy is chosen
    save_image(photos["coffee"][:, :40, :50], paired_dir / "A" / "odd.png")
    save_image(photos["coffee"][:, :40, :50], paired_dir / "B" / "odd.png")
    with pytest.raises(DataError, match=r"odd.png \(40x50\)"):
        api.train(_cfg("pix2pix", paired_dir), tmp_path / "r3")
    # grayscale (and palette) files are converted to RGB on load, by the image convention
    from PIL import Image

    gray = (photos["chelsea"][0, :32, :32] * 255).to(torch.uint8).numpy()
    Image.fromarray(gray, mode="L").save(paired_dir / "A" / "gray.png")
    Image.fromarray(gray, mode="L").convert("P").save(paired_dir / "B" / "gray.png")
    cfg = api.make_train_config(
        "pix2pix", paired_dir, TINY["pix2pix"], size=32, resize_policy="resize", iters=1, batch_size=18, progress=False
    )
    res = api.train(cfg, tmp_path / "r4")  # all 18 pairs in one batch: the odd one resized, the gray one RGB
    assert res.iterations == 1
    # a size that is not a multiple of the generator's stride
    with pytest.raises(ConfigError, match="multiple of the generator's stride"):
        api.train(_cfg("pix2pix", paired_dir, size=48), tmp_path / "r5")
    # a typo in the net config
    with pytest.raises(ConfigError, match="unknown key"):
        api.make_train_config("pix2pix", paired_dir, {"generator": {"ngff": 8}})


def test_bf16_autocast_path_on_cpu(paired_dir, tmp_path):
    res = api.train(_cfg("pix2pix", paired_dir, loop={"iters": 2, "amp": "bf16"}), tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(v)) for v in res.last_losses.values())
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        api.train(_cfg("pix2pix", paired_dir, loop={"iters": 1, "amp": "fp16"}), tmp_path / "run2")
    assert not (tmp_path / "run2").exists()  # refused before a run folder was made


@pytest.mark.gpu
@pytest.mark.parametrize(
    "kind,amp", [("pix2pix", "bf16"), ("cyclegan", "fp16"), ("ugatit", "bf16"), ("srresnet", "fp16")]
)
def test_procedure_trains_on_cuda_with_amp(kind, amp, tmp_path, paired_dir, unpaired_dir, sr_dir):
    """GPU by configuration: AMP + channels_last; the exported net runs on CPU and on CUDA alike."""
    data = {"pix2pix": paired_dir, "cyclegan": unpaired_dir, "ugatit": unpaired_dir, "srresnet": sr_dir}[kind]
    cfg = _cfg(kind, data, loop={"iters": 4, "device": "cuda", "amp": amp, "channels_last": True})
    res = api.train(cfg, tmp_path / "run")
    assert res.iterations == 4
    assert all(torch.isfinite(torch.tensor(v)) for v in res.last_losses.values())
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert "cuda" in json.dumps(env).lower()
    x = torch.rand(1, 3, 32, 32)
    cpu = load_translation_model(tmp_path / "run", "cpu")(x)
    gpu = load_translation_model(tmp_path / "run", "cuda")(x.cuda()).cpu()
    assert torch.allclose(cpu, gpu, atol=2e-3)


@pytest.mark.gpu
def test_resume_on_cuda_continues_training(paired_dir, tmp_path):
    """A CUDA run cut back to its checkpoint at 2 resumes on CUDA to its 4 iterations."""
    import shutil

    run = tmp_path / "run"
    api.train(
        _cfg("pix2pix", paired_dir, loop={"iters": 4, "device": "cuda", "save_every": 1, "keep_checkpoints": 0}), run
    )
    for it in (3, 4):
        shutil.rmtree(run / "checkpoints" / f"iter-{it:08d}")
    (run / "checkpoints" / "LATEST").write_text("iter-00000002\n")
    res = api.resume(run, device="cuda", progress=False)
    assert res.iterations == 4 and res.resumed_from == 2
    rows = [json.loads(x) for x in (run / "losses.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
