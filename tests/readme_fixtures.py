"""What tests/test_readme_runs.py needs to run the README's commands: the README read as blocks of
steps, small real-image folders cut from the built-in photographs, and the user files the README
names (a ``python:`` factory module with its state dicts, an ONNX graph).

Images are tiles of the photographs scikit-image and scikit-learn ship (copymark.data.samples),
shrunk with Pillow: real content, a few KB each, and disjoint between the folders that the README
says are disjoint (the attacker's photos, the test photos, the style examples).
"""

from __future__ import annotations

import re
import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from tests.sample_images import tiles
from torch import nn

from copymark.data.samples import sample_path
from copymark.images import from_pil, save_image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


# --------------------------------------------------------------------------- the README as steps


@dataclass(frozen=True)
class Step:
    """One logical line of a bash block: continuations joined, quoted newlines kept."""

    line: int  # README line number where it starts
    text: str  # as written (without its trailing comment)
    argv: tuple[str, ...] | None  # copymark's arguments for a `copymark ...` line, else None (a shell line)
    background: bool  # ends with `&`

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text}"


@dataclass
class Block:
    """A ```bash block and the ``###`` (or ``##``) heading above it."""

    heading: str
    line: int
    steps: list[Step] = field(default_factory=list)


def _logical_lines(body: str, first_line: int) -> list[tuple[int, str]]:
    """Join backslash continuations and lines inside an open quote (the README's two-line `echo`)."""
    out: list[tuple[int, str]] = []
    buf, start = "", first_line
    for k, raw in enumerate(body.splitlines()):
        if not buf:
            start = first_line + k
        if raw.endswith("\\"):
            buf += raw[:-1] + " "
            continue
        buf += raw
        try:
            shlex.split(buf, comments=True)
        except ValueError:  # an unclosed quote: the line goes on
            buf += "\n"
            continue
        out.append((start, buf))
        buf = ""
    assert not buf, f"README.md:{start}: unterminated line {buf!r}"
    return out


def _strip_comment(text: str) -> str:
    """The line without a trailing `# ...` comment (a `#` inside quotes stays)."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text.rstrip()


def code_fences(readme: Path = README) -> list[tuple[int, str]]:
    """``(line, language)`` of every fenced code block of the README (language ``""`` when none is given)."""
    fences, inside = [], False
    for n, raw in enumerate(readme.read_text().splitlines(), 1):
        m = re.match(r"\s*(```|~~~)\s*(\S*)", raw)
        if m:
            if not inside:
                fences.append((n, m.group(2)))
            inside = not inside
    return fences


def readme_blocks(readme: Path = README) -> list[Block]:
    """Every ```bash block of the README, in order, with its steps (blank and comment lines dropped)."""
    lines = readme.read_text().splitlines()
    blocks: list[Block] = []
    heading, i = "", 0
    while i < len(lines):
        m = re.match(r"#{2,3} (.+)", lines[i])
        if m:
            heading = m.group(1).strip()
        if lines[i].strip() == "```bash":
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            assert j < len(lines), f"{readme.name}:{i + 1}: a ```bash block that is never closed"
            block = Block(heading or "(top)", i + 1)
            for start, text in _logical_lines("\n".join(lines[i + 1 : j]), i + 2):
                text = _strip_comment(text.strip())
                if not text:
                    continue
                background = text.endswith("&") and not text.endswith("&&")
                if background:
                    text = text[:-1].rstrip()
                argv = tuple(shlex.split(text)[1:]) if text.startswith("copymark ") else None
                block.steps.append(Step(start, text, argv, background))
            blocks.append(block)
            i = j
        i += 1
    return blocks


def block_ids(blocks: list[Block]) -> list[str]:
    """A short unique id per block: its heading's slug, numbered when a heading has several blocks."""
    ids, seen = [], {}
    for b in blocks:
        slug = re.sub(r"[^a-z0-9]+", "-", b.heading.lower()).strip("-")
        seen[slug] = seen.get(slug, 0) + 1
        ids.append(slug if seen[slug] == 1 else f"{slug}-{seen[slug]}")
    return ids


# --------------------------------------------------------------------------- image folders


def write_photos(folder: Path, names: tuple[str, ...], max_side: int) -> Path:
    """Whole photographs shrunk to ``max_side`` (``folder/<name>.png``)."""
    for name in names:
        with Image.open(sample_path(name)) as img:
            img = img.convert("RGB")
            img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
            save_image(from_pil(img), folder / f"{name}.png")
    return folder


def write_tiles(folder: Path, names: tuple[str, ...], size: int, count: int, prefix: str = "t") -> Path:
    """``count`` tiles of ``size`` px taken in turn from the named photographs (``folder/<prefix>NNN.png``)."""
    pools = [tiles(n, size, max_side=4 * size, step=size // 2) for n in names]
    made = 0
    while made < count:
        for pool in pools:
            if made < count and made // len(pools) < len(pool):
                save_image(pool[made // len(pools)], folder / f"{prefix}{made:03d}.png")
                made += 1
    return folder


def target_of(x: torch.Tensor) -> torch.Tensor:
    """A paired task a tiny pix2pix can start on: a fixed colour transform (channel swap, green inverted)."""
    y = x[[2, 0, 1]].clone()
    y[1] = 1 - y[1]
    return y


def write_translation_data(root: Path, size: int = 32, pairs: int = 8) -> Path:
    """``root/A`` + ``root/B`` (paired by stem) and ``root/trainA`` + ``root/trainB`` (unpaired)."""
    for i, x in enumerate(tiles("astronaut", size, max_side=4 * size)[:pairs]):
        save_image(x, root / "A" / f"{i:03d}.png")
        save_image(target_of(x), root / "B" / f"{i:03d}.png")
    write_tiles(root / "trainA", ("coffee",), size, 6, "a")
    write_tiles(root / "trainB", ("rocket",), size, 5, "b")
    return root


# --------------------------------------------------------------------------- user files the README names

SR_MODULE = '''"""Your own x4 super-resolution nets, as `copymark serve --victim python:mynets.sr:FACTORY` takes them."""

import torch
from torch import nn


class TinySR(nn.Module):
    def __init__(self, out_act):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3 * 16, 3, padding=1))
        self.up = nn.PixelShuffle(4)
        self.out_act = out_act

    def forward(self, x):
        return self.out_act(self.up(self.body(x)))


def build_generator():
    """RGB in [0, 1] -> RGB in [0, 1], 4x larger; the convention is declared on the module."""
    net = TinySR(torch.sigmoid)
    net.scale = 4
    return net


def build():
    """BGR in [-1, 1] (a tanh output): the convention is given by the spec's options instead."""
    return TinySR(torch.tanh)
'''


def write_user_sr_module(folder: Path) -> None:
    """``folder/mynets/sr.py`` (factories ``build_generator`` and ``build``), ``sr.safetensors`` and ``sr.pth``."""
    import importlib.util

    from safetensors.torch import save_file

    (folder / "mynets").mkdir(parents=True, exist_ok=True)
    (folder / "mynets" / "__init__.py").write_text("")
    (folder / "mynets" / "sr.py").write_text(SR_MODULE)
    spec = importlib.util.spec_from_file_location("_readme_mynets_sr", folder / "mynets" / "sr.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    save_file(mod.build_generator().state_dict(), str(folder / "sr.safetensors"))
    torch.save(mod.build().state_dict(), folder / "sr.pth")


class _TanhNet(nn.Module):
    """NCHW in [-1, 1] -> NCHW in [-1, 1], with a stride-2 convolution and an x2 upsampling (stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.interpolate(torch.relu(self.c1(x)), scale_factor=2.0, mode="nearest")
        return torch.tanh(self.c2(y))


def write_onnx_model(path: Path) -> Path:
    """A tiny image-to-image ONNX graph in ``[-1, 1]`` (free batch and size), as ``model.onnx``."""
    torch.manual_seed(0)
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated; it needs no onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _TanhNet().eval(),
            (torch.rand(1, 3, 32, 32) * 2 - 1,),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["out"],
            dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "out": {0: "n", 2: "oh", 3: "ow"}},
            opset_version=17,
        )
    return path
