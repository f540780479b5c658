"""copymark.images: decoding by content, mode conversions, YCbCr, crops, bicubic resizing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import require_shared

from copymark import images as im
from copymark.errors import ImageError


def _rand_rgb(h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1).float() / 255


# ----------------------------------------------------------------------------- decoding by content


def test_png_bytes_in_jpg_named_file_decode_exactly(tmp_path):
    arr = _rand_rgb()
    p = tmp_path / "photo.jpg"
    Image.fromarray(arr).save(p, format="PNG")
    x = im.load_image(p)
    assert x.dtype == torch.float32 and x.shape == (3, 12, 10)
    assert torch.equal(x, _chw(arr))  # exact: the PNG decoder was used, not a JPEG one


def test_selfie2anime_trainb_png_named_jpg():
    d = require_shared("selfie2anime", "trainB")
    p = d / "0000.jpg"
    with Image.open(p) as img:
        assert img.format == "PNG"  # the quirk the manifest describes
        ref = np.array(img.convert("RGB"))
    x = im.load_image(p)
    assert x.shape == (3, 256, 256)
    assert torch.equal(x, _chw(ref))


def test_decode_image_bytes_matches_load_image(tmp_path):
    arr = _rand_rgb()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    assert torch.equal(im.decode_image_bytes(buf.getvalue()), _chw(arr))
    with pytest.raises(ImageError, match="upload.bin"):
        im.decode_image_bytes(b"not an image", name="upload.bin")


def test_exif_orientation_6_rotates(tmp_path):
    # 16 x 32 (H x W): left half red, right half blue
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[:, :16, 0] = 255
    arr[:, 16:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(p, format="JPEG", exif=exif, quality=95)
    x = im.load_image(p)
    assert x.shape == (3, 32, 16)  # transposed
    # rotating 90 degrees clockwise puts the left (red) half on top
    assert x[0, :12].mean() > 0.9 and x[2, :12].mean() < 0.1
    assert x[2, -12:].mean() > 0.9 and x[0, -12:].mean() < 0.1


# ----------------------------------------------------------------------------- mode conversions


def test_grayscale_l_to_rgb(tmp_path):
    g = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    x = im.load_image(tmp_path / "g.png")
    assert x.shape == (3, 16, 16)
    for c in range(3):
        assert torch.equal(x[c], torch.from_numpy(g).float() / 255)


def test_la_drops_alpha_keeps_gray(tmp_path):
    g = np.full((4, 4), 77, np.uint8)
    a = np.full((4, 4), 10, np.uint8)
    Image.fromarray(np.stack([g, a], -1), "LA").save(tmp_path / "la.png")
    x = im.load_image(tmp_path / "la.png")
    assert torch.allclose(x, torch.full((3, 4, 4), 77 / 255))


def test_rgba_keeps_colour_channels_as_stored(tmp_path):
    arr = _rand_rgb(6, 5)
    alpha = np.zeros((6, 5, 1), np.uint8)  # fully transparent: colours must still be the stored ones
    Image.fromarray(np.concatenate([arr, alpha], -1), "RGBA").save(tmp_path / "rgba.png")
    assert torch.equal(im.load_image(tmp_path / "rgba.png"), _chw(arr))


def test_palette_to_rgb(tmp_path):
    idx = np.array([[0, 1], [2, 1]], np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (256 * 3 - 9))
    img.save(tmp_path / "p.png")
    x = im.load_image(tmp_path / "p.png")
    assert torch.equal(x[:, 0, 0], torch.tensor([1.0, 0, 0]))
    assert torch.equal(x[:, 0, 1], torch.tensor([0, 1.0, 0]))
    assert torch.allclose(x[:, 1, 0], torch.tensor([10, 20, 30]) / 255)


def test_16bit_png_i16(tmp_path):
    vals = np.array([[0, 100, 40000, 65535]], np.uint16)
    Image.fromarray(vals).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as img:
        assert img.mode == "I;16"
    x = im.load_image(tmp_path / "d.png")
    expected = torch.from_numpy(vals.astype(np.float32) / 65535)
    assert x.shape == (3, 1, 4)
    for c in range(3):
        assert torch.allclose(x[c], expected, atol=1e-7)
    assert x[0, 0, 1].item() < 0.002  # 100/65535, not 100/255: 16-bit range used even for small values


@pytest.mark.parametrize(
    ("fmt", "kwargs", "name"), [("WEBP", {"lossless": True}, "x.webp"), ("BMP", {}, "x.bmp"), ("TIFF", {}, "x.tif")]
)
def test_lossless_format_round_trips(tmp_path, fmt, kwargs, name):
    arr = _rand_rgb(9, 11, seed=3)
    Image.fromarray(arr).save(tmp_path / name, format=fmt, **kwargs)
    assert torch.equal(im.load_image(tmp_path / name), _chw(arr))


def test_save_load_exact_at_8_bits(tmp_path):
    x = torch.rand(3, 7, 9, generator=torch.Generator().manual_seed(0))
    p = im.save_image(x, tmp_path / "sub" / "x.png")
    back = im.load_image(p)
    assert torch.equal(back, im.quantize(x))
    assert (back - x).abs().max() <= 0.5 / 255 + 1e-7
    assert torch.equal(im.load_image(im.save_image(back, tmp_path / "y.png")), back)  # idempotent
    assert torch.equal(im.decode_image_bytes(im.encode_png(back)), back)
    with pytest.raises(ImageError, match="PNG only"):
        im.save_image(x, tmp_path / "x.jpg")


def test_uint8_conversions():
    u = torch.arange(256, dtype=torch.uint8).view(1, 1, 256).expand(3, 1, 256)
    assert torch.equal(im.to_uint8(im.from_uint8(u)), u)
    assert im.to_uint8(torch.tensor([-0.5, 1.5])).tolist() == [0, 255]
    with pytest.raises(ImageError, match="uint8"):
        im.from_uint8(torch.zeros(3))


# ----------------------------------------------------------------------------- bad files


def test_corrupt_file_names_path(tmp_path):
    p = tmp_path / "broken.png"
    p.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ImageError) as e:
        im.load_image(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_names_path(tmp_path, fmt):
    buf = io.BytesIO()
    Image.fromarray(_rand_rgb(64, 64)).save(buf, format=fmt)
    data = buf.getvalue()
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as e:
        im.load_image(p)
    assert str(p) in str(e.value) and "truncated" in str(e.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        im.load_image(tmp_path / "none.png")
    with pytest.raises(ImageError, match="directory"):
        im.load_image(tmp_path)


def test_max_pixels_refused(tmp_path):
    Image.fromarray(_rand_rgb(20, 20)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="limit of 100"):
        im.load_image(tmp_path / "big.png", max_pixels=100)


# ----------------------------------------------------------------------------- colour


def test_rgb_to_ycbcr_matches_skimage():
    from skimage.color import rgb2ycbcr, ycbcr2rgb

    x = torch.rand(3, 8, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64).float()
    ours = im.rgb_to_ycbcr(x)  # [0, 1] scale
    ref = rgb2ycbcr(x.permute(1, 2, 0).double().numpy())  # skimage: [16, 235] for Y (MATLAB convention)
    assert np.abs(ours.permute(1, 2, 0).double().numpy() * 255 - ref).max() < 1e-4
    back = im.ycbcr_to_rgb(ours)
    assert (back - x).abs().max() < 1e-5
    ref_back = ycbcr2rgb(ref)
    assert np.abs(back.permute(1, 2, 0).double().numpy() - ref_back).max() < 1e-4
    # batch shape and Y helper
    batch = torch.stack([x, x.flip(-1)])
    assert torch.allclose(im.rgb_to_y(batch), im.rgb_to_ycbcr(batch)[:, :1])
    assert im.rgb_to_y(batch).shape == (2, 1, 8, 9)


def test_ycbcr_ranges():
    black, white = torch.zeros(3, 1, 1), torch.ones(3, 1, 1)
    assert torch.allclose(im.rgb_to_y(black) * 255, torch.tensor(16.0))
    assert torch.allclose(im.rgb_to_y(white) * 255, torch.tensor(235.0), atol=1e-3)
    with pytest.raises(ImageError, match="RGB"):
        im.rgb_to_ycbcr(torch.zeros(1, 4, 4))


# ----------------------------------------------------------------------------- crops


def test_crops_values_and_bounds():
    x = torch.arange(3 * 10 * 12, dtype=torch.float32).view(3, 10, 12)
    assert torch.equal(im.crop_border(x, 2), x[:, 2:8, 2:10])
    assert im.crop_border(x, 0) is x
    assert torch.equal(im.mod_crop(x, 4), x[:, :8, :12])
    assert torch.equal(im.center_crop(x, 4, 6), x[:, 3:7, 3:9])
    assert torch.equal(im.crop(x, 1, 2, 3, 4), x[:, 1:4, 2:6])
    with pytest.raises(ImageError, match="too small"):
        im.crop_border(x, 5)
    with pytest.raises(ImageError, match=">= 0"):
        im.crop_border(x, -1)
    with pytest.raises(ImageError, match="larger than the image"):
        im.center_crop(x, 11, 4)
    with pytest.raises(ImageError, match="outside the image"):
        im.crop(x, 8, 0, 3, 4)
    with pytest.raises(ImageError, match="outside the image"):
        im.crop(x, -1, 0, 3, 4)


# ----------------------------------------------------------------------------- bicubic


def test_bicubic_reproduces_linear_ramp_geometry():
    # Keys' cubic (a = -0.5) reproduces linear functions, so in the interior a downscale by 4
    # must return the ramp sampled at the output pixel centres 4j + 1.5 (half-pixel convention).
    ramp = torch.arange(64, dtype=torch.float32).view(1, 1, 64).expand(3, 8, 64) / 255
    down = im.resize_bicubic(ramp, size=(2, 16))
    j = torch.arange(16, dtype=torch.float32)
    assert torch.allclose(down[0, 0, 2:-2] * 255, (4 * j + 1.5)[2:-2], atol=1e-4)
    up = im.resize_bicubic(ramp, size=(16, 128))
    k = torch.arange(128, dtype=torch.float32)
    assert torch.allclose(up[0, 0, 4:-4] * 255, (k / 2 - 0.25)[4:-4], atol=1e-4)
    const = torch.full((3, 10, 10), 0.3)
    assert torch.allclose(im.resize_bicubic(const, scale=0.25), torch.full((3, 3, 3), 0.3), atol=1e-6)


def test_matlab_and_pil_bicubic_agree_in_the_interior():
    """MATLAB-style vs Pillow bicubic x4 downscaling of a built-in photo (astronaut, 512x512).

    Both use Keys a = -0.5 stretched by the scale (antialiased); they differ at the border
    (mirror vs renormalised weights) and in rounding. Measured interior mean abs difference
    after rounding ours to 8 bits: about 0.10/255; we require < 0.5/255.
    """
    from copymark.data import samples

    x = samples(["astronaut"])[0].image
    ours = im.resize_bicubic(x, scale=0.25, method="matlab")
    pil = im.resize_bicubic(x, scale=0.25, method="pil")
    assert ours.shape == pil.shape == (3, 128, 128)
    interior = (im.quantize(ours.clamp(0, 1)) - pil)[:, 4:-4, 4:-4].abs().mean().item()
    assert interior < 0.5 / 255, interior * 255
    # a non-antialiased kernel would be far off: plain subsampling differs by much more
    naive = x[:, 1::4, 1::4]
    assert (naive - pil)[:, 4:-4, 4:-4].abs().mean().item() > 4 * interior


def test_downscale_bicubic_reproduces_set5_lr_x4():
    """The shipped Set5 LR_x4 were made by MATLAB bicubic; ours must match to < 0.5/255 mean
    abs difference per image (measured 0.10-0.15/255)."""
    root = require_shared("sr", "Set5")
    for hr_path in sorted((root / "HR").glob("*.png")):
        hr = im.load_image(hr_path)
        lr = im.load_image(root / "LR_x4" / hr_path.name)
        ours = im.downscale_bicubic(hr, 4)
        assert ours.shape == lr.shape
        mad = (ours - lr).abs().mean().item()
        assert mad < 0.5 / 255, (hr_path.name, mad * 255)
        assert torch.equal(ours, im.quantize(ours))  # rounded to 8 bits, as a stored LR is


def test_downscale_and_upscale_shapes_and_errors():
    x = torch.rand(2, 3, 35, 42)
    assert im.downscale_bicubic(x, 4).shape == (2, 3, 8, 10)
    assert im.upscale_bicubic(x[:, :, :8, :10], 4).shape == (2, 3, 32, 40)
    up = im.upscale_bicubic(x, 2)
    assert up.min() >= 0 and up.max() <= 1
    with pytest.raises(ImageError, match="exactly one"):
        im.resize_bicubic(x, scale=2, size=(3, 3))
    with pytest.raises(ImageError, match="factor"):
        im.downscale_bicubic(x, 0)
    with pytest.raises(ImageError, match="unknown method"):
        im.resize_bicubic(x, scale=0.5, method="lanczos")  # type: ignore[arg-type]


def test_every_decoder_failure_is_an_image_error_naming_the_file(tmp_path):
    """Mutated TIFFs make Pillow raise TypeError/struct.error/ZeroDivisionError and the like:
    each is a corrupt image, never a raw exception (seeded mutations of a real TIFF)."""
    import io
    import random

    from PIL import Image as PILImage

    from copymark.errors import ImageError
    from copymark.images import decode_image_bytes, load_image

    buf = io.BytesIO()
    PILImage.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)).save(buf, format="TIFF")
    good = buf.getvalue()
    rng = random.Random(0)
    kinds = set()
    for i in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(8, 200)] = rng.randrange(256)  # the header and IFD, where tags live
        try:
            decode_image_bytes(bytes(data), name=f"mutant-{i}.tif")
        except ImageError as err:
            assert f"mutant-{i}.tif" in err.message
            kinds.add(err.message.split(":")[1].strip()[:20])
    assert len(kinds) >= 2  # several kinds of failure were met, each an ImageError
    (tmp_path / "bad.tif").write_bytes(bytes(data))
    try:
        load_image(tmp_path / "bad.tif")
    except ImageError as err:
        assert "bad.tif" in err.message
