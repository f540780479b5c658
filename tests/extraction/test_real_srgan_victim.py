"""A real pretrained victim end to end: SRGAN x4 (leftthomas/SRGAN) behind the API, extracted.

Runs the pipeline of ``benchmarks/extract_srgan.py`` (imported from the file, so the test and
the benchmark are one code path) at a small scale: the SRGAN x4 generator is built and loaded
strictly from ``../shared/data/weights/srgan_x4``, scripted to TorchScript in ``tmp_path``
(checked against the eager module), served from that ``.pt`` file by the real API on
127.0.0.1, queried with 16 px crops of Tiny-ImageNet photos, copied by a small SRResNet
trained briefly on CPU, and evaluated (tables A/B/C on Set5 and Set14, victim answers through
the API).

What is asserted, each of which could fail:

* the checkpoint's values and the module match (strict load; 735,372 values as the MANIFEST says);
* TorchScript output equals eager output;
* Set5 PSNR (Y, crop 4, 8-bit) of the answers received through the API equals the in-process
  figure of the same model's 8-bit outputs to 0.05 dB (the API does not degrade answers);
* those figures are within 0.1 dB of the ones issue 5 quotes (30.66 dB Set5, 27.69 dB Set14);
* every query was answered and is in the store;
* the surrogate learned (loss fell, table B far above what an untrained net scores) and table C
  is within a measured margin of table A. After this short training table B is still below the
  bicubic identity baseline (which is strong against this victim: 30.8 dB on Set5), so that
  comparison is reported, not asserted; the benchmark trains long enough to measure it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from tests.conftest import require_shared

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "extract_srgan.py"

pytestmark = pytest.mark.slow


def _bench():
    spec = importlib.util.spec_from_file_location("extract_srgan_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _losses(path: Path) -> tuple[float, float]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return float(rows[0]["mse"]), float(rows[-1]["mse"])


@pytest.mark.timeout(1800)
def test_real_srgan_victim_served_and_extracted(tmp_path, artifacts_dir):
    weights_dir = require_shared("weights", "srgan_x4")
    set5 = require_shared("sr", "Set5")
    set14 = require_shared("sr", "Set14")
    tiny = require_shared("tiny_imagenet")
    weights = weights_dir / "netG_epoch_4_100.pth"

    # strict loading; the value count the MANIFEST states (79 tensors, 735,372 values)
    from copymark.checkpoints import load_third_party_state_dict
    from copymark.nets.victims import load_srgan_x4, srgan_leftthomas_key_map

    raw = load_third_party_state_dict(weights, lambda s: s)
    assert len(raw) == 79 and sum(v.numel() for v in raw.values()) == 735_372
    net = load_srgan_x4(weights)  # raises WeightsError on any missing / unexpected key or shape
    mapped = srgan_leftthomas_key_map(raw)
    for k, v in net.state_dict().items():
        assert torch.equal(v, mapped[k]), k

    bench = _bench()
    queries = 160
    o = bench.Options(
        out=tmp_path / "run",
        weights=weights,
        attacker_data=tiny / "val",
        test_set=set5,
        benchmark_set=set14,
        queries=queries,
        size=16,
        strategy="random",
        iters=100,
        batch_size=8,
        blocks=4,
        nf=32,
        batch_norm=True,
        lr=5e-4,
        decay_start=1.0,
        n_boot=200,
        in_process_sets=("Set5",),
        untrained_baseline=False,
        progress=False,
        log_phases=True,
    )
    r = bench.run(o)
    (artifacts_dir / "real_srgan_victim.json").write_text(json.dumps(r, indent=2))
    sets = r["sets"]
    print(
        json.dumps(
            {
                "issue": r["reference_figures_issue"],
                "api_vs_in_process": {
                    k: {kk: vv for kk, vv in v.items() if kk != "per_image_in_process"}
                    for k, v in r["api_vs_in_process"].items()
                },
                "A": {s: sets[s]["tables"]["A"]["psnr_y"] for s in sets},
                "B": {s: sets[s]["tables"]["B"]["psnr_y"] for s in sets},
                "C": {s: sets[s]["tables"]["C"]["psnr_y"] for s in sets},
                "bicubic_vs_victim": {s: sets[s]["baselines"]["bicubic_vs_victim"]["psnr_y"] for s in sets},
                "bicubic_vs_gt": {s: sets[s]["baselines"]["bicubic_vs_gt"]["psnr_y"] for s in sets},
                "loss_first_last": _losses(Path(r["out"]) / "surrogate" / "losses.jsonl"),
                "wall_s": r["wall_s"],
            },
            indent=1,
        )
    )

    # the served file is the TorchScript export, and it computes what the eager module computes
    ts = Path(r["out"]) / r["victim"]["torchscript"]  # outputs are named relative to --out
    assert ts.is_file() and ts.is_relative_to(tmp_path)
    # data named relative to the shared folder, never by this machine's absolute paths
    assert r["victim"]["weights"] == "../shared/data/weights/srgan_x4/netG_epoch_4_100.pth"
    assert r["queries"]["data"] == "../shared/data/tiny_imagenet/val"
    assert r["victim"]["victim_id"] == hashlib.sha256(ts.read_bytes()).hexdigest()[:16]
    assert r["victim"]["torchscript_vs_eager"]["max_abs_diff"] < 1e-5
    assert r["victim"]["torchscript_vs_eager"]["differing_8bit_values"] == 0

    # through the API == in-process (8-bit), Set5, Y channel, crop 4
    cmp5 = r["api_vs_in_process"]["Set5"]
    assert cmp5["psnr_y_api"] is not None
    assert abs(cmp5["diff_db"]) <= 0.05, cmp5
    assert cmp5["pixels"]["max_abs_diff_levels"] <= 1, cmp5["pixels"]
    # ... and both agree with the figures issue 5 quotes for this victim
    assert abs(cmp5["psnr_y_in_process"] - 30.66) <= 0.1, cmp5["psnr_y_in_process"]
    assert abs(sets["Set14"]["tables"]["A"]["psnr_y"] - 27.69) <= 0.1, sets["Set14"]["tables"]["A"]
    assert sets["Set5"]["n"] == 5 and sets["Set14"]["n"] == 14

    # extraction: every query answered, from the attacker's own photos
    assert r["queries"]["spent"] == queries and r["queries"]["failed"] == 0
    assert r["surrogate"]["pairs"] == queries == r["queries"]["pairs_trained_on"]

    # the copy after 100 iterations (measured on 2 loaded cores: B 25.8 / 26.2 dB, C - A gap 5.8 / 3.7 dB
    # on Set5 / Set14; the loss fell 4.6x). It is NOT yet better than the bicubic identity baseline,
    # which this victim makes strong (bicubic vs victim: 30.8 / 30.0 dB Y): that takes far longer
    # training (benchmarks/extract_srgan.py), so it is reported, not asserted. The asserts below fail
    # if the pairs are misaligned, the scale or colours are wrong or training does not learn:
    # an untrained SRResNet scores 12-14 dB against the victim.
    first, last = _losses(Path(r["out"]) / "surrogate" / "losses.jsonl")
    assert last < first / 3, (first, last)
    for name in ("Set5", "Set14"):
        s = sets[name]
        assert s["tables"]["B"]["psnr_y"] >= 24.0, (name, s["tables"]["B"])
        assert s["baselines"]["bicubic_vs_victim"]["psnr_y"] is not None
        assert s["baselines"]["bicubic_vs_gt"]["psnr_y"] is not None
        assert s["tables"]["C"]["psnr_y"] < s["tables"]["A"]["psnr_y"], (name, s["tables"])
        assert 0.0 < s["gap_C_vs_A_db"] < 7.5, (name, s["gap_C_vs_A_db"])
        assert s["goal_within_0.5_db"] is (s["gap_C_vs_A_db"] <= 0.5)
