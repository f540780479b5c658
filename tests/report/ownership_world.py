"""Real (tiny) protect and verify run folders for the ownership-report tests.

The class folders and secrets are tiles of scikit-image's bundled photographs
(tests/sample_images.py, as the protection tests make them). One
small CNN host and two independently trained null models are trained with `copymark
classifier train`; then, through the CLI:

* ``protected``: Two-Phase with the LSB codec (16 triggers), so the revealed secret of the
  report can be checked against the LSB rule computed here;
* ``e2e``: E2E-Extraction from the host (8 triggers, a few iterations: the report shows any
  run, so the figures need not be good, only real);
* ``acsac19``: ACSAC19 (8 triggers), whose secret cannot be recovered;
* verify runs beside them: ``v-owned`` (the protected model, calibrated p0), ``v-host`` (the
  unprotected host: not owned) and ``v-e2e`` (the E2E model against its own kit, ``--p0``), a
  verify run of another kit that the two-phase report must not pick up.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tests import sample_images

from copymark.cli import main
from copymark.watermark.kit import generate_keypair

CLASSES = ("astronaut", "chelsea", "coffee", "rocket")
SECRET_SAMPLES = ("flower", "hubble_deep_field", "immunohistochemistry", "retina")
SMALL = '{"net": {"widths": [16, 32, 64]}, "optim": {"lr": 0.05}}'
E2E = '"codec": {"width": 16}, "host_optim": {"lr": 0.1}'


def write_classes(root: Path, per_class: int = 40, size: int = 32) -> Path:
    """``root/<class>/NNN.png``: one photograph per class (a task a small CNN learns in a few dozen steps)."""
    return sample_images.write_classes(root, CLASSES, per_class, size)


def write_secrets(root: Path, per_sample: int = 2, size: int = 32) -> Path:
    return sample_images.write_secrets(root, SECRET_SAMPLES, per_sample, size)


def _ok(argv: list[str]) -> None:
    assert main(argv) == 0, argv


def build(root: Path) -> dict[str, Path]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: far faster on one thread when the shared cores are busy
    try:
        key = root / "keys" / "owner.key"
        pub = generate_keypair(key)
        data, secrets = write_classes(root / "data"), write_secrets(root / "secrets")
        runs = root / "runs"

        def classifier(name: str, seed: int) -> Path:
            run = root / "models" / name
            _ok(["classifier", "train", "--data", str(data), "--run-dir", str(run), "--net", "small_cnn",
                 "--net-config", SMALL, "--iters", "80", "--batch-size", "16", "--seed", str(seed), "--no-progress"])  # fmt: skip
            return run

        host = classifier("host", 0)
        nulls = [classifier(f"null-{s}", s) for s in (11, 12)]
        common = ["--data", str(data), "--secrets", str(secrets), "--key", str(key), "--host", str(host),
                  "--batch-size", "16", "--no-progress"]  # fmt: skip
        protected = runs / "protected"
        _ok(["protect", "--method", "two-phase", "--run-dir", str(protected), "--codec", "lsb", "--triggers", "16",
             "--trigger-batch", "16", "--iters", "200", *common])  # fmt: skip
        e2e, acsac = runs / "e2e", runs / "acsac19"
        _ok(["protect", "--method", "e2e-extraction", "--run-dir", str(e2e), "--start-from", "unprotected",
             "--method-config", "{" + E2E + "}", "--triggers", "8", "--trigger-batch", "8", "--iters", "20", *common])  # fmt: skip
        _ok(["protect", "--method", "acsac19", "--run-dir", str(acsac), "--start-from", "unprotected",
             "--method-config", "{" + E2E + ', "w_ce": 1.0, "w_adv": 0.1, "discriminator": {"kind": "xunet", "width": 4}}',
             "--triggers", "8", "--trigger-batch", "8", "--iters", "20", *common])  # fmt: skip
        cal = root / "calibration.json"
        _ok(["verify", "calibrate", "--kit", str(protected / "kit"), "--out", str(cal),
             *[a for m in nulls for a in ("--null-model", str(m))]])  # fmt: skip
        verify = ["--alpha", "1e-3", "--beta", "1e-3", "--public-key", str(pub), "--no-progress"]
        _ok(["verify", "--kit", str(protected / "kit"), "--model", str(protected), "--calibration", str(cal),
             "--run-dir", str(runs / "v-owned"), *verify])  # fmt: skip
        _ok(["verify", "--kit", str(protected / "kit"), "--model", str(host), "--calibration", str(cal),
             "--run-dir", str(runs / "v-host"), *verify])  # fmt: skip
        _ok(["verify", "--kit", str(e2e / "kit"), "--model", str(e2e), "--p0", "0.05", "--run-dir",
             str(runs / "v-e2e"), *verify])  # fmt: skip
    finally:
        torch.set_num_threads(n)
    return {"root": root, "data": data, "pub": pub, "host": host, "protected": protected, "e2e": e2e,
            "acsac19": acsac, "v-owned": runs / "v-owned", "v-host": runs / "v-host", "v-e2e": runs / "v-e2e"}  # fmt: skip
