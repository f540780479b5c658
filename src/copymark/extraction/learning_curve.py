"""Learning curves: table-B quality of the surrogate against the number of queries spent.

For each query-selection strategy, the campaign is grown through increasing budgets (by
default 1/8, 1/4, 1/2 and all of ``budget``) in one query store per strategy. Campaigns
resume, and both strategies order their candidates as a prefix order, so each budget's query
set contains the previous one: the curve measures what *more* queries buy, and no query is
paid twice. At every point a fresh surrogate is trained on the store's pairs with the same
configuration, seed and number of iterations, and table B (surrogate vs victim on the test
images, through the API) is measured. The victim's test answers are fetched once and reused.

Output (in ``run_dir``): ``learning_curve.json`` (the format :mod:`copymark.report` reads),
``learning_curve.png`` and the usual run files.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

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


def run_learning_curve(
    *,
    victim_url: str,
    api_key: str,
    eval_api_key: str | None,
    data_dir: Path,
    test_dir: Path,
    budget: int,
    run_dir: Path,
    strategies: list[str],
    fractions: list[Fraction] | None = None,
    procedure: str = "pix2pix",
    train_overrides: dict[str, Any] | None = None,
    size: int = 128,
    train_size: int | None = None,
    iters: int = 300,
    batch_size: int = 8,
    seed: int = 0,
    n_boot: int = 1000,
    progress: bool = True,
    echo: Any = print,
) -> dict[str, Any]:
    """Measure table B at each (strategy, budget fraction); write learning_curve.json/.png."""
    import asyncio

    from copymark.client.pairs import training_folder
    from copymark.extraction.campaign import STRATEGIES, run_campaign
    from copymark.extraction.evaluate import evaluate_set, make_set, victim_info
    from copymark.report.plots import learning_curve_png
    from copymark.runs import create_run
    from copymark.train.api import make_train_config, train
    from copymark.translate import load_translation_model

    for s in strategies:
        if s not in STRATEGIES:
            raise ConfigError(f"unknown strategy {s!r}", hint=f"use some of: {', '.join(STRATEGIES)}")
    if budget < 1:
        raise ConfigError(f"--budget must be >= 1, got {budget}")
    fractions = list(fractions or DEFAULT_FRACTIONS)
    budgets = sorted({max(1, int(budget * f)) for f in fractions})
    config = {
        "command": "learning-curve",
        "victim_url": victim_url,
        "data": str(data_dir),
        "test": str(test_dir),
        "budget": budget,
        "budgets": budgets,
        "strategies": strategies,
        "procedure": procedure,
        "train_overrides": train_overrides or {},
        "size": size,
        "train_size": train_size or size,
        "iters": iters,
        "batch_size": batch_size,
        "seed": seed,
    }
    run = create_run(run_dir, config, "cpu", seed)
    info = asyncio.run(victim_info(victim_url, api_key))
    task = "sr" if info.get("task") == "sr" else "style"
    scale = int(info.get("scale", 1) or 1)
    metric = "psnr_y" if task == "sr" else "psnr_rgb"
    eval_key = eval_api_key or api_key
    test_set = make_set("test", Path(test_dir), None, task, scale)  # type: ignore[arg-type]
    points: list[dict[str, Any]] = []
    for strategy in strategies:
        store = run.path / f"store-{strategy}"
        for m in budgets:
            echo(f"learning curve: {strategy}, {m} queries")
            campaign = run_campaign(
                victim_url,
                api_key,
                data_dir,
                m,
                store,
                strategy=strategy,
                size=size if task == "style" else size // scale,
                seed=seed,
                progress=progress,
                plan_budget=max(budgets),
            )  # each point a prefix of the full campaign
            tag = f"{strategy}-{m}"
            data = training_folder(store, run.path / "data" / tag, campaign.victim_id)
            tsize = train_size or size
            policy = {"resize_policy": "random_crop"} if task == "style" and tsize < size else {}
            cfg = make_train_config(
                procedure,
                data.folder,
                train_overrides,
                size=tsize,
                iters=iters,
                batch_size=batch_size,
                seed=seed,
                progress=progress,
                log_every=50,
                **policy,
            )
            train(cfg, run.path / "surrogates" / tag)
            surrogate = load_translation_model(run.path / "surrogates" / tag, "cpu")
            res = evaluate_set(
                test_set,
                task=task,
                scale=scale,
                victim_url=victim_url,
                api_key=eval_key,  # type: ignore[arg-type]
                surrogate=surrogate,
                out_root=run.path / "outputs",
                n_boot=n_boot,
                seed=seed,
            )
            b = res["tables"]["B"]["metrics"][metric]
            ident = res["baselines"]["identity_vs_victim"][metric]
            points.append(
                {
                    "strategy": strategy,
                    "queries": data.n_pairs,
                    "value": b["mean"],
                    "std": b["std"],
                    "ci95": b["ci95"],
                    "identity": ident["mean"],
                }
            )
            run.log("%s at %d queries: %s = %.3f", strategy, data.n_pairs, metric, b["mean"])
    curve = {"metric": metric, "budget": budget, "task": task, "iters": iters, "points": points}
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
