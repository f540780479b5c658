"""``copymark reproduce extraction-tables --config configs/reproduce/tiny.json`` end to end (slow tier).

The real command on the repository's tiny config (32 px, tens of queries and iterations, three
settings: a classical style victim with a target-style set, a classical x4 SR victim on Set5,
and the real CycleGAN horse->zebra generator with table B only), each victim served on
127.0.0.1 behind the real API. Checks: every setting's cells are filled in tables.md and
tables.html in the study's layout; the queries bought are the budgets; a rerun into the same
run folder resumes without serving a victim or paying a query again and writes the same
tables; the run folder refuses another config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.conftest import ROOT, require_shared

from copymark.cli import main as cli_main

pytestmark = pytest.mark.slow

TINY = ROOT / "configs" / "reproduce" / "tiny.json"


def _requests(run: Path) -> dict[str, int]:
    out = {}
    for log in sorted(run.glob("settings/*/server/requests.jsonl")):
        out[log.parent.parent.name] = len(log.read_text().splitlines())
    return out


def test_tiny_config_end_to_end_and_resume(tmp_path, capsys):
    data = require_shared()
    for part in ("tiny_imagenet", "monet_photo", "sr/Set5", "weights/cyclegan_h2z_compressed"):
        require_shared(*part.split("/"))
    config = tmp_path / "tiny.json"
    shutil.copy(TINY, config)
    run = tmp_path / "run"
    args = ["reproduce", "extraction-tables", "--config", str(config), "--run-dir", str(run), "--quiet"]
    assert cli_main([*args, "--data-root", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"tables: {run / 'tables.md'}" in out
    assert "[met]" in out or "[MISSED]" in out  # the goal lines are printed

    metrics = json.loads((run / "metrics.json").read_text())["settings"]
    assert sorted(metrics) == ["tiny-h2z", "tiny-sr", "tiny-stylize"]
    budgets = {s["name"]: s["queries"]["budget"] for s in json.loads(TINY.read_text())["settings"]}
    for name, result in metrics.items():
        assert result["conditions"]["queries"] == budgets[name]
        for role in ("test", "benchmark"):
            assert result["sets"][role]["B"] is not None
    sr = metrics["tiny-sr"]["sets"]["test"]
    for table in ("A", "B", "C"):
        assert sr[table]["psnr_y"]["n"] == 5 and 10 < sr[table]["psnr_y"]["mean"] < 60
    style = metrics["tiny-stylize"]["sets"]["test"]
    for table in ("A", "B", "C"):
        lo, hi = style[table]["swd"]["ci95"]
        assert lo <= style[table]["swd"]["value"] <= hi or table == "B"
    assert "A" not in metrics["tiny-h2z"]["sets"]["test"]  # table B only: no target-style set

    md = (run / "tables.md").read_text()
    page = (run / "tables.html").read_text()
    assert "not run yet" not in md and "not run" not in md.replace("not run yet", "")
    for title in ("Table 2: FID of victim", "Table 4: PSNR and SSIM", "Extra setting (not in the study)"):
        assert title in md and title in page
    assert "(A) 24.67 ± 3.63" in md  # the study's Table 4(b) figure beside copymark's
    assert "| V output | DIV2K Test → sr/Set5 (5) | N/A | N/A | (A) 24.67 ± 3.63 | (A) Y " in md

    # a rerun resumes: no victim is served again, no query is paid, the same tables come out
    requests = _requests(run)
    assert set(requests) == set(budgets) and all(n > 0 for n in requests.values())
    assert cli_main([*args, "--data-root", str(data)]) == 0
    capsys.readouterr()
    assert _requests(run) == requests
    assert (run / "tables.md").read_text() == md

    # a started setting is fixed: another config for it is refused, naming the setting and the key
    original = config.read_text()
    changed = json.loads(original)
    changed["settings"][1]["queries"]["budget"] = 31
    config.write_text(json.dumps(changed))
    assert cli_main([*args, "--data-root", str(data)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "setting 'tiny-sr'" in err and "queries.budget" in err
    # ... and so is a change to the common part of the config
    changed = json.loads(original)
    changed["n_boot"] = 300
    config.write_text(json.dumps(changed))
    assert cli_main([*args, "--data-root", str(data)]) == 2
    assert "n_boot" in capsys.readouterr().err
