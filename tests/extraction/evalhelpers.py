"""Helpers for the evaluation tests: real served victims, test photos, tiny scriptable surrogates."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import torch

from copymark import images as I
from copymark.serving.app import create_app
from copymark.serving.metrics import parse_prometheus_text
from copymark.serving.models import ImageModel, load_model
from copymark.serving.server import BackgroundServer
from copymark.serving.settings import ServeSettings

KEY = "evaluator-key-1234"
ATTACKER = "attacker-key-1234"
STYLIZE = "classical:stylize?sigma_s=20&sigma_r=0.3"
CARTOON = "classical:cartoon"
PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "china", "flower", "retina",
    "hubble_deep_field", "immunohistochemistry", "coins", "moon",
)  # fmt: skip


def write_keys(d: Path, budget: int = 1000, rate: float = 1000.0, burst: int = 1000, attacker: int = 1000) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    keys = d / "keys.json"
    keys.write_text(
        json.dumps(
            {
                KEY: {"budget": budget, "rate_per_s": rate, "burst": burst},
                ATTACKER: {"budget": attacker, "rate_per_s": 1000, "burst": 1000},
            }
        )
    )
    return keys


def serve(d: Path, victim: str | ImageModel, keys: Path | None = None, **settings) -> BackgroundServer:
    """A real uvicorn server on 127.0.0.1 (not started); its request log is ``d/requests.jsonl``."""
    keys = keys or (d / "keys.json" if (d / "keys.json").exists() else write_keys(d))
    model = load_model(victim) if isinstance(victim, str) else victim
    settings.setdefault("request_log", d / "requests.jsonl")
    return BackgroundServer(create_app(model, ServeSettings(keys_file=keys, **settings)))


def charged(url: str) -> int:
    """Answers the server charged since it started (``copymark_answers_total``; replays are not)."""
    return int(parse_prometheus_text(httpx.get(f"{url}/metrics").text)["copymark_answers_total"])


def request_log(d: Path) -> list[dict]:
    p = d / "requests.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def paid_per_input(d: Path) -> dict[str, int]:
    """How often the victim really answered (and charged) each input hash, from the request log."""
    out: dict[str, int] = {}
    for e in request_log(d):
        if e.get("status") == 200 and "replay_of" not in e:
            out[e["input_sha256"]] = out.get(e["input_sha256"], 0) + 1
    return out


def photos(d: Path, n: int = 3, side: int = 64) -> Path:
    """``n`` built-in colour photos, centre-cropped to ``side`` px, as PNGs in ``d``."""
    from copymark.data.samples import samples

    d.mkdir(parents=True, exist_ok=True)
    for s in samples(list(PHOTOS[:n]), max_side=side * 2, include_grayscale=True):
        I.save_image(I.center_crop(s.image, side), d / f"{s.name}.png")
    return d


class Blur(torch.nn.Module):
    """A deterministic 'surrogate': 3x3 box blur (fully convolutional, scale 1)."""

    stride = 1
    scale = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)


class Upscale(torch.nn.Module):
    """A deterministic x4 'surrogate': nearest-neighbour upscaling."""

    stride = 1
    scale = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=4.0, mode="nearest")


def scripted(module: torch.nn.Module, path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but remains a model format
        torch.jit.script(module).save(str(path))
    return path
