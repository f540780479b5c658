"""copymark.config: strict pydantic configs; a misspelled key is an error naming it."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import ValidationError

from copymark.config import StrictModel, load_config, parse_config
from copymark.errors import ConfigError


class Optim(StrictModel):
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)


class TrainConfig(StrictModel):
    kind: Literal["pix2pix", "cyclegan"]
    epochs: int = 10
    optim: Optim = Optim()


def test_valid_config_fills_defaults():
    c = parse_config(TrainConfig, {"kind": "pix2pix", "optim": {"lr": 1e-3}})
    assert c.epochs == 10 and c.optim.lr == 1e-3 and c.optim.betas == (0.5, 0.999)


def test_misspelled_key_names_it():
    with pytest.raises(ConfigError) as e:
        parse_config(TrainConfig, {"kind": "pix2pix", "epoch": 5})
    assert "unknown key 'epoch'" in str(e.value)
    assert "epochs" in e.value.hint  # the valid keys are listed


def test_misspelled_nested_key_names_its_path():
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.lrate'"):
        parse_config(TrainConfig, {"kind": "cyclegan", "optim": {"lrate": 0.1}})


def test_wrong_value_and_unknown_kind_name_the_field():
    with pytest.raises(ConfigError, match="'epochs'"):
        parse_config(TrainConfig, {"kind": "pix2pix", "epochs": "many"})
    with pytest.raises(ConfigError, match="'kind'"):
        parse_config(TrainConfig, {"kind": "stargan"})


def test_assignment_is_validated():
    c = parse_config(TrainConfig, {"kind": "pix2pix"})
    with pytest.raises(ValidationError):
        c.epochs = "x"  # type: ignore[assignment]


def test_load_config_file(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"kind": "cyclegan", "epochs": 3}))
    assert load_config(TrainConfig, p).epochs == 3
    p.write_text(json.dumps({"kind": "cyclegan", "epohcs": 3}))
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, p)
    assert str(p) in str(e.value) and "'epohcs'" in str(e.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainConfig, tmp_path / "none.json")
    p.write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(TrainConfig, p)


def test_cli_errors_keep_square_brackets(capsys):
    """An error naming a shape like [n, 3, h, w] is printed as written (not eaten as rich markup)."""
    from copymark.cli import main

    assert main(["metrics", "--pred", "/nonexistent/[n, 3, h, w]", "--ref", "/nonexistent/[x]"]) == 2
    assert "[n, 3, h, w]" in capsys.readouterr().err
