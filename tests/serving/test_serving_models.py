"""Served image models (victims): classical filters checked against OpenCV / images.py, learned models via translate."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from copymark.errors import ConfigError, CopymarkError
from copymark.images import from_uint8, quantize, to_uint8, upscale_bicubic
from copymark.serving.models import VALID_SPECS, load_model


def _photo(h: int = 48, w: int = 64) -> torch.Tensor:
    from copymark.data.samples import samples

    x = samples(["chelsea"], max_side=96)[0].image
    return x[:, :h, :w].unsqueeze(0).contiguous()


def test_stylize_equals_opencv_on_8bit_input_and_is_deterministic():
    x = _photo()
    v = load_model("classical:stylize?sigma_s=20&sigma_r=0.3")
    assert (v.task, v.scale, v.name) == ("style", 1, "stylize")
    y = v(x)
    rgb = to_uint8(x[0]).permute(1, 2, 0).numpy()
    ref = cv2.cvtColor(
        cv2.stylization(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), sigma_s=20, sigma_r=0.3), cv2.COLOR_BGR2RGB
    )
    assert np.array_equal(to_uint8(y[0]).permute(1, 2, 0).numpy(), ref)
    assert torch.equal(v(x), y)
    assert (y - quantize(x)).abs().mean() > 0.01  # it really changes the image


def test_edge_preserving_and_cartoon():
    x = _photo()
    ep = load_model("classical:edge_preserving?sigma_s=30&sigma_r=0.2&flags=2")
    rgb = to_uint8(x[0]).permute(1, 2, 0).numpy()
    ref = cv2.edgePreservingFilter(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), flags=2, sigma_s=30, sigma_r=0.2)
    assert np.array_equal(to_uint8(ep(x)[0]).permute(1, 2, 0).numpy(), cv2.cvtColor(ref, cv2.COLOR_BGR2RGB))
    cart = load_model("classical:cartoon?levels=4")
    y = to_uint8(cart(x)[0]).permute(1, 2, 0).numpy()
    # colours are quantised to 4 levels (bin centres 32, 96, 160, 224) except black edge pixels
    vals = set(np.unique(y).tolist())
    assert vals <= {0, 32, 96, 160, 224}
    black = (y == 0).all(axis=2).mean()
    assert 0.01 < black < 0.6  # some edges drawn, not everything
    assert torch.equal(cart(x), cart(x))


def test_bicubic_x4_is_images_upscale_bicubic():
    x = _photo(16, 20)
    v = load_model("classical:bicubic_x4")
    assert (v.task, v.scale) == ("sr", 4)
    y = v(x)
    assert y.shape == (1, 3, 64, 80)
    assert torch.allclose(y, upscale_bicubic(quantize(x), 4), atol=0)


def test_bicubic_x4_sharpen_is_an_unsharp_mask_of_bicubic():
    import cv2
    import numpy as np

    x = _photo(16, 20)
    plain = load_model("classical:bicubic_x4")(x)
    sharp = load_model("classical:bicubic_x4?sharpen=1")(x)
    assert sharp.shape == plain.shape and not torch.equal(sharp, plain)
    # reference: OpenCV's Gaussian blur (sigma 1.5, 3-sigma kernel, reflect-101 border)
    img = plain[0].permute(1, 2, 0).numpy().astype(np.float64)
    ref = np.clip(img + (img - cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT_101)), 0, 1)
    assert np.abs(sharp[0].permute(1, 2, 0).numpy() - ref).max() < 1e-5
    assert load_model("classical:bicubic_x4?sharpen=1").id != load_model("classical:bicubic_x4").id


def test_ids_are_stable_and_param_sensitive():
    a = load_model("classical:stylize")
    b = load_model("classical:stylize?sigma_r=0.3&sigma_s=20")
    c = load_model("classical:stylize?sigma_s=21")
    assert a.id == b.id != c.id
    assert len(a.id) == 16


@pytest.mark.parametrize(
    "spec, match",
    [
        ("classical:sharpen", "unknown classical victim 'sharpen'"),
        ("classical:stylize?sigma=3", "unknown parameter 'sigma'"),
        ("classical:stylize?sigma_s=abc", "not a float"),
        ("classical:stylize?sigma_r=5", "outside"),
        ("classical:bicubic_x4?method=nearest", "method must be"),
        ("ftp://somewhere/model", "unknown victim spec scheme"),
        ("", "empty victim spec"),
    ],
)
def test_bad_specs_name_the_problem_and_list_valid_ones(spec, match):
    with pytest.raises(ConfigError, match=match) as ei:
        load_model(spec)
    if "unknown classical" in match or "scheme" in match or "empty" in match:
        assert "classical:stylize" in (ei.value.hint or "")


def test_missing_path_spec(tmp_path):
    with pytest.raises(CopymarkError, match="no such file"):
        load_model(str(tmp_path / "nothing.pt"))
    assert any("TorchScript" in s for s in VALID_SPECS)


class _TinySR(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = torch.nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.shuffle(self.conv(x)))


def test_torchscript_victim(tmp_path):
    net, p = _scripted(tmp_path)
    v = load_model(str(p))
    assert (v.task, v.scale, v.name) == ("sr", 2, "tiny_sr")
    x = _photo(20, 24)
    y = v(x)
    with torch.no_grad():
        ref = net(x)
    assert y.shape == (1, 3, 40, 48)
    assert torch.allclose(y, ref, atol=1e-6)
    assert torch.equal(v(x), y)
    assert load_model(str(p)).id == v.id
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(CopymarkError, match="TorchScript"):
        load_model(str(tmp_path / "junk.pt"))


def test_checkpoint_folder_victim(tmp_path):
    build = pytest.importorskip("copymark.nets.build")
    cfg = build.parse_net_config({"kind": "unet", "ngf": 4, "num_downs": 5})
    net = build.build_net(cfg).eval()
    build.save_net(tmp_path / "ckpt", net, cfg)
    v = load_model(str(tmp_path / "ckpt"))
    assert (v.task, v.scale) == ("style", 1)
    x = from_uint8(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    y = v(x)
    assert y.shape == x.shape and torch.equal(v(x), y)


def _scripted(tmp_path) -> tuple[torch.nn.Module, object]:
    import warnings

    net = _TinySR().eval()
    p = tmp_path / "tiny_sr.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation: the exporter's concern
        torch.jit.script(net).save(str(p))
    return net, p


def _member_offset(path, suffix: str) -> int:
    """Where the bytes of the archive member ending in ``suffix`` start."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    data = path.read_bytes()
    name_len, extra_len = (
        int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little"),
        int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little"),
    )
    return info.header_offset + 30 + name_len + extra_len


def test_tampered_torchscript_archives_are_refused_with_what_is_wrong(tmp_path):
    """torch.jit.load itself loads an archive with flipped weight bytes silently, and says only
    "PytorchStreamReader failed ..." for a truncated one."""
    _, p = _scripted(tmp_path)
    data = bytearray(p.read_bytes())
    flipped = bytearray(data)
    flipped[_member_offset(p, "data/0") + 8] ^= 0xFF  # one weight byte
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    with pytest.raises(CopymarkError, match=r"damaged TorchScript archive: member '.*data/0'.*CRC") as ei:
        load_model(str(tmp_path / "flipped.pt"))
    assert "trusted source" in (ei.value.hint or "")
    (tmp_path / "truncated.pt").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CopymarkError, match="not a TorchScript archive.*truncated, or not a zip"):
        load_model(str(tmp_path / "truncated.pt"))
    code = bytearray(data)
    # the test net's own code file (torch mangles the names of library modules scripted earlier in the process)
    code[_member_offset(p, "test_serving_models.py") + 2] ^= 0x01
    (tmp_path / "code.pt").write_bytes(bytes(code))
    with pytest.raises(CopymarkError, match="damaged TorchScript archive: member '.*test_serving_models.py'"):
        load_model(str(tmp_path / "code.pt"))
    torch.save(_TinySR().state_dict(), tmp_path / "state_dict.pt")
    with pytest.raises(CopymarkError, match="a torch.save archive .* not a TorchScript program") as ei:
        load_model(str(tmp_path / "state_dict.pt"))
    assert "python:" in (ei.value.hint or "")


def test_torchscript_load_shows_no_deprecation_warning(tmp_path):
    import warnings

    net, p = _scripted(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = load_model(str(p))
        y = v(_photo(8, 8))
    assert y.shape == (1, 3, 16, 16)
    assert not [w for w in caught if "jit" in str(w.message)], [str(w.message) for w in caught]
