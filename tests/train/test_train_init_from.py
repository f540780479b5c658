"""--init-from for every translation procedure: the nets start from the source's weights (strict,
same architecture), so the first logged loss differs from a fresh run's with the same seed."""

from __future__ import annotations

import json

import pytest
import torch

from copymark.checkpoints import load_checkpoint
from copymark.errors import WeightsError
from copymark.train import api

EXTRA = {"srgan": {"perceptual": False}}  # no VGG file in the default tier: the pixel content loss


def _cfg(tiny, kind, data, init_from=None, **over):
    loop = {"iters": 1, "batch_size": 2, "progress": False, "log_every": 1, "seed": 0}
    return api.make_train_config(kind, data, {**tiny[kind], **EXTRA.get(kind, {}), **over}, size=32,
                                 init_from=init_from, **loop)  # fmt: skip


def _first_losses(run):
    return json.loads((run / "losses.jsonl").read_text().splitlines()[0])


@pytest.mark.parametrize(
    "kind,source_kind,nets",
    [
        ("pix2pix", "pix2pix", {"G", "D"}),
        ("cyclegan", "cyclegan", {"G_A", "G_B", "D_A", "D_B"}),
        ("ugatit", "ugatit", {"A2B", "B2A", "GA", "GB", "LA", "LB"}),
        ("srresnet", "srresnet", {"G"}),
        ("srgan", "srresnet", {"G"}),  # the paper's start: G from SRResNet, a fresh D
        ("srgan", "srgan", {"G", "D"}),
    ],
)
def test_init_from_changes_the_start_of_training(
    kind, source_kind, nets, tiny, tmp_path, paired_dir, unpaired_dir, sr_dir
):
    data = {"pix2pix": paired_dir, "cyclegan": unpaired_dir, "ugatit": unpaired_dir}.get(kind, sr_dir)
    source = tmp_path / "source"
    src_cfg = _cfg(tiny, source_kind, data, lr=1e-2)
    src_cfg.loop.iters = 2
    api.train(src_cfg, source)
    fresh, started = tmp_path / "fresh", tmp_path / "started"
    api.train(_cfg(tiny, kind, data), fresh)
    api.train(_cfg(tiny, kind, data, init_from=source), started)
    a, b = _first_losses(fresh), _first_losses(started)
    assert a.keys() == b.keys()
    assert any(abs(a[k] - b[k]) > 1e-6 * max(1.0, abs(a[k])) for k in a if k != "iteration"), (a, b)
    assert set(json.loads((started / "metrics.json").read_text())["init_from"]["nets"]) == nets
    # the named nets hold exactly the source's weights before the first step; the others are fresh
    from copymark.train.loop import seed_everything

    cfg = _cfg(tiny, kind, data, init_from=source)
    seed_everything(0)
    proc = api.build_procedure(cfg.procedure, 1)
    seed_everything(0)
    fresh_proc = api.build_procedure(cfg.procedure, 1)
    loaded = api.init_nets(proc, source)
    assert set(loaded) == nets
    ckpt = source / "checkpoints" / "iter-00000002" / "nets"
    for name, net in proc.nets.items():
        want = load_checkpoint(ckpt / name)[0] if name in nets else fresh_proc.nets[name].state_dict()
        got = net.state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want), name


def test_init_from_a_net_checkpoint_folder_starts_the_exported_net(tiny, tmp_path, paired_dir):
    source = tmp_path / "source"
    api.train(_cfg(tiny, "pix2pix", paired_dir, lr=1e-2), source)
    g = source / "checkpoints" / "iter-00000001" / "nets" / "G"
    run = tmp_path / "run"
    api.train(_cfg(tiny, "pix2pix", paired_dir, init_from=g), run)
    assert json.loads((run / "metrics.json").read_text())["init_from"]["nets"] == {"G": str(g)}
    assert "initialised G" in (run / "log.txt").read_text()


def test_init_from_another_architecture_is_refused_before_the_run(tiny, tmp_path, paired_dir, unpaired_dir, sr_dir):
    source = tmp_path / "source"
    api.train(_cfg(tiny, "pix2pix", paired_dir), source)
    with pytest.raises(WeightsError, match=r"another architecture .*ngf: 8 there, 4 here"):
        api.train(_cfg(tiny, "pix2pix", paired_dir, init_from=source, generator={"ngf": 4}), tmp_path / "r1")
    with pytest.raises(WeightsError, match=r"its G has another architecture .*kind: unet there, srresnet here"):
        api.train(_cfg(tiny, "srresnet", sr_dir, init_from=source), tmp_path / "r2")
    cg = tmp_path / "cg"
    api.train(_cfg(tiny, "cyclegan", unpaired_dir), cg)
    with pytest.raises(WeightsError, match="another architecture"):  # its exported G_A is a ResNet, not a UNet
        api.train(_cfg(tiny, "pix2pix", paired_dir, init_from=cg), tmp_path / "r3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="neither a net checkpoint nor a run"):
        api.train(_cfg(tiny, "pix2pix", paired_dir, init_from=tmp_path / "empty"), tmp_path / "r4")
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 5))  # refused before a folder was made
