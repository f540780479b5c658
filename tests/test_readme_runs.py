"""Every command of every ```bash block of README.md runs as written, at tiny sizes.

The README is read as it stands (tests/readme_fixtures.py: continuation lines joined, a quoted
newline kept, comments dropped), so a line added to it later is run by its block's test, and a
new block fails test_every_readme_line_is_run_or_listed until it gets a BlockSpec here (or its
lines are listed in NOT_RUN with the reason they cannot run in a test). A code block in another
language than bash fails test_readme_code_blocks_are_bash.

One test per README block (its id is the heading's slug), in a fresh working folder: the
block's fixtures are made first (the folders its commands name, filled with tiles of the
built-in photographs; files an earlier block would have made, made by the README's own command
for them; the user module a ``python:`` spec names), then every line runs in README order and
must exit 0, and the block's check asserts what the lines made. "As written" means the README's
command line unchanged, with only the options of OVERRIDES appended (see :class:`Tiny`: steps,
budgets and, where the line sets none, sizes and widths; Typer keeps an option's last value, so
``--iters 2000 ... --iters 2`` trains 2 steps) and the README's ports replaced by free ones.

* ``copymark ...`` lines run in process (:func:`copymark.cli.main`), in the block's folder;
* shell lines (``echo '...' > keys.json``) run with bash in that folder;
* servers (``copymark serve``, ``copymark study serve``) run as real subprocesses
  (``python -m copymark.cli``) on 127.0.0.1: a line ending in ``&`` serves until the end of its
  block, a line without it (it would run until Ctrl-C) is started, waited for, probed through
  its API and stopped (consecutive ones are started together, then probed in order);
* a line that names ``../shared/data`` runs when the shared data folder is beside the checkout
  (the block's folder gets ``../shared/data`` as a link to it) and is skipped otherwise, with
  the block's test reported as skipped after every other line has run and passed.

The blocks of FAST_BLOCKS run in the default tier; the others (10-60 s each on two busy cores)
are marked slow. A failure names the block, the README line and the command as it ran, with its
error output.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import torch
from tests.conftest import SHARED_DATA
from tests.readme_fixtures import (
    ROOT,
    Block,
    Step,
    block_ids,
    code_fences,
    readme_blocks,
    tiles,
    write_onnx_model,
    write_photos,
    write_tiles,
    write_translation_data,
    write_user_sr_module,
)
from tests.sample_images import write_classes

from copymark.cli import main
from copymark.data.samples import sample_names
from copymark.images import decode_image_bytes, encode_png, load_image, save_image, upscale_bicubic

BLOCKS = readme_blocks()
BY_ID: dict[str, Block] = dict(zip(block_ids(BLOCKS), BLOCKS, strict=True))

# --------------------------------------------------------------------------- tiny sizes


@dataclass(frozen=True)
class Tiny:
    """What is appended to a README line to make it tiny (Typer keeps an option's last value).

    ``always``: iteration counts, budgets and batch sizes, appended even when the line sets them
    (``--iters 2000 ... --iters 2`` trains 2 steps). ``unless_given``: sizes, widths and batches,
    appended only when the README line does not set that option itself (the line's own
    ``--size 128`` stays 128). Both are shell words (split with shlex).
    """

    always: str = ""
    unless_given: str = ""

    def args(self, argv: tuple[str, ...]) -> tuple[str, ...]:
        given = shlex.split(self.unless_given)
        pairs = list(zip(given[::2], given[1::2], strict=True))
        return (*shlex.split(self.always), *(a for flag, value in pairs if flag not in argv for a in (flag, value)))


def _json(obj: dict) -> str:
    return shlex.quote(json.dumps(obj))


P2P = _json({"generator": {"ngf": 8}, "discriminator": {"ndf": 8, "n_layers": 2}})
CYCLEGAN = _json({"generator": {"ngf": 8, "n_blocks": 1}, "discriminator": {"ndf": 8, "n_layers": 2}})
SRRESNET = _json({"generator": {"n_blocks": 1, "nf": 8}})
SRNET = _json({"c1": 4, "c2": 4, "c9": 4, "c10": 4, "c11": 4, "c12": 4})
EN2D = _json({"width": 4})

# By command. Each entry only shrinks what the line does (steps, budget, sizes, widths); none
# changes what is served, trained, attacked or measured.
OVERRIDES: dict[tuple[str, ...], Tiny] = {
    # 8 answers (one batch of the README's train line) instead of 500, of the README's 128 px crops
    ("extract",): Tiny(always="--budget 8"),
    # 2 steps; where the line gives none: 32 px (the UNet depth follows --size: 5 levels), batch 2,
    # 8 base channels
    ("train", "pix2pix"): Tiny(always="--iters 2", unless_given=f"--size 32 --batch-size 2 --net-config {P2P}"),
    # 2 steps at 32 px of a ResNet generator with one block and 8 base channels
    ("train", "cyclegan"): Tiny(always="--iters 2", unless_given=f"--size 32 --batch-size 2 --net-config {CYCLEGAN}"),
    # 2 steps on 32 px HR crops (8 px LR, x4) of a 1-block, 8-channel SRResNet
    ("train", "srresnet"): Tiny(always="--iters 2", unless_given=f"--size 32 --batch-size 2 --net-config {SRRESNET}"),
    # 2 of the README's 20,000 steps, batch 16 instead of 128 (108 images of 32 px)
    ("classifier", "train"): Tiny(always="--iters 2 --batch-size 16"),
    # a 4-channel En2D codec trained 2 steps, 32 triggers, 2 embedding steps (instead of 1,000
    # each and 500 triggers)
    ("protect",): Tiny(
        always="--codec-iters 2 --codec-batch-size 4 --codec-config "
        + _json({"codec": {"width": 4}})
        + " --triggers 32 --trigger-batch 8 --iters 2 --batch-size 16"
    ),
    # a 4-channel En2D trained 2 steps on pairs of 64 px images (the README's size: stego hide's default)
    ("stego", "train"): Tiny(always="--iters 2", unless_given=f"--batch-size 2 --net-config {EN2D}"),
    # an SRNet of 4 filters per layer trained 2 steps
    ("stego", "detect-train"): Tiny(always="--iters 2", unless_given=f"--batch-size 2 --net-config {SRNET}"),
}
# The README's ports, replaced by free ones in every command of a block (other tests and
# helpers use this machine at the same time); a server line without --port gets one too.
README_PORTS = (8000, 8001, 8080)
DEFAULT_PORT = 8000  # copymark serve's and copymark study serve's


def overrides(argv: tuple[str, ...]) -> tuple[str, ...]:
    if "--resume" in argv:  # a resumed run keeps its own config; --resume refuses another --iters or --size
        return ()
    tiny = next((OVERRIDES[p] for p in reversed(command_prefixes(argv)) if p in OVERRIDES), Tiny())
    return tiny.args(argv)


def command_prefixes(argv: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The line's leading words (before its first option), as prefixes: ``[("train",), ("train", "pix2pix")]``."""
    words = []
    for a in argv:
        if a.startswith("-"):
            break
        words.append(a)
    return [tuple(words[:k]) for k in range(1, len(words) + 1)]


def server_kind(argv: tuple[str, ...]) -> tuple[str, ...] | None:
    """``("serve",)`` or ``("study", "serve")`` for a line that starts a server, else None."""
    prefixes = command_prefixes(argv)
    return next((p for p in (("serve",), ("study", "serve")) if p in prefixes), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- running a block


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path
    step: Step
    kind: tuple[str, ...] | None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the server and its model worker
                self.proc.wait(10)
        try:  # a model worker left behind by a crash
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@dataclass
class Ctx:
    """A block's working folder and what its lines left: outputs, servers, skipped lines."""

    work: Path
    logs: Path
    capsys: pytest.CaptureFixture
    ports: dict[int, int] = field(default_factory=lambda: {p: free_port() for p in README_PORTS})
    servers: list[Server] = field(default_factory=list)
    out: dict[int, str] = field(default_factory=dict)  # stdout per README line
    skipped: list[str] = field(default_factory=list)

    def argv(self, step: Step, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The line's arguments with the README's ports replaced, then its overrides and ``extra``."""
        assert step.argv is not None
        ports = "|".join(map(str, self.ports))
        args = []
        for k, a in enumerate(step.argv):
            if k and step.argv[k - 1] == "--port" and int(a) in self.ports:
                a = str(self.ports[int(a)])
            args.append(re.sub(rf"(?<=127\.0\.0\.1:)({ports})\b", lambda m: str(self.ports[int(m.group(1))]), a))
        if server_kind(step.argv) and "--port" not in step.argv:
            # the default port, taken by no one else: the mapped one for a background server
            # (later lines reach it as 127.0.0.1:8000), a port of its own for a foreground one
            # (consecutive ones run at the same time)
            port = free_port() if foreground_server(step) else self.ports[DEFAULT_PORT]
            args += ["--port", str(port)]
        return (*args, *overrides(step.argv), *extra)

    def run(self, step: Step, extra: tuple[str, ...] = ()) -> str:
        """Run one README line; returns its stdout (a server line: starts it, see :meth:`serve`)."""
        if self.skip(step):
            return ""
        if step.argv is None:
            r = subprocess.run(["bash", "-c", step.text], cwd=self.work, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, f"{step}\nexit {r.returncode}\n{r.stderr[-3000:]}"
            return r.stdout
        argv = self.argv(step, extra)
        if server_kind(step.argv):
            self.ready(self.start(step, argv))
            return ""
        self.capsys.readouterr()
        rc = main(list(argv))
        cap = self.capsys.readouterr()
        assert rc == 0, f"{step}\nran as: copymark {shlex.join(argv)}\nexit {rc}\n{cap.err[-3000:]}"
        self.out[step.line] = cap.out
        return cap.out

    def run_servers(self, steps: list[Step]) -> None:
        """Consecutive README server lines: all started at once (they are independent), then each
        one waited for, probed and stopped in README order (server start-up is most of their time)."""
        started = [self.start(s, self.argv(s)) for s in steps if not self.skip(s)]
        for srv in started:
            self.ready(srv)

    def skip(self, step: Step) -> bool:
        """A line that names ``../shared/data`` when it is absent: recorded as skipped."""
        if "../shared/data" in step.text and not SHARED_DATA.exists():
            self.skipped.append(f"{step} (needs {SHARED_DATA}, the shared data folder beside the checkout)")
            return True
        return False

    def start(self, step: Step, argv: tuple[str, ...]) -> Server:
        """The server line as a real subprocess (``python -m copymark.cli``), its output in a log file."""
        port = int(argv[argv.index("--port") + 1])
        log = self.logs / f"serve-{step.line}.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(self.work)])}
        with log.open("wb") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "copymark.cli", *argv],
                cwd=self.work,
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stop() can end its model worker too
            )
        srv = Server(proc, f"http://127.0.0.1:{port}", log, step, server_kind(argv))
        self.servers.append(srv)
        return srv

    def ready(self, srv: Server) -> None:
        """Wait until it answers; a line without ``&`` (it would serve until Ctrl-C) is then probed and stopped."""
        wait_ready(srv, "/healthz" if srv.kind == ("study", "serve") else "/v1/health", timeout=180)
        if not srv.step.background:
            try:
                WHILE_SERVING[srv.kind](self, srv)
            finally:
                srv.stop()
                self.servers.remove(srv)

    def stop_all(self) -> None:
        for srv in self.servers:
            srv.stop()
        self.servers.clear()


def foreground_server(step: Step) -> bool:
    return step.argv is not None and server_kind(step.argv) is not None and not step.background


def in_groups(steps: list[Step]) -> list[list[Step]]:
    """Each line alone, except consecutive foreground server lines, which form one group."""
    groups: list[list[Step]] = []
    for s in steps:
        if groups and foreground_server(s) and foreground_server(groups[-1][-1]):
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def wait_ready(srv: Server, path: str, timeout: float) -> None:
    """Poll ``GET url+path`` until 200; fail with the server's log if it exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(srv.url + path, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if srv.proc.poll() is not None:
            pytest.fail(f"{srv.step}\nthe server exited with status {srv.proc.returncode}:\n{srv.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{srv.step}\nnot answering {path} after {timeout:g} s:\n{srv.tail()}")
        time.sleep(0.2)


def step(block_id: str, prefix: str) -> Step:
    """The one line of a README block that is ``prefix`` or starts with ``prefix`` and a space (setups reuse README lines)."""
    found = [s for s in BY_ID[block_id].steps if s.text == prefix or s.text.startswith(prefix + " ")]
    assert len(found) == 1, f"README block {block_id!r}: {len(found)} lines start with {prefix!r}"
    return found[0]


# --------------------------------------------------------------------------- probes of foreground servers


def _first_key(ctx: Ctx) -> str:
    return next(iter(json.loads((ctx.work / "keys.json").read_text())))


def probe_victim(ctx: Ctx, srv: Server) -> None:
    """One 32 px image translated through the API: 200, and an answer of the size its /v1/info declares."""
    info = httpx.get(f"{srv.url}/v1/info", timeout=30).json()
    x = tiles("chelsea", 32, max_side=96)[0]
    r = httpx.post(
        f"{srv.url}/v1/translate",
        content=encode_png(x),
        headers={"Authorization": f"Bearer {_first_key(ctx)}"},
        timeout=120,
    )
    assert r.status_code == 200, f"{srv.step}\n{r.status_code} {r.text}\n{srv.tail()}"
    assert decode_image_bytes(r.content).shape == (3, 32 * info["scale"], 32 * info["scale"]), info


def take_part(ctx: Ctx, srv: Server) -> None:
    """Two participants rate every image they are shown, through the served study (for `study analyze`)."""
    for pid in ("P-1", "P-2"):
        with httpx.Client(base_url=srv.url, follow_redirects=True, timeout=30) as c:
            assert c.get("/", params={"pid": pid}).status_code == 200
            r = c.post("/consent", data={"agree": "yes", "pid": pid})
            assert r.url.path == "/instructions", r.text[-500:]
            r = c.get("/rate")
            for k in range(100):
                if r.url.path == "/done":
                    break
                fields = dict(re.findall(r'name="(position|item_id|nonce)" value="([^"]+)"', r.text))
                r = c.post("/rate", data={**fields, "score": str(1 + k % 5)})
                assert r.status_code == 200, r.text[-500:]
            assert r.url.path == "/done"


WHILE_SERVING: dict[tuple[str, ...], Callable[[Ctx, Server], None]] = {
    ("serve",): probe_victim,
    ("study", "serve"): take_part,
}


# --------------------------------------------------------------------------- per-block fixtures and checks


@dataclass
class BlockSpec:
    setup: Callable[[Ctx], None] = lambda ctx: None  # fixtures, before the first line
    after: dict[str, Callable[[Ctx], None]] = field(default_factory=dict)  # after the line with this exact text
    check: Callable[[Ctx], None] = lambda ctx: None  # what the block made, after its last line


def _steal_setup(ctx: Ctx) -> None:
    # disjoint, as the README says: the attacker's photos, the test photos, the owner's style examples
    write_photos(ctx.work / "my_photos", ("chelsea", "coffee", "rocket"), max_side=256)  # >= --size 128
    write_tiles(ctx.work / "test_photos", ("astronaut", "china", "immunohistochemistry"), 128, 3)
    write_tiles(ctx.work / "style_examples", ("flower", "hubble_deep_field"), 64, 4, "style")  # unpaired: other stems


def _steal_check(ctx: Ctx) -> None:
    from copymark.client.store import QueryStore

    with QueryStore(ctx.work / "store") as store:
        assert store.integrity_check().ok and len(store.pairs()) == 8
    assert (ctx.work / "runs/surrogate/config.json").is_file()
    metrics = json.loads((ctx.work / "runs/eval/metrics.json").read_text())
    assert metrics, "evaluate wrote no metrics"
    html = (ctx.work / "runs/eval/report.html").read_text()
    assert "8 of 8" in html and "diverse" in html  # the queries spent of the budget, and the strategy


def _serve_own_setup(ctx: Ctx) -> None:
    ctx.run(step("steal-an-image-translation-model-through-its-api", "echo"))  # the README's keys.json
    write_translation_data(ctx.work / "DIR")
    ctx.run(step("train-and-run-image-translation-models", "copymark train pix2pix --data DIR --run-dir runs/p2p"))
    write_user_sr_module(ctx.work)
    write_onnx_model(ctx.work / "model.onnx")
    write_tiles(ctx.work / "faces", ("astronaut",), 32, 2)


def _serve_own_check(ctx: Ctx) -> None:
    faces, anime = sorted((ctx.work / "faces").iterdir()), sorted((ctx.work / "anime").glob("*.png"))
    assert [p.stem for p in anime] == [p.stem for p in faces]
    assert load_image(anime[0]).shape == load_image(faces[0]).shape


def _store_check_setup(ctx: Ctx) -> None:
    steal = "steal-an-image-translation-model-through-its-api"
    ctx.run(step(steal, "echo"))
    write_photos(ctx.work / "my_photos", ("chelsea", "coffee", "rocket"), max_side=256)
    ctx.run(step(steal, "copymark serve"))  # serves until the end of the block
    ctx.run(step(steal, "copymark extract"))


def _damage_an_answer(ctx: Ctx) -> None:
    """Between the two lines: one stored answer damaged, as the repair line is for."""
    from copymark.client.store import QueryStore

    with QueryStore(ctx.work / "store") as store:
        answer = store.pairs()[0][1]
    answer.write_bytes(answer.read_bytes()[:-7])
    ctx.damaged = answer  # type: ignore[attr-defined]


def _store_check_check(ctx: Ctx) -> None:
    from copymark.client.store import QueryStore

    with QueryStore(ctx.work / "store") as store:
        assert store.integrity_check().ok and len(store.pairs()) == 8
    assert decode_image_bytes(ctx.damaged.read_bytes()).shape == (3, 128, 128)  # type: ignore[attr-defined]


def _train_setup(ctx: Ctx) -> None:
    write_translation_data(ctx.work / "DIR")
    write_tiles(ctx.work / "HR_DIR", ("china", "flower"), 48, 6)
    write_photos(ctx.work / "photos", ("coffee", "rocket"), max_side=64)


def _train_check(ctx: Ctx) -> None:
    for run in ("p2p", "cg", "sr", "p2p-4000"):
        assert any((ctx.work / "runs" / run / "checkpoints").iterdir()), run
    show = ctx.out[step("train-and-run-image-translation-models", "copymark nets show").line]
    assert "generator.num_downs" in show
    assert sorted(p.stem for p in (ctx.work / "out").glob("*.png")) == ["coffee", "rocket"]


def _metrics_setup(ctx: Ctx) -> None:
    set5 = SHARED_DATA / "sr" / "Set5"
    if set5.exists():  # results/: bicubic x4 of Set5's LR images, named like their HR images
        for lr in sorted((set5 / "LR_x4").glob("*.png")):
            save_image(upscale_bicubic(load_image(lr), 4), ctx.work / "results" / lr.name)


def _metrics_check(ctx: Ctx) -> None:
    if (ctx.work / "metrics.json").exists():
        res = json.loads((ctx.work / "metrics.json").read_text())
        # the README: "bicubic x4 on Set5 gives the published 28.42 dB" (SelfExSR's figure, 2 decimals)
        assert abs(res["metrics"]["psnr"]["mean"] - 28.42) < 0.05 and "swd" in json.dumps(res)


def _study_setup(ctx: Ctx) -> None:
    # 20 paired outputs (study create's default --per-participant is 20) and two style examples
    write_tiles(ctx.work / "victim", ("coffee",), 24, 20, "img")
    write_tiles(ctx.work / "surrogate", ("chelsea",), 24, 20, "img")
    write_tiles(ctx.work / "style", ("flower",), 24, 2, "style")
    shutil.copy(ROOT / "tests/study/data/extraction_study_summary.json", ctx.work / "summary.json")


def _study_check(ctx: Ctx) -> None:
    analyzed = [json.loads(p.read_text()) for p in (ctx.work / "study/analysis").glob("*/metrics.json")]
    assert len(analyzed) == 1 and analyzed[0]["victim"]["n"] == analyzed[0]["surrogate"]["n"] == 20
    assert len((ctx.work / "sim.csv").read_text().splitlines()) > 125


WATERMARK = "prove-that-a-classifier-is-yours-blind-watermark-ownership"


def _watermark_setup(ctx: Ctx) -> None:
    # nine classes (one photograph each): barely trained null models answer near-constantly, so they agree
    # with a trigger's label (never its cover's class nor the host's answer) about 1 time in 7, and
    # 2 x 32 triggers bound that rate below verify's p1 = 0.5 (with four classes they would not)
    write_classes(ctx.work / "data/cifar10", tuple(sample_names()), per_class=12)
    write_tiles(ctx.work / "logos", ("flower", "hubble_deep_field", "immunohistochemistry", "retina"), 32, 8, "logo")
    # the independently trained null models verify calibrate names: the README's own training line
    train = step(WATERMARK, "copymark classifier train")
    for k in (1, 2):
        ctx.run(train, extra=("--run-dir", f"runs/null-{k}", "--seed", str(k)))


def _watermark_check(ctx: Ctx) -> None:
    protect = ctx.out[step(WATERMARK, "copymark protect").line]
    assert "sha256:" in protect  # the commitment to publish
    cal = json.loads((ctx.work / "calibration.json").read_text())
    assert cal["trials"] == 2 * 32 and cal["p0_upper"] < 0.5, cal  # two null models, 32 triggers each
    verify, _ = json.JSONDecoder().raw_decode(ctx.out[step(WATERMARK, "copymark verify --kit").line])
    assert verify["verdict"] in ("owned", "not owned", "undecided") and 1 <= verify["queries"] <= 32, verify
    assert verify["p0"] == cal["p0_upper"] and (ctx.work / "runs/verify/metrics.json").is_file()


def _stego_setup(ctx: Ctx) -> None:
    # stego train holds out 16 of each folder, detect-train 64 cover/stego pairs (their defaults): 72 covers
    write_tiles(ctx.work / "covers", ("astronaut", "chelsea", "coffee", "rocket"), 64, 72, "c")
    write_tiles(ctx.work / "secrets", ("flower", "hubble_deep_field", "immunohistochemistry", "retina"), 64, 24, "s")
    write_tiles(ctx.work / "suspects", ("china",), 64, 3, "x")


def _stego_check(ctx: Ctx) -> None:
    covers, stegos = sorted((ctx.work / "covers").iterdir()), sorted((ctx.work / "stegos").glob("*.png"))
    assert [p.stem for p in stegos] == [p.stem for p in covers]
    detect = ctx.out[step("steganography-and-steganalysis", "copymark stego detect").line]
    summary = json.loads(detect)
    assert summary["images"] == 3 and 0 <= summary["input_flagged_rate"] <= 1, summary


SPECS: dict[str, BlockSpec] = {
    "steal-an-image-translation-model-through-its-api": BlockSpec(_steal_setup, check=_steal_check),
    "serve-your-own-model": BlockSpec(_serve_own_setup, check=_serve_own_check),
    "serve-your-own-model-2": BlockSpec(
        _store_check_setup, after={"copymark store check --store store/": _damage_an_answer}, check=_store_check_check
    ),
    "train-and-run-image-translation-models": BlockSpec(_train_setup, check=_train_check),
    "measure-image-quality": BlockSpec(_metrics_setup, check=_metrics_check),
    "run-a-user-study": BlockSpec(_study_setup, check=_study_check),
    WATERMARK: BlockSpec(_watermark_setup, check=_watermark_check),
    "steganography-and-steganalysis": BlockSpec(_stego_setup, check=_stego_check),
}

# README lines that this test does not run, each with its reason (matched against the line as
# written, without its comment). test_every_readme_line_is_run_or_listed fails on a line that is
# neither run nor listed here, and on a listed line the README no longer has.
NOT_RUN: dict[str, str] = {
    "make demo": "creates .venv and pip-installs copymark (network, minutes), then runs `copymark demo`, which "
    "tests/extraction/test_demo.py runs at full size in the slow tier (and tiny in the default tier)",
    "make test": "runs the whole default test suite (this test included) after `make lint`; it is what runs this test",
    "copymark reproduce extraction-tables --config configs/reproduce/tiny.json --run-dir runs/reproduce-tiny": (
        "runs ../shared/data victims for about 2-3 minutes: tests/extraction/test_extraction_reproduce_slow.py runs "
        "this very config end to end (and its resume) in the slow tier"
    ),
    "python benchmarks/train_victims.py --victim cyclegan-photo2monet --victim ugatit-selfie2anime --out "
    "runs/victims --iters 400": "trains two GAN victims for an hour or more on CPU (a benchmark, not a test)",
    "copymark reproduce extraction-tables --config configs/reproduce/cpu.json --run-dir runs/reproduce-cpu": (
        "the CPU reproduction takes over an hour (benchmarks/results/reproduce_cpu.md); its config is parsed and "
        "checked by tests/extraction/test_extraction_reproduce.py"
    ),
}


def run_steps(block: Block) -> list[Step]:
    return [s for s in block.steps if s.text not in NOT_RUN]


RUN_BLOCKS = [i for i, b in BY_ID.items() if run_steps(b)]
# Blocks that run in a few seconds stay in the default tier; the others train or serve several
# nets (10-60 s each on 2 busy cores) and run with `make test-slow`.
FAST_BLOCKS = {"measure-image-quality", "run-a-user-study"}


def test_readme_code_blocks_are_bash():
    """Only ```bash blocks are extracted: a block in another language would be silently skipped."""
    other = [(n, lang) for n, lang in code_fences() if lang != "bash"]
    assert not other, f"README.md code blocks that are not ```bash (write shell commands as ```bash): {other}"


def test_every_readme_line_is_run_or_listed():
    """Each line of each ```bash block is run by a block test or listed in NOT_RUN with a reason."""
    assert sorted(SPECS) == sorted(RUN_BLOCKS), (
        f"README blocks with lines to run: {sorted(RUN_BLOCKS)}; with a BlockSpec: {sorted(SPECS)} "
        "(add a BlockSpec for a new README block, or list its lines in NOT_RUN with the reason)"
    )
    lines = {s.text for b in BLOCKS for s in b.steps}
    stale = sorted(set(NOT_RUN) - lines)
    assert not stale, f"NOT_RUN lists lines the README no longer has: {stale}"
    for block_id, spec in SPECS.items():
        texts = [s.text for s in BY_ID[block_id].steps]
        for text in spec.after:
            assert text in texts, f"{block_id}: no README line {text!r} to run a hook after"
    assert sum(len(run_steps(b)) for b in BLOCKS) + len(NOT_RUN) == sum(len(b.steps) for b in BLOCKS)


def test_readme_lines_are_extracted_as_the_shell_reads_them(tmp_path):
    """Continuations joined, a quoted newline kept, trailing comments dropped, `&` seen, headings tracked."""
    readme = tmp_path / "README.md"
    readme.write_text(
        "# t\n\n## Usage\n\n### Serve\n\n```bash\n# a comment line\n"
        'echo \'{"a": 1,\n      "b#2": 2}\' > keys.json\n'
        "copymark serve --victim 'x?a=1&b=2' --port 8000 &   # in the background\n"
        "copymark extract --victim-url http://127.0.0.1:8000 \\\n    --budget 5\n```\n\nText.\n\n"
        "```bash\nmake demo\n```\n"
    )
    blocks = readme_blocks(readme)
    assert [(b.heading, b.line) for b in blocks] == [("Serve", 7), ("Serve", 18)]
    echo, serve, extract = blocks[0].steps
    assert (echo.line, echo.argv, echo.background) == (9, None, False)
    assert echo.text == 'echo \'{"a": 1,\n      "b#2": 2}\' > keys.json'
    assert serve.argv == ("serve", "--victim", "x?a=1&b=2", "--port", "8000") and serve.background
    assert extract.line == 12 and extract.argv == ("extract", "--victim-url", "http://127.0.0.1:8000", "--budget", "5")
    assert blocks[1].steps[0].argv is None and block_ids(blocks) == ["serve", "serve-2"]
    assert code_fences(readme) == [(7, "bash"), (18, "bash")]


def test_tiny_overrides_keep_the_readme_s_own_sizes():
    line = ("train", "pix2pix", "--from-store", "s/", "--size", "128", "--iters", "2000", "--batch-size", "8")
    added = overrides(line)
    assert added[:2] == ("--iters", "2") and "--size" not in added and "--batch-size" not in added
    assert overrides(("train", "pix2pix", "--data", "D"))[2:6] == ("--size", "32", "--batch-size", "2")
    assert overrides(("train", "pix2pix", "--run-dir", "r", "--resume")) == ()
    assert overrides(("metrics", "--pred", "p")) == ()


@pytest.fixture
def _one_thread():
    """Tiny nets run faster on one thread, and far faster when the shared cores are busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.usefixtures("_one_thread")
@pytest.mark.parametrize(
    "block_id", [pytest.param(b, marks=() if b in FAST_BLOCKS else pytest.mark.slow) for b in RUN_BLOCKS]
)
def test_readme_block_runs_as_written(block_id, tmp_path, monkeypatch, capsys):
    block, spec = BY_ID[block_id], SPECS[block_id]
    work = tmp_path / "work"
    work.mkdir()
    if SHARED_DATA.exists():  # ../shared/data, as beside the checkout
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / "data").symlink_to(SHARED_DATA.resolve())
    logs = tmp_path / "logs"
    logs.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))  # a python: factory module, for in-process lines
    ctx = Ctx(work, logs, capsys)
    try:
        spec.setup(ctx)
        for group in in_groups(run_steps(block)):
            if len(group) > 1:
                ctx.run_servers(group)
            else:
                ctx.run(group[0])
            for s in group:
                if s.text in spec.after:
                    spec.after[s.text](ctx)
        spec.check(ctx)
    finally:
        ctx.stop_all()
    if ctx.skipped:
        pytest.skip("every other line ran; skipped: " + "; ".join(ctx.skipped))
