"""The run orchestrator (copymark.train.api): refused starts leave nothing, resume reads the
stored config back (task checked, only device/progress/lr may change), a longer run is a new
run whose command the refusal names, and a run stopped before its first checkpoint resumes."""

from __future__ import annotations

import json
import shlex

import pytest
import torch

from copymark.cli import main
from copymark.errors import ConfigError, CopymarkError
from copymark.train import api
from copymark.train.loop import linear_decay, set_learning_rate
from copymark.train.pix2pix import Pix2Pix


def _cfg(tiny, kind, data, **loop):
    base = {"iters": 3, "batch_size": 2, "progress": False, "log_every": 1}
    base.update(loop)
    init_from = base.pop("init_from", None)
    return api.make_train_config(kind, data, tiny[kind], size=32, init_from=init_from, **base)


def _rows(run):
    return [json.loads(x) for x in (run / "losses.jsonl").read_text().splitlines()]


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- refused starts


def _train_args(data, run, tiny, *extra):
    return ["train", "pix2pix", "--data", str(data), "--run-dir", str(run), "--size", "32", "--iters", "1",
            "--batch-size", "2", "--net-config", json.dumps(tiny["pix2pix"]), "--no-progress", *extra]  # fmt: skip


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--amp", "fp16"], "fp16 needs CUDA"),
        (["--batch-size", "64"], "fewer than one batch"),
        (["--net-config", '{"generator": {"ngff": 8}}'], "unknown key"),
        (["--size", "48"], "multiple of"),
        (["--init-from", "{missing}"], "not found"),
        (["--device", "nonsense"], "unknown device"),
    ],
)
def test_refused_train_start_leaves_no_folder(extra, message, paired_dir, tmp_path, tiny, capsys):
    run = tmp_path / "run"
    args = _train_args(paired_dir, run, tiny, *[a.replace("{missing}", str(tmp_path / "nope")) for a in extra])
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()
    # the same folder then takes a good start (nothing half-made blocks it)
    assert main(_train_args(paired_dir, run, tiny)) == 0


def test_refused_srgan_start_without_vgg_weights_leaves_no_folder(sr_dir, tmp_path, tiny, capsys, monkeypatch):
    monkeypatch.delenv("COPYMARK_VGG19_WEIGHTS", raising=False)
    run = tmp_path / "run"
    args = ["train", "srgan", "--data", str(sr_dir), "--run-dir", str(run), "--size", "32", "--iters", "1",
            "--batch-size", "2", "--net-config", json.dumps(tiny["srgan"]), "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert "VGG19 weights" in capsys.readouterr().err
    assert not run.exists()


def test_refused_from_store_start_removes_the_pairs_it_laid_out(tmp_path, photos, tiny, capsys, helpers):
    """--from-store lays the store's pairs out in RUN/store_pairs; a refusal after that removes them."""
    from copymark.client.store import QueryStore
    from copymark.images import encode_png

    store = QueryStore(tmp_path / "store")
    for x in helpers.crops(photos["astronaut"], 32, 24)[:4]:
        sha = store.add_input(encode_png(x), "victim-1")
        store.record_answer(sha, "victim-1", encode_png(helpers.target_of(x)))
    store.set_meta("campaign", json.dumps({"scale": 1, "task": "style"}))
    store.close()
    run = tmp_path / "run"
    args = ["train", "pix2pix", "--from-store", str(tmp_path / "store"), "--run-dir", str(run), "--size", "32",
            "--iters", "1", "--net-config", json.dumps(tiny["pix2pix"]), "--no-progress"]  # fmt: skip
    assert main([*args, "--amp", "fp16"]) == 2
    assert "fp16 needs CUDA" in capsys.readouterr().err
    assert not run.exists()
    assert main([*args, "--batch-size", "2"]) == 0  # the same command without the bad option trains
    assert len(list((run / "store_pairs" / "A").iterdir())) == 4


def test_refused_resume_leaves_the_run_untouched(paired_dir, tmp_path, tiny, capsys):
    run = tmp_path / "run"
    assert main(_train_args(paired_dir, run, tiny)) == 0
    before = _snapshot(run)
    assert main(["train", "pix2pix", "--run-dir", str(run), "--resume", "--device", "nonsense"]) == 2
    assert main(["train", "pix2pix", "--run-dir", str(run), "--resume", "--iters", "5"]) == 2
    assert "differs from the run's 1" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_resume_checks_the_task(paired_dir, tmp_path, tiny):
    run = tmp_path / "run"
    api.train(_cfg(tiny, "pix2pix", paired_dir, iters=1), run)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "task": "stego-train"}))
    with pytest.raises(ConfigError, match="a 'stego-train' run, not a 'train' run"):
        api.resume(run, progress=False)
    with pytest.raises(ConfigError, match="not a run folder"):
        api.resume(tmp_path / "nothing")


# --------------------------------------------------------------------------- resume variants


def test_run_stopped_before_its_first_checkpoint_resumes_from_zero(paired_dir, tmp_path, tiny, monkeypatch):
    """A run killed before any checkpoint (save_every 0) trains again from iteration 0, like a fresh run."""
    full = tmp_path / "full"
    api.train(_cfg(tiny, "pix2pix", paired_dir), full)
    cut = tmp_path / "cut"
    orig = Pix2Pix.step

    def crashing(self, batch, ctx):
        if ctx.iteration == 3:
            raise KeyboardInterrupt("simulated kill")
        return orig(self, batch, ctx)

    monkeypatch.setattr(Pix2Pix, "step", crashing)
    with pytest.raises(KeyboardInterrupt):
        api.train(_cfg(tiny, "pix2pix", paired_dir), cut)
    monkeypatch.setattr(Pix2Pix, "step", orig)
    assert not (cut / "checkpoints").exists() and [r["iteration"] for r in _rows(cut)] == [1, 2]
    res = api.resume(cut, progress=False)
    assert res.resumed_from == 0 and res.iterations == 3
    assert _rows(cut) == _rows(full)  # no duplicated rows, the same trajectory
    assert "no checkpoint yet" in (cut / "log.txt").read_text()


def test_resume_with_a_new_lr(paired_dir, tmp_path, tiny):
    """--resume --lr: lr 0 from the checkpoint on leaves G at the checkpoint's weights; recorded."""
    from copymark.nets.build import load_net

    run = tmp_path / "run"
    api.train(_cfg(tiny, "pix2pix", paired_dir, iters=4, save_every=2, keep_checkpoints=0), run)
    (run / "checkpoints" / "LATEST").write_text("iter-00000002\n")
    g2, _ = load_net(run / "checkpoints" / "iter-00000002" / "nets" / "G")
    api.resume(run, progress=False, lr=0.0)
    g4, _ = load_net(run / "checkpoints" / "iter-00000004" / "nets" / "G")
    a, b = g2.state_dict(), g4.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k.endswith(("weight", "bias")))
    rows = _rows(run)
    assert [r["lr_G"] for r in rows if r["iteration"] > 2] == [0.0, 0.0]
    assert json.loads((run / "metrics.json").read_text())["lr_changes"] == [{"iteration": 2, "lr": 0.0}]


def test_set_learning_rate_keeps_the_schedule_shape():
    class P:
        pass

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-2)
    sched = linear_decay(opt, iters=10, decay_start=0.5)
    for _ in range(7):  # 5 constant, then 2 of 5 decay steps: factor 0.6
        opt.step()
        sched.step()
    proc = P()
    proc.optimizers, proc.schedulers = {"G": opt}, {"G": sched}
    set_learning_rate(proc, 1e-3)  # type: ignore[arg-type]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.6e-3)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4e-3)  # the decay goes on from the new base


# --------------------------------------------------------------------------- a longer run


def test_resume_longer_is_refused_with_a_command_that_works(paired_dir, tmp_path, tiny, capsys):
    old = tmp_path / "old"
    assert main(_train_args(paired_dir, old, tiny, "--iters", "2", "--seed", "5")) == 0
    with pytest.raises(ConfigError) as e:
        api.resume(old, iters=4)
    assert "--iters 4 differs from the run's 2" in e.value.message
    command = e.value.hint.split(": ", 1)[1]
    argv = shlex.split(command)
    assert argv[:3] == ["copymark", "train", "pix2pix"] and "--init-from" in argv
    assert main([*argv[1:], "--no-progress"]) == 0
    new = tmp_path / "old-4"
    cfg = json.loads((new / "config.json").read_text())
    assert cfg["init_from"] == str(old) and cfg["loop"]["iters"] == 4 and cfg["loop"]["seed"] == 5
    old_cfg = json.loads((old / "config.json").read_text())
    assert cfg["procedure"] == old_cfg["procedure"] and cfg["data"] == old_cfg["data"]  # same architecture, data
    assert {**cfg["loop"], "iters": 2} == old_cfg["loop"]
    assert _rows(new)[-1]["iteration"] == 4
    assert set(json.loads((new / "metrics.json").read_text())["init_from"]["nets"]) == {"G", "D"}


def test_a_taken_run_dir_is_refused_first(paired_dir, tmp_path, tiny):
    run = tmp_path / "run"
    api.train(_cfg(tiny, "pix2pix", paired_dir, iters=1), run)
    with pytest.raises(CopymarkError, match="already holds a run"):
        api.train(_cfg(tiny, "pix2pix", tmp_path / "no-such-data", iters=1), run)
