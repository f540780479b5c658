"""``copymark learning-curve``: table B against queries, per strategy, nested budgets, no query paid twice."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction

import pytest
from PIL import Image

from copymark import images as I
from copymark.errors import ConfigError
from copymark.extraction.learning_curve import LearningCurveConfig, goal_check, parse_fractions, run_learning_curve
from copymark.serving.app import create_app
from copymark.serving.models import load_model
from copymark.serving.server import BackgroundServer
from copymark.serving.settings import ServeSettings

ATTACKER, EVALUATOR = "attacker-key-123", "evaluator-key-123"


def test_parse_fractions():
    assert parse_fractions("1/4, 1/8,1,1/4") == [Fraction(1, 8), Fraction(1, 4), Fraction(1)]
    for bad in ("0", "3/2", "x", ""):
        with pytest.raises(ConfigError):
            parse_fractions(bad)


def test_goal_check():
    pts = [
        {"strategy": "random", "queries": 40, "value": 18.0},
        {"strategy": "diverse", "queries": 10, "value": 18.2},
        {"strategy": "diverse", "queries": 40, "value": 19.0},
    ]
    g = goal_check({"points": pts})
    assert g["evaluated"] and g["reached"] and g["best_quarter"] == 18.2
    pts[1]["value"] = 17.0
    assert not goal_check({"points": pts})["reached"]


def test_learning_curve_end_to_end(tmp_path):
    from copymark.data.samples import samples

    data, test = tmp_path / "attacker", tmp_path / "test"
    for s in samples(["astronaut", "rocket", "china"], max_side=128):
        I.save_image(s.image, data / f"{s.name}.png")
    for s in samples(["coffee"], max_side=128):
        I.save_image(I.center_crop(s.image, 64), test / f"{s.name}.png")
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps(
            {
                ATTACKER: {"budget": 32, "rate_per_s": 1000, "burst": 1000},
                EVALUATOR: {"budget": 10, "rate_per_s": 1000, "burst": 1000},
            }
        )
    )
    log = tmp_path / "requests.jsonl"
    settings = ServeSettings(keys_file=keys, request_log=log)
    with BackgroundServer(create_app(load_model("classical:stylize"), settings)) as srv:
        cfg = LearningCurveConfig(
            victim_url=srv.url,
            api_key=ATTACKER,
            eval_api_key=EVALUATOR,
            data=data,
            test=test,
            budget=16,
            run_dir=tmp_path / "run",
            strategies=["random", "diverse"],
            fractions=[Fraction(1, 2), Fraction(1)],
            net_config={"generator": {"num_downs": 5, "ngf": 4}, "discriminator": {"ndf": 4, "n_layers": 1}},
            size=64,
            train_size=32,
            iters=2,
            batch_size=2,
            n_boot=100,
            progress=False,
        )
        curve = run_learning_curve(cfg, echo=lambda *_: None)
    pts = curve["points"]
    # 64 px queries, surrogates trained on random 32 px crops of the answers
    sur_cfg = json.loads((tmp_path / "run" / "surrogates" / "random-8" / "config.json").read_text())
    assert sur_cfg["data"]["size"] == 32 and sur_cfg["data"]["resize_policy"] == "random_crop"
    assert [(p["strategy"], p["queries"]) for p in pts] == [
        ("random", 8),
        ("random", 16),
        ("diverse", 8),
        ("diverse", 16),
    ]
    assert all(p["value"] is not None and p["baseline_value"] is not None for p in pts)
    assert {p["baseline"] for p in pts} == {"identity_vs_victim"}
    saved = json.loads((tmp_path / "run" / "learning_curve.json").read_text())
    assert saved == json.loads(json.dumps(curve))
    assert Image.open(tmp_path / "run" / "learning_curve.png").format == "PNG"
    # nested budgets: 16 paid answers per strategy (not 8 + 16), and the test image asked once
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    paid = Counter(e.get("key") or e.get("key_id") or e.get("key_hash") for e in entries if e.get("status") == 200)
    assert sum(paid.values()) == 2 * 16 + 1, paid
    # each point is a prefix of the full-budget campaign: the diverse store at 16 holds exactly
    # the 16 crops a fresh diverse campaign with the whole budget picks
    from copymark.client.store import QueryStore, sha256_hex
    from copymark.extraction.campaign import crop_png, select_order

    fresh = {sha256_hex(crop_png(c, 64)) for c in select_order(data, 64, 16, "diverse", 0, n=16)}
    store = QueryStore(tmp_path / "run" / "store-diverse")
    try:
        (victim_id,) = {store.campaign()["victim_id"]}
        assert store.answered(victim_id) == fresh
    finally:
        store.close()


def test_train_from_store_cli(tmp_path, capsys):
    """`copymark extract` then `copymark train pix2pix --from-store`: the surrogate trains on the answers."""
    from copymark.cli import main
    from copymark.data.samples import samples

    data = tmp_path / "attacker"
    for s in samples(["astronaut", "rocket"], max_side=96):
        I.save_image(s.image, data / f"{s.name}.png")
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({ATTACKER: {"budget": 6, "rate_per_s": 1000, "burst": 1000}}))
    with BackgroundServer(create_app(load_model("classical:stylize"), ServeSettings(keys_file=keys))) as srv:
        assert (
            main(
                [
                    "extract",
                    "--victim-url",
                    srv.url,
                    "--api-key",
                    ATTACKER,
                    "--data",
                    str(data),
                    "--budget",
                    "6",
                    "--store",
                    str(tmp_path / "store"),
                    "--size",
                    "32",
                    "--quiet",
                ]
            )
            == 0
        )
    run = tmp_path / "sur"
    code = main(
        [
            "train",
            "pix2pix",
            "--from-store",
            str(tmp_path / "store"),
            "--run-dir",
            str(run),
            "--size",
            "32",
            "--iters",
            "2",
            "--batch-size",
            "2",
            "--no-progress",
            "--net-config",
            '{"generator": {"num_downs": 5, "ngf": 4}, "discriminator": {"ndf": 4}}',
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert len(I.list_images(run / "store_pairs" / "A")) == 6 == len(I.list_images(run / "store_pairs" / "B"))
    from copymark.translate import load_translation_model

    assert load_translation_model(run).scale == 1
    # a super-resolution procedure on a style store is refused with a reason
    code = main(["train", "srresnet", "--from-store", str(tmp_path / "store"), "--run-dir", str(tmp_path / "sr")])
    assert code == 2 and "does not fit" in capsys.readouterr().err
    code = main(["train", "pix2pix", "--from-store", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "x")])
    assert code == 2 and "not a query store" in capsys.readouterr().err
