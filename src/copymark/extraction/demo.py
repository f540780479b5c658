"""``copymark demo``: the whole extraction attack on built-in photos, on CPU, in a few minutes.

Steps (every one the real thing, nothing mocked):

1. Photos: scikit-image's and scikit-learn's built-in photographs
   (:func:`copymark.data.samples`), split deterministically into *test* photos (the victim's
   evaluation set), the owner's *style examples* and the attacker's photos; the three are
   disjoint, so the surrogate is judged on images it never saw.
2. Victim: served by uvicorn on 127.0.0.1 (random free port) behind the real API with API keys
   and budgets. Style task: OpenCV stylization with ``sigma_s=20, sigma_r=0.3``. That setting
   is chosen because a small UNet can really learn it in two minutes of CPU training: on
   2 cores, a 4-level UNet trained 100 s on 1,500 random 128 px crops reached 18.4 dB PSNR
   against the victim on held-out photos where the identity map scores 14.8 dB, whereas with
   ``sigma_s=60`` it stays near the identity after 3 minutes and subtle filters
   (detailEnhance, edgePreservingFilter) are beaten by the identity. SR task: bicubic x4
   upscaling followed by an unsharp mask (a sharpening upscaler, so that the identity
   baseline, plain bicubic, is not already the victim).
3. Extraction: the attacker's key has a query budget; ``diverse`` selection (k-center over
   crops) picks the queries; every answer lands in the query store.
4. Surrogate: Pix2Pix (small UNet + PatchGAN, L1 x 100) for style, SRResNet for SR, trained
   on the (query, answer) pairs for a fixed number of iterations (so the numbers are
   reproducible from the seed, unlike a time budget).
5. Evaluation (tables A/B/C with bootstrap CIs, identity and untrained baselines) through the
   same API with a separate evaluator key (:func:`copymark.extraction.evaluate.run_evaluation`
   into ``RUN/evaluation/``, with the extraction's store for provenance), then the HTML report
   (``RUN/report.html``).

Layout of the demo's run folder ``runs/demo-<task>-<time>/``: ``photos/``, ``server/``
(keys, request log), ``store/`` (the extraction's query store; ``store/evaluation/`` the
evaluator's answers), ``surrogate_data/``, ``surrogate/`` (a training run),
``evaluation/`` (an evaluation run: metrics.json, tables.md, outputs/), ``report.html``, and
the demo's own config.json / metrics.json (timings, the headline numbers).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from copymark import images as I
from copymark.config import StrictModel
from copymark.errors import ConfigError

DemoTask = Literal["style", "sr"]

STYLE_VICTIM = "classical:stylize?sigma_s=20&sigma_r=0.3"
SR_VICTIM = "classical:bicubic_x4?method=matlab&sharpen=1.0"
ATTACKER_KEY = "attacker-demo-key"
EVALUATOR_KEY = "evaluator-demo-key"


class DemoConfig(StrictModel):
    """The demo's settings. Defaults (both tasks) sized for 1.5-2.5 minutes on 2 quiet CPU cores
    (measured; see the README)."""

    task: DemoTask = "style"
    budget: int = Field(600, ge=1)
    strategy: Literal["random", "diverse"] = "diverse"
    query_size: int = Field(128, ge=16, description="style: query crops of 128 px; SR: LR crops of 32 px (HR 128)")
    train_size: int = Field(64, ge=8, description="random training crops of the answers (cheaper steps, same pixels)")
    iters: int = Field(1200, ge=1)
    batch_size: int = Field(8, ge=1)
    ngf: int = Field(32, ge=1)
    seed: int = 0
    n_boot: int = Field(2000, ge=100)
    runs_root: Path = Path("runs")
    progress: bool = True

    @model_validator(mode="after")
    def _sizes(self) -> DemoConfig:
        if self.train_size > self.query_size:
            raise ValueError(f"train_size {self.train_size} is larger than query_size {self.query_size}")
        if self.task == "sr" and (self.query_size % 4 or self.train_size % 4):
            raise ValueError("super-resolution x4: query_size and train_size must be multiples of 4")
        return self


def _rank(names: list[str], salt: str) -> list[str]:
    return sorted(names, key=lambda n: hashlib.sha256((salt + n).encode()).digest())


def prepare_photos(root: Path, task: DemoTask) -> dict[str, Path]:
    """Write the disjoint photo sets of the demo under ``root`` and return their folders."""
    from copymark.data.samples import sample_names, samples

    colour = _rank(sample_names(include_grayscale=False), "copymark-demo")
    grey = [n for n in sample_names(include_grayscale=True) if n not in colour]
    test, style, attacker = colour[:3], colour[3:5], colour[5:] + grey
    dirs = {k: root / k for k in ("attacker", "test", "test_hr")}
    if task == "style":
        for s in samples(attacker, include_grayscale=True, max_side=384):
            I.save_image(s.image, dirs["attacker"] / f"{s.name}.png")
        for s in samples(test, max_side=256):
            I.save_image(I.mod_crop(s.image, 32), dirs["test"] / f"{s.name}.png")
        for s in samples(style, max_side=256):
            I.save_image(s.image, root / "owner_photos" / f"{s.name}.png")
        return {"attacker": dirs["attacker"], "test": dirs["test"], "owner": root / "owner_photos"}
    # super-resolution: the attacker holds low-resolution photos; test = HR photos and their LR
    for s in samples(attacker, include_grayscale=True, max_side=384):
        I.save_image(I.downscale_bicubic(s.image, 4), dirs["attacker"] / f"{s.name}.png")
    for s in samples(test, max_side=256):
        hr = I.mod_crop(s.image, 4)
        I.save_image(hr, dirs["test_hr"] / f"{s.name}.png")
        I.save_image(I.downscale_bicubic(hr, 4), dirs["test"] / f"{s.name}.png")
    return {"attacker": dirs["attacker"], "test": dirs["test"], "gt": dirs["test_hr"]}


def _style_examples(victim: Any, owner_dir: Path, out: Path) -> Path:
    """The owner's style template: the victim applied to the owner's own photos (unpaired GT)."""
    for p in I.list_images(owner_dir):
        x = I.load_image(p)
        I.save_image(victim(x.unsqueeze(0))[0], out / p.name)
    return out


def _train_config(cfg: DemoConfig, data_dir: Path | str) -> Any:
    from copymark.train.api import make_train_config

    common = {
        "size": cfg.train_size,
        "iters": cfg.iters,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "progress": cfg.progress,
        "log_every": 50,
    }
    if cfg.task == "style":
        overrides = {
            "generator": {"num_downs": 5, "ngf": cfg.ngf},
            "discriminator": {"ndf": max(4, cfg.ngf // 2), "n_layers": 2},
        }
        policy = "random_crop" if cfg.train_size < cfg.query_size else "error"
        return make_train_config("pix2pix", data_dir, overrides, resize_policy=policy, **common)
    # residual on the bicubic upscale: the untrained net is bicubic, training learns the rest
    overrides = {"generator": {"n_blocks": 6, "nf": cfg.ngf, "image_skip": True}}
    return make_train_config("srresnet", data_dir, overrides, **common)


def _check(cfg: DemoConfig) -> None:
    """The training configuration against the sizes, before the run folder is created."""
    from copymark.train.api import generator_stride

    stride = generator_stride(_train_config(cfg, "(the store's pairs)").procedure)
    if cfg.train_size % stride:
        raise ConfigError(
            f"demo train_size {cfg.train_size} is not a multiple of the surrogate's stride ({stride})",
            hint=f"use a multiple of {stride}, e.g. {max(stride, cfg.train_size - cfg.train_size % stride)}",
        )


def run_demo(cfg: DemoConfig, echo: Any = print) -> Path:
    """Run the demo into a new run folder under ``cfg.runs_root``; return the report's path."""
    from copymark.client.pairs import training_folder
    from copymark.extraction.campaign import CampaignConfig, run_campaign
    from copymark.extraction.evaluate import EvaluateConfig, run_evaluation
    from copymark.report.html import write_report
    from copymark.runs import create_run, new_run_dir
    from copymark.serving.app import create_app
    from copymark.serving.models import load_model
    from copymark.serving.server import BackgroundServer
    from copymark.serving.settings import ServeSettings
    from copymark.train.api import train

    _check(cfg)
    t0 = time.perf_counter()
    run_dir = new_run_dir(cfg.runs_root, f"demo-{cfg.task}")
    spec = STYLE_VICTIM if cfg.task == "style" else SR_VICTIM
    recorded = {"command": "demo", "victim": spec, **cfg.model_dump(mode="json", exclude={"runs_root", "progress"})}
    run = create_run(run_dir, recorded, "cpu", cfg.seed)
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 2)
        run.log("%s took %.1f s", name, now - since)
        return now

    def step(text: str) -> None:
        echo(text)
        run.log(text)

    step(f"[1/5] built-in photos -> {run_dir / 'photos'}")
    photos = prepare_photos(run_dir / "photos", cfg.task)
    victim = load_model(spec)
    gt_dir = photos.get("gt")
    if cfg.task == "style":
        gt_dir = _style_examples(victim, photos["owner"], run_dir / "photos" / "style_examples")
    t = lap("photos", t0)

    keys = run_dir / "server" / "keys.json"
    keys.parent.mkdir(parents=True, exist_ok=True)
    n_test = len(I.list_images(photos["test"]))
    keys.write_text(
        json.dumps(
            {
                ATTACKER_KEY: {"budget": cfg.budget, "rate_per_s": 1000, "burst": 1000},
                EVALUATOR_KEY: {"budget": 4 * n_test, "rate_per_s": 1000, "burst": 1000},
            },
            indent=2,
        )
    )
    serve_settings = ServeSettings(keys_file=keys, request_log=run_dir / "server" / "requests.jsonl")
    with BackgroundServer(create_app(victim, serve_settings)) as server:
        step(f"[2/5] victim {spec} serving on {server.url}")
        step(f"[3/5] extracting: budget {cfg.budget} queries, strategy {cfg.strategy}")
        size = cfg.query_size if cfg.task == "style" else cfg.query_size // 4
        campaign = run_campaign(
            CampaignConfig(
                victim_url=server.url,
                data_dir=photos["attacker"],
                budget=cfg.budget,
                store_dir=run_dir / "store",
                strategy=cfg.strategy,
                size=size,
                seed=cfg.seed,
            ),
            ATTACKER_KEY,
            progress=cfg.progress,
        )
        t = lap("extract", t)
        data = training_folder(run_dir / "store", run_dir / "surrogate_data", campaign.victim_id)
        step(f"[4/5] training the surrogate on {data.n_pairs} (query, answer) pairs, {cfg.iters} iterations")
        result = train(_train_config(cfg, data.folder), run_dir / "surrogate")
        t = lap("train", t)
        step("[5/5] evaluating tables A/B/C through the API and writing the report")
        metrics = run_evaluation(
            EvaluateConfig(
                victim_url=server.url,
                api_key=EVALUATOR_KEY,
                surrogate=run_dir / "surrogate",
                test=photos["test"],
                gt=gt_dir,
                run_dir=run_dir / "evaluation",
                store=run_dir / "store",
                n_boot=cfg.n_boot,
                seed=cfg.seed,
                progress=cfg.progress,
            )
        )
        t = lap("evaluate", t)
    report = write_report(run_dir / "evaluation", out=run_dir / "report.html")
    lap("report", t)
    timings["total"] = round(time.perf_counter() - t0, 2)
    run.update_metrics(
        {
            "timings_s": timings,
            "train": {"iters": cfg.iters, "last_losses": result.last_losses, "seconds": round(result.seconds, 1)},
            "headline": metrics["headline"],
            "provenance": metrics["provenance"],
            "evaluation": "evaluation",
            "report": "report.html",
        }
    )
    return report
