"""``copymark verify``: a protected model is claimed with a bounded false-claim probability, null
models are not; calibration measures p0 on independently trained models; bad kits and options are
refused by name."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from protect_helpers import write_classes, write_secrets

from copymark.cli import main
from copymark.stats.sequential import null_rate_upper
from copymark.watermark.kit import KitError, generate_keypair
from copymark.watermark.verify import VerifyConfig, calibrate, verify

SMALL = '{"net": {"widths": [16, 32, 64]}, "optim": {"lr": 0.05}}'


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("verify")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pub = generate_keypair(root / "keys" / "owner.key")
        data, secrets = write_classes(root / "data"), write_secrets(root / "secrets")

        def classifier(name: str, seed: int) -> Path:
            run = root / name
            assert main(["classifier", "train", "--data", str(data), "--run-dir", str(run), "--net", "small_cnn",
                         "--net-config", SMALL, "--iters", "80", "--batch-size", "16", "--seed", str(seed),
                         "--no-progress"]) == 0  # fmt: skip
            return run

        host = classifier("host", 0)
        nulls = [classifier(f"null-{s}", s) for s in (11, 12, 13, 14)]
        protected = root / "protected"
        assert main(["protect", "--method", "two-phase", "--data", str(data), "--secrets", str(secrets),
                     "--run-dir", str(protected), "--key", str(root / "keys" / "owner.key"), "--host", str(host),
                     "--codec", "lsb", "--triggers", "16", "--trigger-batch", "16", "--iters", "200",
                     "--batch-size", "16", "--no-progress"]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(n)
    return {"root": root, "pub": pub, "host": host, "nulls": nulls, "protected": protected, "kit": protected / "kit"}


def _calibration(world, tmp_path) -> Path:
    out = tmp_path / "calibration.json"
    calibrate(world["kit"], world["nulls"][:3], out, public_key=world["pub"])
    return out


def test_calibration_measures_the_null_rate_on_independent_models(world, tmp_path):
    out = _calibration(world, tmp_path)
    cal = json.loads(out.read_text())
    assert len(cal["models"]) == 3 and cal["trials"] == 3 * 16
    assert cal["p0_upper"] == pytest.approx(null_rate_upper(cal["agreements"], cal["trials"], 0.999))
    # the labels avoid the cover's class and the unprotected host's answer: null models rarely agree
    assert cal["agreements"] <= 6
    with pytest.raises(Exception, match="the protected model itself"):
        calibrate(world["kit"], [world["protected"]], tmp_path / "x.json")


def _verify(world, tmp_path, suspect: Path, run: str, **kw):
    cfg = VerifyConfig(kit=world["kit"], model=suspect, calibration=_calibration(world, tmp_path),
                       public_key=world["pub"], alpha=1e-3, beta=1e-3, **kw)  # fmt: skip
    return verify(cfg, run_dir=tmp_path / run, progress=False)


def test_the_protected_model_is_owned_with_a_bounded_false_claim_probability(world, tmp_path):
    rec = _verify(world, tmp_path, world["protected"], "owned")
    assert rec["verdict"] == "owned", rec["statement"]
    fc = rec["false_claim_probability"]
    assert fc["bound"] <= 1e-3 and fc["bound"] == pytest.approx(math.exp(-rec["test"]["log_lr"]))
    assert fc["fixed_n_binomial_tail"] <= fc["bound"] * 10  # the fixed-n tail is of the same order
    assert rec["triggers_used"] <= rec["queries"] < rec["triggers_used"] + 8 <= 16 + 8  # a round of 8 may overshoot
    lo, hi = rec["trigger_accuracy"]["ci95"]
    assert lo <= rec["trigger_accuracy"]["value"] <= hi
    assert rec["kit"]["trust"] == "trusted public key" and rec["kit"]["method"] == "two-phase"
    assert rec["recovered_secrets"]["psnr"]["mean"] > 20  # LSB: the secrets' top 4 bits come back exactly
    saved = json.loads((tmp_path / "owned" / "metrics.json").read_text())["verification"]
    assert saved["verdict"] == "owned" and saved["test"]["trace"] == rec["test"]["trace"]


def test_an_independently_trained_model_is_not_claimed(world, tmp_path):
    rec = _verify(world, tmp_path, world["nulls"][3], "innocent")  # not one of the calibration's models
    assert rec["verdict"] != "owned", rec["statement"]
    assert rec["false_claim_probability"]["bound"] > 1e-3
    rec2 = _verify(world, tmp_path, world["host"], "host")  # the unprotected host of the protected model
    assert rec2["verdict"] == "not owned", rec2["statement"]


def test_the_order_is_seeded_and_max_queries_bounds_the_spend(world, tmp_path):
    a = _verify(world, tmp_path, world["protected"], "a", order_seed=3, max_queries=2)
    b = _verify(world, tmp_path, world["protected"], "b", order_seed=3, max_queries=2)
    assert a["verdict"] == "undecided" and a["queries"] == 2 and a["test"]["trace"] == b["test"]["trace"]


def test_bad_kits_and_options_are_refused(world, tmp_path):
    cal = _calibration(world, tmp_path)
    kit2 = tmp_path / "kit"
    shutil.copytree(world["kit"], kit2)
    (kit2 / "triggers" / "t00000.png").write_bytes(b"not a png")
    with pytest.raises(KitError, match=r"t00000\.png does not match"):
        verify(VerifyConfig(kit=kit2, model=world["protected"], p0=0.05), run_dir=tmp_path / "r1", progress=False)
    assert not (tmp_path / "r1").exists()
    with pytest.raises(Exception, match="not below p1"):
        verify(
            VerifyConfig(kit=world["kit"], model=world["protected"], p0=0.6), run_dir=tmp_path / "r2", progress=False
        )
    with pytest.raises(ValueError, match="exactly one suspect"):
        VerifyConfig(kit=world["kit"], p0=0.05)
    other = tmp_path / "other.json"
    data = json.loads(cal.read_text())
    data["kit_commitment"] = "sha256:" + "0" * 64
    other.write_text(json.dumps(data))
    with pytest.raises(KitError, match="calibrated for kit"):
        verify(VerifyConfig(kit=world["kit"], model=world["protected"], calibration=other), run_dir=tmp_path / "r3",
               progress=False)  # fmt: skip


def test_cli_prints_the_verdict_and_exits_2_on_bad_input(world, tmp_path, capsys):
    cal = _calibration(world, tmp_path)
    argv = ["verify", "--kit", str(world["kit"]), "--model", str(world["protected"]), "--calibration", str(cal),
            "--alpha", "1e-3", "--public-key", str(world["pub"]), "--run-dir", str(tmp_path / "cli"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    head = json.loads(out[: out.rindex("}") + 1])
    assert head["verdict"] == "owned" and head["false_claim_probability"] <= 1e-3 and "owned:" in out
    assert main(["verify", "--kit", str(world["kit"]), "--model", str(world["protected"])]) == 2
    assert "exactly one null rate" in capsys.readouterr().err
    assert main(["verify", "calibrate", "--kit", str(world["kit"]), "--null-model", str(tmp_path / "none"),
                 "--out", str(tmp_path / "c.json")]) == 2  # fmt: skip


# ------------------------------------------------------------------------------------------
# through the served classifier's HTTP API


def _serve(world, tmp_path, budget: int, model: Path | None = None, isolation: str = "inline"):
    from copymark.serving.app import create_app
    from copymark.serving.classifiers import load_classifier
    from copymark.serving.server import BackgroundServer
    from copymark.serving.settings import ServeSettings

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"owner-key-0001": {"budget": budget, "rate_per_s": 1000, "burst": 1000}}))
    settings = ServeSettings(keys_file=keys, usage_db=tmp_path / "usage.sqlite", isolation=isolation)
    return BackgroundServer(create_app(load_classifier(str(model or world["protected"])), settings))


def _charged(url: str) -> int:
    import httpx

    from copymark.serving.metrics import parse_prometheus_text

    return int(parse_prometheus_text(httpx.get(f"{url}/metrics").text)["copymark_answers_total"])


def test_verification_through_the_api_decides_owned_and_never_resends_a_trigger(world, tmp_path):
    cal = _calibration(world, tmp_path)
    cfg = dict(kit=world["kit"], calibration=cal, public_key=world["pub"], alpha=1e-3, batch=2)
    # a budget of 3 answers stops the first attempt before the verdict; the answers are kept
    with _serve(world, tmp_path, budget=3) as srv:
        with pytest.raises(Exception, match="rerun the same command to resume") as ei:
            verify(
                VerifyConfig(model_url=srv.url, **cfg), api_key="owner-key-0001", run_dir=tmp_path / "v", progress=False
            )
        assert "budget" in str(ei.value).lower()
        assert _charged(srv.url) == 3
    # the owner gets a larger budget (a new server on the same usage ledger): the rerun pays only the rest
    keys = {"owner-key-0001": {"budget": 100, "rate_per_s": 1000, "burst": 1000}}
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    from copymark.serving.app import create_app
    from copymark.serving.classifiers import load_classifier
    from copymark.serving.server import BackgroundServer
    from copymark.serving.settings import ServeSettings

    settings = ServeSettings(keys_file=tmp_path / "keys.json", usage_db=tmp_path / "usage.sqlite", isolation="inline")
    with BackgroundServer(create_app(load_classifier(str(world["protected"])), settings)) as srv:
        rec = verify(
            VerifyConfig(model_url=srv.url, **cfg), api_key="owner-key-0001", run_dir=tmp_path / "v", progress=False
        )
        new = _charged(srv.url)
    assert rec["verdict"] == "owned" and rec["false_claim_probability"]["bound"] <= 1e-3
    assert rec["queries"] == 3 + new  # every trigger answered once over both runs, none sent twice
    local = _verify(world, tmp_path, world["protected"], "local", batch=2)
    assert rec["test"]["trace"] == local["test"]["trace"]  # the API's labels are the model's own
    assert rec["suspect"]["kind"] == "api" and rec["suspect"]["victim_id"]


def test_the_api_of_another_model_is_refused_before_any_query(world, tmp_path):
    from copymark.serving.app import create_app
    from copymark.serving.models import load_model
    from copymark.serving.server import BackgroundServer
    from copymark.serving.settings import ServeSettings

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"owner-key-0001": {"budget": 10}}))
    app = create_app(load_model("classical:stylize"), ServeSettings(keys_file=keys, isolation="inline"))
    with BackgroundServer(app) as srv:
        with pytest.raises(Exception, match="not a classifier"):
            verify(VerifyConfig(kit=world["kit"], model_url=srv.url, p0=0.05), api_key="owner-key-0001",
                   run_dir=tmp_path / "x", progress=False)  # fmt: skip
    assert not (tmp_path / "x").exists()
