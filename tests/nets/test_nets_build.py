"""nets.build: configs (typos are errors), builder, checkpoint round trip, kind checks."""

from __future__ import annotations

import json

import pytest
import torch

from copymark.errors import ConfigError, WeightsError
from copymark.nets.build import (
    NET_KINDS,
    PatchGANConfig,
    ResnetGenConfig,
    SRResNetConfig,
    UNetConfig,
    build_net,
    load_net,
    parse_net_config,
    save_net,
)

TINY = {
    "unet": ({"kind": "unet", "ngf": 4, "num_downs": 5}, (1, 3, 32, 32)),
    "patchgan": ({"kind": "patchgan", "ndf": 4, "in_channels": 6}, (1, 6, 32, 32)),
    "resnet_gen": ({"kind": "resnet_gen", "ngf": 4, "n_blocks": 2}, (1, 3, 32, 32)),
    "srresnet": ({"kind": "srresnet", "nf": 8, "n_blocks": 2, "scale": 2}, (1, 3, 16, 16)),
    "srgan_disc": ({"kind": "srgan_disc", "ndf": 4, "dense": 8}, (2, 3, 32, 32)),
    "ugatit_gen": ({"kind": "ugatit_gen", "ngf": 4, "n_blocks": 1, "img_size": 32}, (1, 3, 32, 32)),
    "ugatit_disc": ({"kind": "ugatit_disc", "ndf": 2, "n_layers": 5}, (1, 3, 64, 64)),
    "srgan_leftthomas": ({"kind": "srgan_leftthomas"}, (1, 3, 8, 8)),
    "fnst_mobilenet": ({"kind": "fnst_mobilenet"}, (1, 3, 16, 16)),
}
GENERATORS = ["unet", "resnet_gen", "srresnet", "ugatit_gen", "srgan_leftthomas", "fnst_mobilenet"]


def test_typo_in_config_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        parse_net_config({"kind": "unet", "ngff": 8})
    assert "ngff" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_net_config({"kind": "unett"})
    assert "unett" in str(e.value) or "kind" in str(e.value)
    with pytest.raises(ConfigError):
        parse_net_config({"ngf": 8})
    with pytest.raises(ConfigError):
        parse_net_config({"kind": "srresnet", "scale": 3})
    with pytest.raises(ConfigError):
        parse_net_config({"kind": "unet", "num_downs": 4})


def test_parse_picks_the_class_by_kind():
    assert isinstance(parse_net_config({"kind": "unet"}), UNetConfig)
    assert isinstance(parse_net_config({"kind": "patchgan"}), PatchGANConfig)
    assert isinstance(parse_net_config({"kind": "resnet_gen"}), ResnetGenConfig)
    assert isinstance(parse_net_config({"kind": "srresnet"}), SRResNetConfig)
    assert set(NET_KINDS) >= set(TINY)  # (the stego helper adds its kinds too)


@pytest.mark.parametrize("kind", sorted(TINY))
def test_save_load_round_trip(tmp_path, kind):
    raw, shape = TINY[kind]
    cfg = parse_net_config(raw)
    torch.manual_seed(0)
    net = build_net(cfg)
    x = torch.rand(shape)
    net.train()
    net(x)  # update BatchNorm running stats so they differ from their init
    net.eval()
    with torch.no_grad():
        y = net(x)
    save_net(tmp_path / "ck", net, cfg, {"test": kind})
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert meta["config"] == cfg.model_dump()
    assert meta["provenance"] == {"test": kind}
    net2, cfg2 = load_net(tmp_path / "ck", expected_kind=kind)
    assert cfg2 == cfg
    assert not net2.training
    with torch.no_grad():
        assert torch.equal(net2(x), y)


def test_wrong_kind_and_wrong_class_are_weights_errors(tmp_path):
    cfg = parse_net_config(TINY["unet"][0])
    save_net(tmp_path / "u", build_net(cfg), cfg)
    with pytest.raises(WeightsError) as e:
        load_net(tmp_path / "u", expected_kind="srresnet")
    assert "unet" in str(e.value)
    load_net(tmp_path / "u", expected_kind=("srresnet", "unet"))
    with pytest.raises(WeightsError):
        save_net(tmp_path / "x", build_net(cfg), parse_net_config(TINY["srresnet"][0]))


def test_mismatched_weights_are_weights_errors(tmp_path):
    cfg = parse_net_config(TINY["unet"][0])
    save_net(tmp_path / "u", build_net(cfg), cfg)
    meta_path = tmp_path / "u" / "config.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["ngf"] = 8  # config no longer matches the stored weights
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(WeightsError):
        load_net(tmp_path / "u")
    meta["config"]["bogus"] = 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(WeightsError):
        load_net(tmp_path / "u")


@pytest.mark.filterwarnings(
    "ignore:`torch.jit:FutureWarning"
)  # TorchScript is deprecated in torch 2.14 but still the .pt format
@pytest.mark.parametrize("kind", GENERATORS)
def test_generators_script_and_match_eager(tmp_path, kind):
    """Every generator exports with torch.jit.script; the saved file reproduces eager outputs."""
    raw, shape = TINY[kind]
    torch.manual_seed(0)
    net = build_net(parse_net_config(raw)).eval()
    assert isinstance(net.stride, int)
    path = tmp_path / "g.pt"
    torch.jit.script(net).save(str(path))
    ts = torch.jit.load(str(path))
    x = torch.rand(shape)
    with torch.no_grad():
        torch.testing.assert_close(ts(x), net(x), atol=1e-5, rtol=1e-5)
    assert ts.stride == net.stride


def test_save_net_unwraps_parallel_wrappers(tmp_path):
    cfg = parse_net_config(TINY["resnet_gen"][0])
    net = build_net(cfg)
    save_net(tmp_path / "c", torch.nn.DataParallel(net), cfg)  # keys saved without "module."
    net2, _ = load_net(tmp_path / "c")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values()))
