"""Synthetic user-study responses for planning (``copymark study simulate``).

Each simulated participant rates ``per_participant`` distinct inputs, half through each model,
in random order, exactly as the web app assigns them. A rating is a latent normal value

    y = mean + u_participant + v_input - [surrogate] * effect_d * sd + e

rounded and clipped to the 1-5 scale, with participant and input effects (SD ``sd_participant``,
``sd_input``) and the residual chosen so the latent total SD is ``sd``. ``effect_d`` is thus
Cohen's d of victim minus surrogate on the latent scale; rounding and clipping attenuate it a
little on the observed scale (``analyze`` reports the observed d). Attention checks, if asked
for, are answered correctly with probability ``attentive``. Output rows use the export schema.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from copymark.errors import ConfigError
from copymark.study.store import rows_to_csv


def simulate_ratings(
    participants: int = 125,
    effect_d: float = 0.0,
    *,
    per_participant: int = 20,
    n_inputs: int | None = None,
    seed: int = 0,
    mean: float = 3.1,
    sd: float = 1.5,
    sd_participant: float = 0.5,
    sd_input: float = 0.5,
    attention_checks: int = 0,
    attentive: float = 0.95,
) -> list[dict]:
    """Simulated answers in the export schema (see module docstring)."""
    if participants < 1:
        raise ConfigError(f"--participants {participants} must be >= 1")
    if per_participant < 2 or per_participant % 2:
        raise ConfigError(f"--per-participant {per_participant} must be an even number >= 2")
    n_inputs = n_inputs or max(40, per_participant)
    if n_inputs < per_participant:
        raise ConfigError(f"--inputs {n_inputs} must be >= --per-participant {per_participant}")
    resid2 = sd**2 - sd_participant**2 - sd_input**2
    if resid2 <= 0:
        raise ConfigError(f"sd={sd} must exceed sqrt(sd_participant^2 + sd_input^2)")
    resid = math.sqrt(resid2)
    rng = np.random.default_rng(seed)
    input_eff = rng.normal(0.0, sd_input, size=n_inputs)
    names = [f"input{i:03d}" for i in range(n_inputs)]
    rows: list[dict] = []
    k = per_participant
    for pid in range(1, participants + 1):
        u = rng.normal(0.0, sd_participant)
        chosen = rng.choice(n_inputs, size=k, replace=False)
        models = np.array(["victim"] * (k // 2) + ["surrogate"] * (k // 2))
        rng.shuffle(models)
        items = []
        for idx, m in zip(chosen, models):
            y = mean + u + input_eff[idx] - (effect_d * sd if m == "surrogate" else 0.0) + rng.normal(0.0, resid)
            score = int(np.clip(np.rint(y), 1, 5))
            items.append(
                {
                    "item_id": f"{m[0]}-{names[idx]}",
                    "input_id": names[idx],
                    "model": str(m),
                    "score": score,
                    "expected_score": "",
                }
            )
        for _ in range(attention_checks):
            exp = int(rng.integers(1, 6))
            ans = exp if rng.random() < attentive else int(rng.integers(1, 6))
            items.insert(
                int(rng.integers(1, len(items) + 1)),
                {
                    "item_id": f"attention-{exp}",
                    "input_id": "",
                    "model": "attention",
                    "score": ans,
                    "expected_score": exp,
                },
            )
        for pos, it in enumerate(items):
            rows.append({"participant": pid, "position": pos, **it, "answered_at": "", "completed": 1})
    return rows


def write_simulation(out: str | Path, **kwargs) -> Path:
    """Simulate and write the CSV to ``out``; returns the path."""
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(rows_to_csv(simulate_ratings(**kwargs)))
    return p
