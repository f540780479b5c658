"""Codec interface: shapes, value ranges, exact LSB round trip, bad inputs, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from copymark.errors import ImageError, WeightsError
from copymark.images import to_uint8
from copymark.nets.stego import En2D, En2DConfig, GglNet, GglNetConfig
from copymark.stego.codecs import (
    LSBCodec,
    LSBCodecConfig,
    NeuralCodec,
    build_codec,
    load_codec,
    save_codec,
)

TINY = {"en2d": En2DConfig(width=4), "gglnet": GglNetConfig(filters=4, prep_layers=1, hide_layers=1, reveal_layers=1)}


def _pair(n=2, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g), torch.rand(n, 3, h, w, generator=g)


@pytest.mark.parametrize(
    "codec", [LSBCodec(), NeuralCodec(TINY["en2d"]), NeuralCodec(TINY["gglnet"])], ids=lambda c: c.kind
)
@pytest.mark.parametrize("hw", [(32, 32), (40, 64), (256, 256)])
def test_shapes_and_ranges(codec, hw):
    n = 1 if hw[0] == 256 else 2
    cover, secret = _pair(n, *hw)
    stego = codec.hide(cover, secret)
    assert stego.shape == cover.shape and stego.dtype == torch.float32
    assert float(stego.min()) >= 0.0 and float(stego.max()) <= 1.0
    revealed = codec.reveal(stego)
    assert revealed.shape == secret.shape and revealed.dtype == torch.float32
    assert float(revealed.min()) >= 0.0 and float(revealed.max()) <= 1.0


def test_neural_codec_is_deterministic_in_eval():
    """GglNet adds noise only in training: hide/reveal give the same output twice."""
    codec = NeuralCodec(TINY["gglnet"])
    cover, secret = _pair()
    codec.net.train()  # hide() must switch to eval itself
    a = codec.reveal(codec.hide(cover, secret))
    codec.net.train()
    b = codec.reveal(codec.hide(cover, secret))
    assert torch.equal(a, b)


def test_gglnet_training_noise_only_in_train_mode():
    torch.manual_seed(0)
    net = GglNet(filters=4, prep_layers=1, hide_layers=1, reveal_layers=1, noise_std=0.1).train()
    cover, secret = _pair()
    _, r1 = net(cover, secret)
    _, r2 = net(cover, secret)
    assert not torch.equal(r1, r2)
    net.eval()
    _, r3 = net(cover, secret)
    _, r4 = net(cover, secret)
    assert torch.equal(r3, r4)


@pytest.mark.parametrize("bits", [1, 2, 4, 7])
def test_lsb_round_trips_top_bits_exactly(bits):
    cover, secret = _pair(3, 48, 32, seed=bits)
    codec = LSBCodec(LSBCodecConfig(bits=bits))
    stego = codec.hide(cover, secret)
    c8, s8, st8 = to_uint8(cover), to_uint8(secret), to_uint8(stego)
    # the stego keeps the cover's high bits and carries the secret's top bits in its low bits
    assert torch.equal(st8 >> bits, c8 >> bits)
    assert torch.equal(st8 & ((1 << bits) - 1), s8 >> (8 - bits))
    r8 = to_uint8(codec.reveal(stego))
    assert torch.equal(r8 >> (8 - bits), s8 >> (8 - bits))
    # the error per pixel is bounded by the lost low bits
    assert int((r8.int() - s8.int()).abs().max()) <= 2 ** (8 - bits - 1)
    assert int((st8.int() - c8.int()).abs().max()) <= 2**bits - 1


def test_lsb_default_is_four_bits_and_psnr_plausible():
    """k=4: the stego error is < 16 levels, so the cover PSNR is at least ~24 dB (bound: 20 log10(255/15))."""
    from skimage.metrics import peak_signal_noise_ratio

    cover, secret = _pair(1, 64, 64)
    codec = LSBCodec()
    assert codec.bits == 4
    stego = codec.hide(cover, secret)
    p = peak_signal_noise_ratio(to_uint8(cover).numpy(), to_uint8(stego).numpy(), data_range=255)
    assert p > 20 * torch.log10(torch.tensor(255 / 15)).item()


@pytest.mark.parametrize(
    "cover_shape,secret_shape,match",
    [
        ((1, 3, 32, 32), (1, 3, 64, 64), "differ in shape"),
        ((2, 3, 32, 32), (1, 3, 32, 32), "differ in shape"),
        ((1, 3, 36, 36), (1, 3, 36, 36), "multiples of 8"),
        ((1, 3, 24, 24), (1, 3, 24, 24), "multiples of 8 from 32"),
        ((1, 3, 264, 264), (1, 3, 264, 264), "to 256"),
        ((1, 1, 32, 32), (1, 1, 32, 32), "grayscale"),
        ((1, 4, 32, 32), (1, 4, 32, 32), "3 \\(RGB\\) channels"),
        ((3, 32, 32), (3, 32, 32), "N x 3 x H x W"),
    ],
)
@pytest.mark.parametrize("codec", [LSBCodec(), NeuralCodec(TINY["en2d"])], ids=lambda c: c.kind)
def test_bad_inputs_raise_image_error(codec, cover_shape, secret_shape, match):
    with pytest.raises(ImageError, match=match) as info:
        codec.hide(torch.rand(cover_shape), torch.rand(secret_shape))
    if "grayscale" in match:
        assert info.value.hint and "expand" in info.value.hint


def test_bad_values_and_types():
    codec = LSBCodec()
    cover, secret = _pair()
    with pytest.raises(ImageError, match="in \\[0, 1\\]"):
        codec.hide(cover * 255, secret)
    with pytest.raises(ImageError, match="float"):
        codec.hide(to_uint8(cover), secret)
    nan = cover.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ImageError):
        codec.hide(nan, secret)
    with pytest.raises(ImageError, match="grayscale"):
        codec.reveal(torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize("kind", ["en2d", "gglnet", "lsb"])
def test_checkpoint_round_trip(tmp_path, kind):
    codec = build_codec(TINY[kind]) if kind != "lsb" else LSBCodec(LSBCodecConfig(bits=3))
    save_codec(tmp_path / "ckpt", codec, {"note": "test"})
    loaded = load_codec(tmp_path / "ckpt", expected_kind=kind)
    assert loaded.kind == kind and loaded.config == codec.config
    cover, secret = _pair()
    assert torch.equal(loaded.reveal(loaded.hide(cover, secret)), codec.reveal(codec.hide(cover, secret)))


def test_loading_another_kind_is_weights_error(tmp_path):
    save_codec(tmp_path / "e", NeuralCodec(TINY["en2d"]))
    with pytest.raises(WeightsError, match="not a 'gglnet' codec"):
        load_codec(tmp_path / "e", expected_kind="gglnet")
    # a steganalyzer checkpoint is not a codec at all
    from copymark.nets.steganalysis import XuNetConfig, build_steganalyzer
    from copymark.stego.detect import save_steganalyzer

    cfg = XuNetConfig(width=2)
    save_steganalyzer(tmp_path / "x", build_steganalyzer(cfg), cfg)
    with pytest.raises(WeightsError, match="not a steganography codec"):
        load_codec(tmp_path / "x")
    # same kind, other width: weights do not fit
    save_codec(tmp_path / "w", NeuralCodec(En2DConfig(width=4)))
    meta = json.loads((tmp_path / "w" / "config.json").read_text())
    meta["config"]["width"] = 6
    (tmp_path / "w" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="weights do not"):
        load_codec(tmp_path / "w")


def test_en2d_paper_layout():
    """Host/guest branches with four fusions, decoder 16,16,8,8,3,3 filters at width 16."""
    net = En2D(width=16)
    host_in = [m.in_channels for m in net.encoder.host]
    assert host_in == [3, 32, 16, 32, 16, 32, 16]
    assert net.encoder.fuse[0].in_channels == 32
    dec = [m.out_channels for m in net.decoder.body if isinstance(m, torch.nn.Conv2d)]
    assert dec == [16, 16, 8, 8, 3, 3, 3]


def test_gglnet_paper_layout():
    net = GglNet()
    first = net.prep[0]
    assert [c.kernel_size for c in (first.c3, first.c4, first.c5)] == [(3, 3), (4, 4), (5, 5)]
    assert first.c3.out_channels == first.c4.out_channels == first.c5.out_channels == 50
    assert len(net.prep) == 2 and len(net.hide[0]) == 5 and len(net.reveal[0]) == 5
    assert net.hide[0][0].c3.in_channels == 3 + 150


def test_residual_codec_checkpoint_round_trip_and_old_configs_load(tmp_path):
    """The new En2D options travel in the checkpoint config; a checkpoint written before they
    existed (no such keys in config.json) loads as the paper's net."""
    codec = NeuralCodec(En2DConfig(width=4, decoder_width=6, residual_scale=0.5))
    save_codec(tmp_path / "r", codec)
    loaded = load_codec(tmp_path / "r", expected_kind="en2d")
    assert loaded.config == codec.config
    cover, secret = _pair()
    assert torch.equal(loaded.reveal(loaded.hide(cover, secret)), codec.reveal(codec.hide(cover, secret)))
    save_codec(tmp_path / "old", NeuralCodec(En2DConfig(width=4)))
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("decoder_width", "residual_scale"):
        del meta["config"][key]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    old = load_codec(tmp_path / "old")
    assert old.config == En2DConfig(width=4) and old.net.encoder.residual_scale is None
