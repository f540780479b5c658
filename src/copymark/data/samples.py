"""Built-in sample photographs: the ones scikit-image and scikit-learn ship in their wheels.

Nothing is downloaded: the files are read straight from the installed packages
(``skimage/data/`` and ``sklearn/datasets/images/``), never through ``skimage.data``'s
fetchers (which would fetch missing files with pooch). Sources and licenses are as stated in
the scikit-image docstrings and scikit-learn's ``load_sample_images().DESCR``:

Colour photographs (the default set):

=====================  ==========  ===============================================================
name                   size (HxW)  source / license
=====================  ==========  ===============================================================
astronaut              512x512     Eileen Collins, NASA Great Images; public domain
chelsea                300x451     Chelsea the cat, Stefan van der Walt; CC0
coffee                 400x600     coffee cup, Rachel Michetti (Pikolo Espresso Bar); CC0
rocket                 427x640     DSCOVR launch on Falcon 9, SpaceX; public domain
hubble_deep_field      872x1000    Hubble eXtreme Deep Field, NASA; public domain
immunohistochemistry   512x512     IHC-stained colonic glands, CMMI; no known copyright restrictions
retina                 1411x1411   fundus photograph, Mikael Haggstrom (Wikimedia); CC0
china                  427x640     scikit-learn sample, danielbuechele (Flickr); CC BY 2.0
flower                 427x640     scikit-learn sample, vultilion (Flickr); CC BY 2.0
=====================  ==========  ===============================================================

Grayscale photographs, converted to RGB by repeating the channel (only with
``include_grayscale=True``): ``camera`` (512x512, Lav Varshney, CC0), ``coins`` (303x384, Greek
coins from Pompeii, Brooklyn Museum, no known copyright restrictions), ``moon`` (512x512,
surface of the moon; scikit-image states no license).

Left out on purpose: images skimage would download (``brain``, ``eagle``, ``kidney``, ...),
non-photographs (``text``, ``page``, ``logo``, ``checkerboard``, ``horse``, ``phantom``,
``colorwheel``, ``cell``), processed textures (``brick``, ``grass``, ``gravel``), tiny crops
(``microaneurysms``), the motion-blurred ``clock``, and the Middlebury ``motorcycle`` stereo
pair (left and right views nearly duplicate each other, which would leak between an attacker
and a test split, and scikit-image states no license for them). The CC BY images (china,
flower) require attribution when published.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from copymark import images as im
from copymark.errors import DataError


@dataclass(frozen=True)
class SampleInfo:
    """Where a built-in sample comes from."""

    name: str
    package: str  # "skimage" or "sklearn"
    file: str  # path inside the package
    description: str
    license: str
    grayscale: bool = False


@dataclass
class Sample:
    """A built-in photograph: ``image`` is ``3 x H x W`` float32 RGB in [0, 1]."""

    name: str
    image: torch.Tensor
    info: SampleInfo


_CATALOGUE: tuple[SampleInfo, ...] = (
    SampleInfo(
        "astronaut", "skimage", "data/astronaut.png", "astronaut Eileen Collins (NASA Great Images)", "public domain"
    ),
    SampleInfo("chelsea", "skimage", "data/chelsea.png", "Chelsea the cat (Stefan van der Walt)", "CC0"),
    SampleInfo("coffee", "skimage", "data/coffee.png", "coffee cup (Rachel Michetti, Pikolo Espresso Bar)", "CC0"),
    SampleInfo("rocket", "skimage", "data/rocket.jpg", "DSCOVR launch on Falcon 9 (SpaceX)", "public domain"),
    SampleInfo(
        "hubble_deep_field",
        "skimage",
        "data/hubble_deep_field.jpg",
        "Hubble eXtreme Deep Field (NASA)",
        "public domain",
    ),
    SampleInfo(
        "immunohistochemistry",
        "skimage",
        "data/ihc.png",
        "IHC-stained colonic glands (CMMI)",
        "no known copyright restrictions",
    ),
    SampleInfo("retina", "skimage", "data/retina.jpg", "fundus photograph (Mikael Haggstrom, Wikimedia)", "CC0"),
    SampleInfo(
        "china", "sklearn", "datasets/images/china.jpg", "temple in China (danielbuechele, Flickr)", "CC BY 2.0"
    ),
    SampleInfo("flower", "sklearn", "datasets/images/flower.jpg", "flower (vultilion, Flickr)", "CC BY 2.0"),
    SampleInfo("camera", "skimage", "data/camera.png", "cameraman (Lav Varshney), grayscale", "CC0", grayscale=True),
    SampleInfo(
        "coins",
        "skimage",
        "data/coins.png",
        "Greek coins from Pompeii (Brooklyn Museum), grayscale",
        "no known copyright restrictions",
        grayscale=True,
    ),
    SampleInfo(
        "moon",
        "skimage",
        "data/moon.png",
        "surface of the moon, grayscale",
        "none stated by scikit-image",
        grayscale=True,
    ),
)
_BY_NAME = {s.name: s for s in _CATALOGUE}


def sample_names(include_grayscale: bool = False) -> list[str]:
    """Names of the built-in samples, in catalogue order (colour photographs first)."""
    return [s.name for s in _CATALOGUE if include_grayscale or not s.grayscale]


def sample_info(name: str) -> SampleInfo:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise DataError(f"unknown sample {name!r}", hint=f"built-in samples: {', '.join(_BY_NAME)}") from None


def sample_path(name: str) -> Path:
    """The file of a sample inside the installed scikit-image / scikit-learn (not imported)."""
    info = sample_info(name)
    spec = importlib.util.find_spec(info.package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"sample {name!r} needs the {info.package} package, which is not installed",
            hint="pip install scikit-image scikit-learn (both are copymark dependencies)",
        )
    p = Path(next(iter(spec.submodule_search_locations))) / info.file
    if not p.is_file():
        raise DataError(
            f"sample {name!r}: {p} is missing from the installed {info.package}",
            hint=f"reinstall {info.package} from its wheel (copymark never downloads samples)",
        )
    return p


@functools.cache
def _load_uint8(name: str) -> torch.Tensor:
    return im.to_uint8(im.load_image(sample_path(name)))


def _shrink(x: torch.Tensor, max_side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if max(h, w) <= max_side:
        return x
    s = max_side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return im.quantize(im.resize_bicubic(x, size=size).clamp(0, 1))


def samples(
    names: Sequence[str] | None = None, include_grayscale: bool = False, max_side: int | None = None
) -> list[Sample]:
    """Load built-in photographs as :class:`Sample` (name, ``3 x H x W`` image, info).

    ``names`` picks samples (default: all colour ones, plus the grayscale ones when
    ``include_grayscale``). ``max_side`` shrinks larger images (MATLAB-style antialiased
    bicubic, rounded to 8 bits) so their longer side is at most that many pixels.
    """
    chosen = list(names) if names is not None else sample_names(include_grayscale)
    out = []
    for n in chosen:
        info = sample_info(n)
        x = im.from_uint8(_load_uint8(n))
        if max_side is not None:
            x = _shrink(x, max_side)
        out.append(Sample(n, x, info))
    return out


def samples_to_folder(
    dir: str | Path,
    names: Sequence[str] | None = None,
    include_grayscale: bool = False,
    max_side: int | None = None,
) -> list[Path]:
    """Write built-in samples as ``dir/<name>.png`` (8-bit RGB) and return the paths."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    return [im.save_image(s.image, d / f"{s.name}.png") for s in samples(names, include_grayscale, max_side)]


@dataclass(frozen=True)
class SampleSplit:
    """Disjoint sample names for the attacker (queries, surrogate training) and for testing."""

    attacker: list[str]
    test: list[str]


def sample_split(
    n_test: int = 3, include_grayscale: bool = False, salt: str = "copymark-samples", names: Sequence[str] | None = None
) -> SampleSplit:
    """Split the samples deterministically: rank names by ``sha256(salt + name)``; the first
    ``n_test`` are test photos, the rest the attacker's. Same result on every machine."""
    pool = list(names) if names is not None else sample_names(include_grayscale)
    for n in pool:
        sample_info(n)
    if not 0 < n_test < len(pool):
        raise DataError(f"sample_split: n_test must be between 1 and {len(pool) - 1}, got {n_test}")
    ranked = sorted(pool, key=lambda n: hashlib.sha256((salt + n).encode()).digest())
    test = set(ranked[:n_test])
    return SampleSplit(attacker=[n for n in pool if n not in test], test=[n for n in pool if n in test])
