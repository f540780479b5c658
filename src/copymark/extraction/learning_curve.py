"""Learning curves: table-B quality of the surrogate against the number of queries spent.

For each query-selection strategy, the campaign is grown through increasing budgets (by
default 1/8, 1/4, 1/2 and all of ``budget``) in one query store per strategy. Campaigns
resume, and both strategies order their candidates as a prefix order, so each budget's query
set contains the previous one: the curve measures what *more* queries buy, and no query is
paid twice. At every point a fresh surrogate is trained on the store's pairs with the same
configuration, seed and number of iterations, and table B (surrogate vs victim on the test
images, through the API) is measured. The victim's test answers are fetched once, with the
evaluator's key, into the run's own answers store (keyed by victim id and input hash, like
every evaluation; see :mod:`copymark.extraction.evaluate`) and reused at every point.

Everything (options, the attacker's photos, the test images against the victim's scale, the
training configuration against the query size) is checked before the run folder is created or
any query is paid.

Output (in ``run_dir``): ``learning_curve.json`` (the format :mod:`copymark.report` reads),
``learning_curve.png`` and the usual run files.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from copymark.config import StrictModel
from copymark.errors import ConfigError

DEFAULT_FRACTIONS = (Fraction(1, 8), Fraction(1, 4), Fraction(1, 2), Fraction(1, 1))


def parse_fractions(text: str) -> list[Fraction]:
    """``"1/8,1/4,1/2,1"`` -> sorted unique fractions in (0, 1]."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            f = Fraction(part)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"--fractions: {part!r} is not a fraction", hint="e.g. 1/8,1/4,1/2,1") from None
        if not 0 < f <= 1:
            raise ConfigError(f"--fractions: {part} must lie in (0, 1]")
        out.append(f)
    if not out:
        raise ConfigError("--fractions: give at least one fraction")
    return sorted(set(out))


class LearningCurveConfig(StrictModel):
    """Everything one learning curve needs (``copymark learning-curve`` builds it from its options)."""

    victim_url: str = Field(min_length=1)
    api_key: SecretStr = Field(description="the attacker's key: pays the campaign queries")
    eval_api_key: SecretStr | None = Field(
        None, description="the evaluator's key for the test answers (default api_key)"
    )
    data: Path = Field(description="the attacker's photos (queries are crops of them)")
    test: Path = Field(description="test inputs for table B")
    budget: int = Field(ge=1, description="full query budget; points at fractions of it")
    run_dir: Path
    strategies: list[Literal["random", "diverse"]] = Field(default_factory=lambda: ["random", "diverse"], min_length=1)
    fractions: list[Fraction] = Field(default_factory=lambda: list(DEFAULT_FRACTIONS), min_length=1)
    procedure: Literal["pix2pix", "srresnet"] = "pix2pix"
    net_config: dict[str, Any] = Field(default_factory=dict, description="overrides of the procedure config")
    size: int = Field(128, ge=8, description="query crop size (style; SR: the HR size of a query's answer)")
    train_size: int | None = Field(None, ge=4, description="training crop size (default size)")
    iters: int = Field(300, ge=1)
    batch_size: int = Field(8, ge=1)
    seed: int = 0
    n_boot: int = Field(1000, ge=100)
    concurrency: int = Field(4, ge=1, le=256)
    progress: bool = True

    @field_validator("fractions")
    @classmethod
    def _fractions_in_unit_interval(cls, v: list[Fraction]) -> list[Fraction]:
        if any(not 0 < f <= 1 for f in v):
            raise ValueError("every fraction must lie in (0, 1]")
        return sorted(set(v))

    @field_validator("strategies")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each strategy once")
        return v

    def budgets(self) -> list[int]:
        return sorted({max(1, int(self.budget * f)) for f in self.fractions})


def _train_config(cfg: LearningCurveConfig, task: str, data_dir: Path | str) -> Any:
    from copymark.train.api import make_train_config

    tsize = cfg.train_size or cfg.size
    policy = {"resize_policy": "random_crop"} if task == "style" and tsize < cfg.size else {}
    return make_train_config(
        cfg.procedure,
        data_dir,
        cfg.net_config,
        size=tsize,
        iters=cfg.iters,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        progress=cfg.progress,
        log_every=50,
        **policy,
    )


def _check(cfg: LearningCurveConfig, task: str, scale: int) -> None:
    """The options against the victim, before any run folder or query."""
    from copymark.train.api import generator_stride

    want = "srresnet" if task == "sr" else "pix2pix"
    if cfg.procedure != want:
        raise ConfigError(
            f"--procedure {cfg.procedure} does not fit a {'super-resolution' if task == 'sr' else 'style'} victim",
            hint=f"use --procedure {want}",
        )
    tsize = cfg.train_size or cfg.size
    if tsize > cfg.size:
        raise ConfigError(f"--train-size {tsize} is larger than the queries' --size {cfg.size}")
    if task == "sr" and cfg.size % scale:
        raise ConfigError(
            f"--size {cfg.size} (the HR side of an answer) is not a multiple of the victim's scale {scale}"
        )
    train_cfg = _train_config(cfg, task, "(the store's pairs)")  # validates --net-config and the loop options
    stride = generator_stride(train_cfg.procedure)
    if tsize % stride:
        raise ConfigError(
            f"the training crop {tsize} is not a multiple of the generator's stride ({stride})",
            hint=f"use --train-size {max(stride, tsize - tsize % stride)} or a --net-config with fewer levels",
        )
    if task == "sr" and getattr(train_cfg.procedure.generator, "scale", scale) != scale:
        raise ConfigError(
            f"the surrogate's scale {train_cfg.procedure.generator.scale} differs from the victim's {scale}"
        )


def run_learning_curve(cfg: LearningCurveConfig, echo: Any = print) -> dict[str, Any]:
    """Measure table B at each (strategy, budget fraction); write learning_curve.json/.png."""
    from copymark.client.pairs import training_folder
    from copymark.extraction.campaign import CampaignConfig, list_photos, run_campaign
    from copymark.extraction.evaluate import Inputs, Scorer, VictimAccess, check_sizes, make_set, victim_info
    from copymark.extraction.evaluate import fetch_answers as fetch
    from copymark.report.plots import learning_curve_png
    from copymark.runs import create_run
    from copymark.train.api import train
    from copymark.translate import load_translation_model

    attacker = VictimAccess(cfg.victim_url, cfg.api_key.get_secret_value(), cfg.concurrency, seed=cfg.seed)
    evaluator = VictimAccess(
        cfg.victim_url, (cfg.eval_api_key or cfg.api_key).get_secret_value(), cfg.concurrency, seed=cfg.seed
    )
    list_photos(cfg.data)
    info = victim_info(evaluator)
    victim_id = str(info["victim_id"])
    task = "sr" if info.get("task") == "sr" else "style"
    scale = int(info.get("scale", 1) or 1)
    test_set = make_set("test", cfg.test, None, task, scale)  # type: ignore[arg-type]
    check_sizes(test_set, task, scale, (info.get("limits") or {}).get("max_pixels"))  # type: ignore[arg-type]
    _check(cfg, task, scale)
    budgets = cfg.budgets()
    metric = "psnr_y" if task == "sr" else "psnr_rgb"
    recorded = {
        "command": "learning-curve",
        **cfg.model_dump(mode="json", exclude={"api_key", "eval_api_key", "progress", "concurrency"}),
        "victim": {"victim_id": victim_id, "task": task, "scale": scale},
        "budgets": budgets,
        "train_size": cfg.train_size or cfg.size,
    }
    run = create_run(cfg.run_dir, recorded, "cpu", cfg.seed)
    inputs = Inputs.of([test_set])
    answers_dir = run.path / "answers"
    run.log("test answers of victim %s into %s", victim_id, answers_dir)
    fetch(evaluator, victim_id, inputs, answers_dir, progress=cfg.progress, log=run.log)
    points: list[dict[str, Any]] = []
    n_points = len(cfg.strategies) * len(budgets)
    for strategy in cfg.strategies:
        store = run.path / f"store-{strategy}"
        for m in budgets:
            tag = f"{strategy}-{m}"
            echo(f"learning curve: point {len(points) + 1}/{n_points}: {strategy}, {m} queries")
            run.log("point %d/%d: %s, %d queries", len(points) + 1, n_points, strategy, m)
            campaign = run_campaign(
                CampaignConfig(
                    victim_url=attacker.url,
                    data_dir=cfg.data,
                    budget=m,
                    store_dir=store,
                    strategy=strategy,
                    size=cfg.size if task == "style" else cfg.size // scale,
                    seed=cfg.seed,
                    concurrency=cfg.concurrency,
                    plan_budget=max(budgets),
                ),
                attacker.api_key,
                progress=cfg.progress,
            )  # each point a prefix of the full campaign
            if campaign.victim_id != victim_id:
                raise ConfigError(f"the victim at {cfg.victim_url} changed during the learning curve")
            data = training_folder(store, run.path / "data" / tag, victim_id)
            train(_train_config(cfg, task, data.folder), run.path / "surrogates" / tag)
            scorer = Scorer(
                task=task,  # type: ignore[arg-type]
                scale=scale,
                victim_id=victim_id,
                answers_dir=answers_dir,
                surrogate=load_translation_model(run.path / "surrogates" / tag, "cpu"),
                n_boot=cfg.n_boot,
                seed=cfg.seed,
                progress=cfg.progress,
                log=run.log,
            )
            res = scorer.score(test_set, inputs, run.path / "outputs")
            b = res["tables"]["B"]["metrics"][metric]
            base_key = next(k for k in res["baselines"] if k != "untrained_vs_victim")
            points.append(
                {
                    "strategy": strategy,
                    "queries": data.n_pairs,  # the pairs the surrogate was really trained on
                    "value": b["mean"],
                    "std": b["std"],
                    "n": b["n"],
                    "ci95": b["ci95"],
                    "baseline": base_key,
                    "baseline_value": res["baselines"][base_key][metric]["mean"],
                }
            )
            echo(f"learning curve: {strategy} at {data.n_pairs} queries: {metric} = {b['mean']}")
            run.log("%s at %d queries: %s = %s", strategy, data.n_pairs, metric, b["mean"])
    curve = {"metric": metric, "budget": cfg.budget, "task": task, "iters": cfg.iters, "points": points}
    (run.path / "learning_curve.json").write_text(json.dumps(curve, indent=2) + "\n")
    (run.path / "learning_curve.png").write_bytes(learning_curve_png(curve))
    run.update_metrics({"learning_curve": curve, "goal": goal_check(curve)})
    return curve


def goal_check(curve: dict[str, Any]) -> dict[str, Any]:
    """Does the best non-random strategy reach, with 1/4 of the budget, what random reaches with all?"""
    pts = curve["points"]
    full = max((p["queries"] for p in pts), default=0)
    rand_full = [p["value"] for p in pts if p["strategy"] == "random" and p["queries"] == full]
    quarter = [p for p in pts if p["strategy"] != "random" and p["queries"] <= full // 4]
    if not rand_full or not quarter:
        return {"evaluated": False, "why": "needs random at the full budget and another strategy at <= 1/4 of it"}
    best = max(quarter, key=lambda p: (p["queries"], p["value"]))
    return {
        "evaluated": True,
        "random_full": rand_full[0],
        "best_quarter": best["value"],
        "best_strategy": best["strategy"],
        "reached": best["value"] >= rand_full[0],
    }
