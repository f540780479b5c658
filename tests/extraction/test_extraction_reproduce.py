"""``copymark reproduce extraction-tables``: bad configs are refused before any folder or query.

Each case builds a small valid config over image folders made in the test, breaks one thing,
and runs the real command (``copymark.cli.main``): it must exit 2 with a one-line error naming
the setting and what is wrong, and the run folder must not exist afterwards (nothing written,
no victim served, no query spent). The ONNX cases export real graphs from small torch nets.
Also: the set-level KID bootstrap's unbiased MMD^2 on the identity resample equals the textbook
estimator, and leaves out the pairs of copies a bootstrap draw makes.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from copymark.cli import main as cli_main
from copymark.errors import ConfigError, DataError
from copymark.extraction.reproduce import _mmd2, check_config, load_reproduce_config


def _images(folder: Path, n: int, size: int = 32, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"img_{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _images(root / "photos", 12, seed=1)
    _images(root / "style", 6, seed=2)
    _images(root / "sr" / "HR", 2, 32, seed=3)
    _images(root / "sr" / "LR_x4", 2, 8, seed=3)
    _images(root / "sr" / "LR_x2", 2, 16, seed=3)
    return root


def style_setting(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "name": "style",
        "task": "style",
        "study_table": "2",
        "victim": {"spec": "classical:stylize", "label": "OpenCV stylization"},
        "attacker": "{data}/photos",
        "test": {"dir": "{data}/photos", "start": 0, "stop": 6},
        "benchmark": {"dir": "{data}/photos", "start": 6, "stop": 12},
        "target_style": "{data}/style",
        "image_size": 32,
        "queries": {"budget": 8, "size": 32},
        "surrogate": {
            "procedure": "pix2pix",
            "net_config": {"generator": {"ngf": 8, "num_downs": 5}, "discriminator": {"ndf": 8, "n_layers": 2}},
            "iters": 2,
            "batch_size": 2,
        },
    }
    s.update(over)
    return s


def _write(tmp_path: Path, data: Path, settings: list[dict[str, Any]], **top: Any) -> Path:
    cfg = {"data_root": str(data), "settings": settings, **top}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _refused(tmp_path: Path, capsys, config: Path, *extra: str) -> str:
    run = tmp_path / "run"
    rc = cli_main(["reproduce", "extraction-tables", "--config", str(config), "--run-dir", str(run), *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "error:" in err
    assert not run.exists(), "a refused config must write nothing"
    return " ".join(err.split())


def test_valid_config_passes_every_check(data):
    cfg = load_reproduce_config(_write(data.parent, data, [style_setting()]))
    (rs,) = check_config(cfg, data)
    assert [p.name for p in rs.sets["test"].files] == [f"img_{i:03d}.png" for i in range(6)]
    assert rs.sets["target_style"].label == "style"


def test_unknown_key_names_it(tmp_path, data, capsys):
    bad = style_setting(queries={"budget": 8, "size": 32, "strategey": "random"})
    err = _refused(tmp_path, capsys, _write(tmp_path, data, [bad]))
    assert "strategey" in err


def test_missing_folder_names_setting_role_and_path(tmp_path, data, capsys):
    err = _refused(tmp_path, capsys, _write(tmp_path, data, [style_setting(benchmark="{data}/no_such_folder")]))
    assert "'style'" in err and "benchmark set" in err and "no_such_folder" in err and "no such folder" in err


def test_style_setting_without_target_style_set(tmp_path, data, capsys):
    bad = style_setting()
    del bad["target_style"]
    err = _refused(tmp_path, capsys, _write(tmp_path, data, [bad]))
    assert "target_style" in err and '"tables": ["B"]' in err
    # table B alone needs no target-style set
    ok = style_setting(tables=["B"])
    del ok["target_style"]
    check_config(load_reproduce_config(_write(tmp_path, data, [ok])), data)


def test_slice_outside_the_folder(tmp_path, data, capsys):
    err = _refused(tmp_path, capsys, _write(tmp_path, data, [style_setting(test={"dir": "{data}/photos", "stop": 40})]))
    assert "slice [0:40] is outside its 12 images" in err


def test_sr_setting_needs_hr_and_lr_folders_and_a_matching_scale(tmp_path, data):
    sr = style_setting(
        name="sr",
        task="sr",
        study_table="4",
        victim={"spec": "classical:bicubic_x4", "label": "bicubic"},
        test="{data}/sr",
        benchmark="{data}/photos",
        queries={"budget": 4, "size": 8},
        surrogate={"procedure": "srresnet", "net_config": {"generator": {"n_blocks": 1, "nf": 8}}, "iters": 2},
    )
    del sr["target_style"], sr["image_size"]
    with pytest.raises(DataError, match=r"needs HR/ and LR_x4/"):
        check_config(load_reproduce_config(_write(tmp_path, data, [sr])), data)
    sr["benchmark"] = "{data}/sr"
    check_config(load_reproduce_config(_write(tmp_path, data, [sr])), data)
    with pytest.raises(ConfigError, match=r"upscales x4, the setting says scale 2"):
        check_config(load_reproduce_config(_write(tmp_path, data, [sr | {"scale": 2}])), data)
    with pytest.raises(ConfigError, match=r"it is not an SR model"):
        check_config(load_reproduce_config(_write(tmp_path, data, [sr | {"victim": style_setting()["victim"]}])), data)


def test_only_an_unknown_setting(tmp_path, data, capsys):
    err = _refused(tmp_path, capsys, _write(tmp_path, data, [style_setting()]), "--only", "nope")
    assert "--only nope: no such setting" in err and "settings: style" in err


def _export(net: nn.Module, example: tuple[torch.Tensor, ...], path: Path, inputs: tuple[str, ...]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), example, str(path), dynamo=False, input_names=list(inputs), opset_version=17)
    return path


class _Classifier(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) @ torch.ones(3, 10)


class _TwoInputs(nn.Module):
    def forward(self, x: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        return x * strength


def test_onnx_victim_that_answers_no_image(tmp_path, data, capsys):
    graph = _export(_Classifier(), (torch.rand(1, 3, 32, 32),), tmp_path / "classifier.onnx", ("image",))
    victim = {"spec": f"onnx:{graph}", "label": "a classifier"}
    err = _refused(tmp_path, capsys, _write(tmp_path, data, [style_setting(victim=victim)]))
    assert "setting 'style': victim:" in err and "classifier.onnx" in err


def test_onnx_victim_with_an_input_the_options_do_not_describe(tmp_path, data, capsys):
    graph = _export(_TwoInputs(), (torch.rand(1, 3, 32, 32), torch.rand(1)), tmp_path / "two.onnx", ("x", "strength"))
    victim = {"spec": f"onnx:{graph}", "label": "two inputs"}
    err = _refused(tmp_path, capsys, _write(tmp_path, data, [style_setting(victim=victim)]))
    assert "setting 'style': victim:" in err and "strength" in err


def test_missing_onnx_file(tmp_path, data, capsys):
    victim = {"spec": "onnx:{data}/nothing.onnx", "label": "gone"}
    err = _refused(tmp_path, capsys, _write(tmp_path, data, [style_setting(victim=victim)]))
    assert "ONNX victim" in err and "nothing.onnx: no such file" in err


def _mmd2_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the KID polynomial kernel (x.y / d + 1)^3, in float64, by its definition."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / d + 1.0) ** 3

    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * k(x, y).mean())


def test_set_level_kid_is_the_unbiased_mmd_and_skips_copies():
    from copymark.extraction.reproduce import _kid_kernels

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 16)), rng.normal(0.3, 1.0, size=(7, 16))
    kern = _kid_kernels(x, y)
    ident = _mmd2(kern, np.arange(9), np.arange(7))
    assert ident == pytest.approx(_mmd2_reference(x, y), rel=1e-9, abs=1e-12)
    # a bootstrap draw with a repeated image: the copies' pair is not a "perfect match"
    ip, ir = np.array([0, 0, 1, 2]), np.array([3, 4, 5])
    kxx, kyy, kxy = kern
    keep_x = [(i, j) for a, i in enumerate(ip) for b, j in enumerate(ip) if a != b and i != j]
    keep_y = [(i, j) for a, i in enumerate(ir) for b, j in enumerate(ir) if a != b and i != j]
    expected = (
        np.mean([kxx[i, j] for i, j in keep_x])
        + np.mean([kyy[i, j] for i, j in keep_y])
        - 2 * kxy[np.ix_(ip, ir)].mean()
    )
    assert _mmd2(kern, ip, ir) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", ["tiny", "cpu", "gpu"], ids=["tiny-config", "cpu-config", "study-scale-config"])
def test_shipped_configs_parse_and_their_surrogates_fit(name):
    from copymark.extraction.reproduce import _check_surrogate

    cfg = load_reproduce_config(Path(__file__).resolve().parents[2] / "configs" / "reproduce" / f"{name}.json")
    for s in cfg.settings:
        _check_surrogate(s)
    assert {s.task for s in cfg.settings} == {"style", "sr"}


def test_a_setting_run_by_another_process_is_refused_and_results_are_collected_per_setting(tmp_path):
    from copymark.errors import CopymarkError
    from copymark.extraction.reproduce import collected_results, setting_lock

    folder = tmp_path / "settings" / "a"
    with setting_lock(folder):
        with pytest.raises(CopymarkError, match=r"setting 'a' is being run by another process"):
            with setting_lock(folder):
                pass  # pragma: no cover - refused
    with setting_lock(folder):  # released: the next run takes it
        (folder / "result.json").write_text(json.dumps({"name": "a"}))
    (tmp_path / "settings" / "b").mkdir()  # started, not finished: no result yet
    assert collected_results(tmp_path, ["b", "a", "c"]) == {"a": {"name": "a"}}


def test_style_goals_read_a_c_and_the_paired_difference():
    from copymark.extraction.reproduce import goals

    cells = {
        "A": {"swd": {"value": 86.8, "ci95": [84.6, 108.8]}, "kid": None},
        "C": {"swd": {"value": 106.0, "ci95": [102.7, 127.8]}, "kid": None},
        "swd_diff": {"C-A": {"value": 19.2, "ci95": [12.0, 25.5]}},
    }
    gain = {"mean": 6.5, "ci95": [6.0, 6.9]}
    metrics = {"sets": {"test": {"baselines": {"identity_vs_victim": {"psnr_rgb": {"paired_gain": gain}}}}}}
    got = {g["goal"]: (g["met"], g["detail"]) for g in goals("style", {"test": cells}, metrics)}
    assert got["test: C within A's 95% CI (SWD)"] == (True, "C 106 in A's CI [84.6, 108.8]")
    assert got["test: paired C - A (SWD) CI contains 0 (stricter check)"] == (False, "C - A = +19.2, CI [+12, +25.5]")
    assert got["test: C within A's 95% CI (KID)"] == (None, "not computed: pass --inception-weights")
    assert got["test: B's paired gain over identity (psnr_rgb) > 0"][0] is True
    assert got["test: B's paired gain over untrained (psnr_rgb) > 0"] == (None, "not measured")


def test_started_settings_are_fixed_new_and_unstarted_ones_may_change(tmp_path, data):
    """The run folder records the common part of the config; each setting records its own when it
    starts. A started setting with another config is refused naming it and the key; a setting
    that has not started (or a new one) may change."""
    from copymark.errors import ConfigError
    from copymark.extraction.reproduce import (
        SETTING_FILE,
        SETTINGS_DIR,
        check_started_settings,
        recorded_config,
        setting_record,
    )

    run = tmp_path / "run"
    first = check_config(load_reproduce_config(_write(tmp_path, data, [style_setting()])), data)
    (run / SETTINGS_DIR / "style").mkdir(parents=True)
    (run / SETTINGS_DIR / "style" / SETTING_FILE).write_text(json.dumps(setting_record(first[0])))
    check_started_settings(run, first)  # the same config: fine
    grown = [style_setting(), style_setting(name="other", queries={"budget": 4, "size": 32})]
    cfg = load_reproduce_config(_write(tmp_path, data, grown))
    check_started_settings(run, check_config(cfg, data))  # a new setting: fine
    assert "settings" not in json.dumps(recorded_config(cfg, data)).replace('"settings": "setting.json"', "")
    changed = check_config(load_reproduce_config(_write(tmp_path, data, [style_setting(image_size=64)])), data)
    with pytest.raises(ConfigError, match=r"setting 'style' .* started with another config \(differs in: image_size\)"):
        check_started_settings(run, changed)
