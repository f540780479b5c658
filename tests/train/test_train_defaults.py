"""Defaults that fit the input: the UNet depth follows --size (unet_128 / unet_256), and
`copymark nets show KIND` lists every --net-config key with a default the commands accept."""

from __future__ import annotations

import json

import pytest

from copymark.cli import main
from copymark.errors import ConfigError
from copymark.nets.build import NET_KINDS, parse_net_config
from copymark.train import api
from copymark.train.describe import all_kinds, config_keys, show
from copymark.train.pix2pix import unet_depth_for_size


@pytest.mark.parametrize("size,depth", [(32, 5), (64, 6), (96, 5), (128, 7), (192, 6), (256, 8), (384, 7), (512, 8)])
def test_unet_depth_follows_the_size(size, depth):
    assert unet_depth_for_size(size) == depth
    assert size % 2**depth == 0 and (depth == 8 or size % 2 ** (depth + 1))  # the deepest that fits, at most 8
    cfg = api.make_train_config("pix2pix", "data", size=size)
    assert cfg.procedure.generator.num_downs == depth


def test_an_explicit_depth_wins_and_a_size_that_fits_no_unet_is_refused():
    cfg = api.make_train_config("pix2pix", "data", {"generator": {"num_downs": 5, "ngf": 8}}, size=128)
    assert cfg.procedure.generator.num_downs == 5 and cfg.procedure.generator.ngf == 8
    with pytest.raises(ConfigError, match="--size 48 does not fit a UNet generator: it must be a multiple of 32"):
        api.make_train_config("pix2pix", "data", size=48)
    assert api.make_train_config("ugatit", "data", size=64).procedure.generator.img_size == 64


def test_the_readme_pix2pix_from_store_at_128_px_trains(tmp_path, photos, capsys, helpers):
    """The README's `copymark train pix2pix --from-store store/ --size 128 ...` (tiny nets and iterations)
    failed with "--size 128 is not a multiple of the generator's stride (256)"."""
    import torch.nn.functional as F

    from copymark.client.store import QueryStore
    from copymark.images import encode_png

    store = QueryStore(tmp_path / "store")
    for c in helpers.crops(photos["coffee"], 64, 40)[:2]:  # the samples are shrunk to 80 px: upscale to 128
        x = F.interpolate(c[None], size=(128, 128), mode="bilinear", align_corners=False)[0].clamp(0, 1)
        sha = store.add_input(encode_png(x), "victim-1")
        store.record_answer(sha, "victim-1", encode_png(helpers.target_of(x)))
    store.set_meta("campaign", json.dumps({"scale": 1, "task": "style"}))
    store.close()
    run = tmp_path / "runs" / "surrogate"
    net = '{"generator": {"ngf": 4}, "discriminator": {"ndf": 4, "n_layers": 2}}'
    assert main(["train", "pix2pix", "--from-store", str(tmp_path / "store"), "--run-dir", str(run), "--size", "128",
                 "--iters", "1", "--batch-size", "2", "--net-config", net]) == 0  # fmt: skip
    assert json.loads((run / "config.json").read_text())["procedure"]["generator"]["num_downs"] == 7
    assert "train pix2pix 1/1 (100%)" in capsys.readouterr().err  # plain progress lines when not a terminal


def _nested(keys):
    out: dict = {}
    for k in keys:
        if k.default == "(--size)":
            continue
        *path, last = k.key.split(".")
        d = out
        for p in path:
            d = d.setdefault(p, {})
        d[last] = k.default
    return out


@pytest.mark.parametrize("kind", all_kinds())
def test_nets_show_lists_every_key_with_a_default_the_commands_accept(kind):
    s = show(kind)
    if kind in api.PROCEDURE_KINDS:
        default = api.make_train_config(kind, "data", size=256).procedure
        listed = {k.key for k in s.keys}
        every = {k.key for k in config_keys(default)}
        assert listed == {k for k in every if k != "kind" and not k.endswith(".kind")}
        # feeding every listed default back through --net-config gives the default config
        assert api.make_train_config(kind, "data", _nested(s.keys), size=256).procedure == default
    else:
        assert kind in NET_KINDS
        assert parse_net_config({"kind": kind, **_nested(s.keys)}) == parse_net_config({"kind": kind})
    assert s.command and s.what


def test_nets_show_cli(capsys):
    assert main(["nets", "show", "pix2pix"]) == 0
    out = capsys.readouterr().out
    assert "generator.num_downs" in out and "(--size)" in out and "copymark train pix2pix --net-config" in out
    assert "lambda_l1" in out and "100.0" in out
    assert main(["nets", "show", "en2d", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["command"].startswith("copymark stego train --codec en2d") and js["keys"][0]["key"] == "width"
    assert main(["nets", "show"]) == 0
    listing = capsys.readouterr().out
    assert all(k in listing for k in all_kinds())
    assert main(["nets", "show", "bogus"]) == 2
    assert "unknown kind 'bogus'" in capsys.readouterr().err
    assert main(["train", "--help"]) == 0
    assert "copymark nets show KIND" in capsys.readouterr().out
