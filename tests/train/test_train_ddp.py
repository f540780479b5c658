"""DDP under torchrun: 2 CPU processes with gloo train the same model as one process with
the global batch (slow: starts two interpreters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from copymark.train import api


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tmp_path, paired_dir, tiny):
    # instance norm + no dropout: per-sample computations, so 2 x batch 1 (gradients averaged
    # by DDP) is the same optimisation as 1 x batch 2; the sampler gives the same global batches
    net = {
        "generator": {**tiny["pix2pix"]["generator"], "norm": "instance", "use_dropout": False},
        "discriminator": {**tiny["pix2pix"]["discriminator"], "norm": "instance"},
    }
    common = ["--size", "32", "--iters", "3", "--net-config", json.dumps(net), "--no-progress", "--seed", "3"]
    ddp_run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "copymark.cli",
        "train",
        "pix2pix",
        "--data",
        str(paired_dir),
        "--run-dir",
        str(ddp_run),
        "--batch-size",
        "1",
        *common,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "world 2" in (ddp_run / "log.txt").read_text()

    single = tmp_path / "single"
    cfg = api.make_train_config("pix2pix", paired_dir, net, size=32, iters=3, batch_size=2, progress=False, seed=3)
    api.train(cfg, single)
    # the logged losses (averaged over ranks under DDP) follow the same trajectory
    rows = lambda p: [json.loads(x) for x in (p / "losses.jsonl").read_text().splitlines()]  # noqa: E731
    for ra, rb in zip(rows(ddp_run), rows(single), strict=True):
        for k in ("G_gan", "G_l1", "D_real", "D_fake"):
            assert abs(ra[k] - rb[k]) <= 1e-4 * max(1.0, abs(rb[k])), (ra, rb)
    # and the trained generators compute the same function. (Weights are compared through
    # outputs: conv biases right before instance norm get no gradient but rounding noise, which
    # Adam normalises into +-lr steps that differ between the runs and change nothing.)
    from copymark.nets.build import load_net

    ga, _ = load_net(ddp_run / "checkpoints" / "iter-00000003" / "nets" / "G")
    gb, _ = load_net(single / "checkpoints" / "iter-00000003" / "nets" / "G")
    g0 = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g0)
    with torch.no_grad():
        ya, yb = ga(x), gb(x)
    assert float((ya - yb).abs().max()) < 1e-4
    # while training moved the output measurably (the comparison is not vacuous)
    from copymark.nets.build import build_net, parse_net_config

    torch.manual_seed(3)
    with torch.no_grad():
        y0 = build_net(parse_net_config({"kind": "unet", **net["generator"]})).eval()(x)
    assert float((ya - y0).abs().max()) > 1e-3


@pytest.mark.slow
def test_torch_compile_path_trains_and_exports(tmp_path, paired_dir, tiny):
    """torch.compile'd nets (inductor needs a C compiler; minutes on CPU): checkpoints hold the
    plain modules' weights and load for inference."""
    from copymark.translate import load_translation_model

    cfg = api.make_train_config(
        "pix2pix", paired_dir, tiny["pix2pix"], size=32, iters=2, batch_size=2, progress=False, compile=True
    )
    res = api.train(cfg, tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(v)) for v in res.last_losses.values())
    assert load_translation_model(tmp_path / "run")(torch.rand(1, 3, 40, 40)).shape == (1, 3, 40, 40)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cyclegan", "ugatit"])
def test_ddp_runs_procedures_with_several_forwards_per_step(kind, tmp_path, unpaired_dir, tiny):
    """CycleGAN and U-GAT-IT call each generator several times per step (and U-GAT-IT trains
    through a forward_cam wrapper); under DDP both must train, checkpoint once, report once."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "copymark.cli",
        "train",
        kind,
        "--data",
        str(unpaired_dir),
        "--run-dir",
        str(run_dir),
        "--size",
        "32",
        "--iters",
        "2",
        "--no-progress",
        "--net-config",
        json.dumps(tiny[kind]),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count(f"trained {kind}") == 1
    assert (run_dir / "checkpoints" / "LATEST").read_text().strip() == "iter-00000002"
