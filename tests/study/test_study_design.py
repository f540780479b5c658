"""Study creation and each participant's seeded plan."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from copymark.errors import ConfigError, DataError, ImageError
from copymark.study.design import create_study, image_index, load_study, participant_plan


def write_images(folder, stems, seed, size=24, suffix=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for s in stems:
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{s}{suffix}")


def test_create_study_blinds_and_reencodes(study_dir, image_folders):
    cfg = load_study(study_dir)
    assert len(cfg.inputs) == 12 and len(cfg.examples) == 2 and len(cfg.attention) == 2
    files = image_index(cfg)
    assert len(files) == 12 * 2 + 2 + 2
    for item_id, f in files.items():
        p = study_dir / f
        assert p.is_file() and p.suffix == ".png"
        assert "victim" not in f and "surrogate" not in f and "img" not in item_id  # URLs/files reveal nothing
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size == (24, 24)
    # the surrogate came from a JPEG: re-encoded to PNG, pixels as decoded
    inp = cfg.inputs[0]
    src = np.asarray(Image.open(image_folders["surrogate"] / f"{inp.input_id}.jpg").convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(study_dir / inp.surrogate.file)), src)
    raw = json.loads((study_dir / "study.json").read_text())
    assert raw["per_participant"] == 6 and raw["seed"] == 3


def test_plan_is_seeded_balanced_and_never_shows_both_outputs(study_dir):
    cfg = load_study(study_dir)
    plans = [participant_plan(cfg, k) for k in range(200)]
    assert participant_plan(cfg, 5) == plans[5]  # deterministic
    assert plans[0] != plans[1]
    per_input_model = Counter()
    for plan in plans:
        ratings = [p for p in plan if p.model != "attention"]
        assert len(ratings) == 6 and len(plan) == 7
        assert Counter(p.model for p in ratings) == {"victim": 3, "surrogate": 3}
        inputs = [p.input_id for p in ratings]
        assert len(set(inputs)) == len(inputs)  # never both outputs of one input
        att = [p for p in plan if p.model == "attention"]
        assert len(att) == 1 and att[0].position >= 1 and 1 <= att[0].expected <= 5
        assert [p.position for p in plan] == list(range(7))
        per_input_model.update((p.input_id, p.model) for p in ratings)
    # over many participants every input is shown through both models, roughly evenly
    assert len(per_input_model) == 24
    assert min(per_input_model.values()) > 0.5 * (200 * 6 / 24)
    # victim/surrogate order varies: both models appear first
    assert {plan[0].model for plan in plans} == {"victim", "surrogate"}


def test_create_study_with_inputs(tmp_path, image_folders):
    cfg = create_study(
        image_folders["victim"],
        image_folders["surrogate"],
        image_folders["examples"],
        tmp_path / "s2",
        per_participant=4,
        input_dir=image_folders["inputs"],
    )
    assert all(i.original is not None for i in cfg.inputs)


def test_create_study_bad_input(tmp_path, image_folders):
    v, s, e = image_folders["victim"], image_folders["surrogate"], image_folders["examples"]
    with pytest.raises(ConfigError, match="even"):
        create_study(v, s, e, tmp_path / "a", per_participant=5)
    with pytest.raises(ConfigError, match="distinct inputs"):
        create_study(v, s, e, tmp_path / "b", per_participant=14)
    write_images(tmp_path / "s_extra", [f"img{i:02d}" for i in range(11)] + ["other"], 5)
    with pytest.raises(DataError, match="do not pair up"):
        create_study(v, tmp_path / "s_extra", e, tmp_path / "c")
    with pytest.raises(DataError, match="not found"):
        create_study(tmp_path / "nope", s, e, tmp_path / "d")
    with pytest.raises(DataError, match="style examples"):
        create_study(v, s, tmp_path / "nope", tmp_path / "e", per_participant=4)
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "x.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        create_study(v, s, e, tmp_path / "f", per_participant=4)
    bad = tmp_path / "bad"
    write_images(bad, [f"img{i:02d}" for i in range(12)], 6)
    (bad / "img03.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="img03"):
        create_study(bad, s, e, tmp_path / "g", per_participant=4)
