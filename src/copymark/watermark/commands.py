"""``copymark protect`` and ``copymark kit ...``: watermark a classifier; the owner's key and kit.

* ``protect``     watermark a classifier (ACSAC19, E2E-Extraction, Two-Phase) and write the
  protected model and the signed ownership kit (:mod:`copymark.watermark.protect`)
* ``kit keygen``  a new Ed25519 key pair (the private key signs kits; publish the public key)
* ``kit check``   check a kit (every hash, the signature, optionally the trusted key or
  commitment) and print its commitment
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

kit_app = typer.Typer(help="The owner's signing key and the signed ownership kit.", no_args_is_help=True)


@kit_app.command("keygen")
def keygen_cmd(
    out: Path = typer.Option(
        ..., "--out", help="private key file to create (PEM, mode 0600); the public key goes to OUT.pub"
    ),
    passphrase_env: str = typer.Option(
        "COPYMARK_KIT_PASSPHRASE",
        "--passphrase-env",
        help="environment variable holding a passphrase to encrypt the key (unset: unencrypted)",
    ),
) -> None:
    """Create the owner's Ed25519 key pair. Keep the private key secret; publish the public key."""
    from copymark.watermark.kit import generate_keypair, load_public_key

    pub = generate_keypair(out, passphrase=os.environ.get(passphrase_env) or None)
    typer.echo(f"private key: {out}\npublic key:  {pub}\n{load_public_key(pub)}")


@kit_app.command("check")
def check_cmd(
    kit: Path = typer.Argument(..., help="the kit folder"),
    public_key: Path | None = typer.Option(None, "--public-key", help="the owner's public key (.pub) to trust"),
    commitment: str | None = typer.Option(
        None, "--commitment", help="the commitment published before the dispute (sha256:...)"
    ),
) -> None:
    """Check every file's hash and the signature of an ownership kit; print its commitment."""
    from copymark.watermark.kit import load_kit

    k = load_kit(kit, trusted_public_key=public_key, commitment=commitment)
    m = k.manifest
    trust = (
        "trusted key"
        if public_key
        else ("committed" if commitment else "self-signed only: pass --public-key or --commitment")
    )
    typer.echo(f"kit {kit}: {len(m.triggers)} triggers, {m.method}, {m.model.num_classes} classes, intact ({trust})")
    typer.echo(k.commitment)


PROTECT_HELP = """Watermark an image classifier with blind-watermark triggers and write the ownership kit.

Methods: acsac19 (hiding net + steganalyzer discriminator + host trained end to end, Li et al. 2019), e2e-extraction (hiding net + secret extractor + host end to end; the secret can be recovered from a trigger), two-phase (train the host, train a codec, make the triggers, fine-tune the host on main data plus triggers).

--data DIR holds class folders (DIR/CLASS/ split 8:1:1, or DIR/train/ + DIR/test/, as `copymark classifier train`); covers are drawn from the train split by --seed; --secrets DIR holds the secret images (apart from the data; resized to the image size). Verification labels are never the cover's class nor an unprotected model's answer. --key is the owner's private key (`copymark kit keygen`).

Phases (each resumable, in RUN/): host/ (the unprotected host, unless --host RUN_OR_CKPT), codec-run/ (two-phase, unless --codec CKPT|lsb), embed/ (the embedding run). Then RUN/model (the protected classifier), RUN/codec, RUN/kit (signed: triggers, secrets, cover ids and classes, labels, codec, the model's identity), RUN/commitment.txt, RUN/visibility.png and metrics.json (accuracy before/after, trigger accuracy, trigger PSNR/SSIM, recovered-secret PSNR/SSIM). The commitment is printed last: publish it.

Everything (key, device, data, secrets, counts, a given host or codec) is checked before the run folder is created. Method settings: --method-config JSON (e.g. '{"w_ssim": 5, "discriminator": {"kind": "yenet"}, "host_optim": {"lr": 0.05}}'), host training: --host-config (as `copymark classifier train --net-config`), codec training: --codec-config (e.g. '{"codec": {"width": 32}, "lr": 0.001}').
"""


def _split_arg(text: str) -> tuple[float, float, float]:
    from copymark.train.classifier_commands import _split

    return _split(text)


def protect_cmd(
    method: str | None = typer.Option(None, "--method", help="acsac19, e2e-extraction or two-phase"),
    data: Path | None = typer.Option(None, "--data", help="class folders of the host's task"),
    secrets: Path | None = typer.Option(None, "--secrets", help="folder of secret images (apart from --data)"),
    run_dir: Path = typer.Option(..., "--run-dir", help="run folder to create (or to continue with --resume)"),
    key: Path | None = typer.Option(None, "--key", help="the owner's private key (PEM) that signs the kit"),
    passphrase_env: str = typer.Option(
        "COPYMARK_KIT_PASSPHRASE", "--passphrase-env", help="environment variable holding the key's passphrase"
    ),
    host: Path | None = typer.Option(None, "--host", help="a trained unprotected host (classifier run or checkpoint)"),
    net: str = typer.Option("resnet18", "--net", help="host architecture when training one: resnet18 or small_cnn"),
    host_config: str | None = typer.Option(None, "--host-config", help="JSON merged into the host's training config"),
    host_iters: int = typer.Option(1000, "--host-iters", help="iterations of the unprotected host's training"),
    start_from: str = typer.Option(
        "scratch",
        "--start-from",
        help="end-to-end methods: the host starts from scratch (the reference) or unprotected",
    ),
    codec: str | None = typer.Option(
        None, "--codec", help="two-phase: a trained codec checkpoint (or lsb); end-to-end: a codec to start from"
    ),
    codec_kind: str = typer.Option(
        "en2d", "--codec-kind", help="codec to train (two-phase) or hiding net (end to end)"
    ),
    codec_config: str | None = typer.Option(
        None, "--codec-config", help="JSON merged into the codec's training config"
    ),
    codec_iters: int = typer.Option(1000, "--codec-iters", help="two-phase: iterations of the codec's training"),
    codec_batch_size: int | None = typer.Option(
        None, "--codec-batch-size", help="default: the study's (En2D 30, GglNet 20)"
    ),
    codec_covers: int | None = typer.Option(None, "--codec-covers", help="two-phase: covers the codec trains on"),
    method_config: str | None = typer.Option(None, "--method-config", help="JSON merged into the method's config"),
    triggers: int = typer.Option(500, "--triggers", help="number of triggers (the reference: 500)"),
    trigger_batch: int | None = typer.Option(None, "--trigger-batch", help="triggers per main batch [default 20]"),
    iters: int = typer.Option(1000, "--iters", help="iterations of the embedding phase"),
    batch_size: int = typer.Option(100, "--batch-size", help="main-task batch (the reference: 100)"),
    size: int | None = typer.Option(None, "--size", help="image side in px [default: the first image's]"),
    split: str = typer.Option("8:1:1", "--split", help="train:val:test ratios"),
    split_salt: str = typer.Option("", "--split-salt"),
    resize_policy: str = typer.Option("error", "--resize-policy", help="error, resize or center_crop"),
    seed: int = typer.Option(0, "--seed", help="seed of covers, secrets' order, labels and every phase"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N"),
    amp: str = typer.Option("off", "--amp", help="off, bf16 or fp16 (CUDA)"),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes"),
    save_every: int = typer.Option(0, "--save-every", help="checkpoint every N iterations in each phase"),
    resume: bool = typer.Option(False, "--resume", help="continue the protection in --run-dir"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    from rich.console import Console

    from copymark.config import parse_json_arg
    from copymark.errors import ConfigError
    from copymark.watermark.protect import check_key_file, make_protect_config, protect

    console = Console(stderr=True)
    say = lambda msg: console.print(f"[bold]protect:[/] {msg}", highlight=False)  # noqa: E731
    passphrase = os.environ.get(passphrase_env) or None
    if resume:
        out = protect(None, run_dir, passphrase, resume=True, say=say)
    else:
        from copymark.runs import check_new_run_dir

        for value, flag in ((method, "--method"), (data, "--data"), (secrets, "--secrets"), (key, "--key")):
            if value is None:
                raise ConfigError(f"missing {flag}", hint="see `copymark protect --help`")
        check_new_run_dir(run_dir)
        check_key_file(key)  # type: ignore[arg-type]
        cfg = make_protect_config(
            method, data, secrets, key, net=net, host_from=host,  # type: ignore[arg-type]
            host_overrides=parse_json_arg(host_config, "--host-config", '{"optim": {"lr": 0.05}}'),
            codec_from=codec, codec_kind=codec_kind,
            codec_overrides=parse_json_arg(codec_config, "--codec-config", '{"codec": {"width": 32}}'),
            method_overrides=parse_json_arg(method_config, "--method-config", '{"w_ssim": 5}'),
            size=size, split=_split_arg(split), salt=split_salt, resize_policy=resize_policy, triggers=triggers,
            trigger_batch=trigger_batch, start_from=start_from, codec_covers=codec_covers, seed=seed,
            batch_size=batch_size, iters=iters, host_iters=host_iters, codec_iters=codec_iters,
            codec_batch_size=codec_batch_size, device=device, amp=amp, num_workers=workers, save_every=save_every,
            progress=progress,
        )  # fmt: skip
        out = protect(cfg, run_dir, passphrase, say=say)
    brief = {k: out.get(k) for k in ("method", "accuracy_before", "accuracy_after", "trigger_accuracy",
                                      "unprotected_agreement", "kit", "model")}  # fmt: skip
    brief["trigger_psnr"] = (out.get("trigger_psnr") or {}).get("mean")
    if "secret_psnr" in out:
        brief["secret_psnr"] = out["secret_psnr"]["mean"]
    typer.echo(json.dumps(brief, indent=2))
    typer.echo(f"commitment: {out.get('commitment')}")


verify_app = typer.Typer(
    help="Verify ownership of a suspect classifier with an ownership kit (and calibrate the null rate).",
    invoke_without_command=True,
)


@verify_app.callback()
def verify_cmd(
    ctx: typer.Context,
    kit: Path | None = typer.Option(None, "--kit", help="the ownership kit folder `copymark protect` wrote"),
    model: Path | None = typer.Option(None, "--model", help="the suspect: a classifier checkpoint or run folder"),
    model_url: str | None = typer.Option(None, "--model-url", help="the suspect: base URL of a served classifier"),
    api_key: str | None = typer.Option(None, "--api-key", envvar="COPYMARK_API_KEY", help="API key for --model-url"),
    calibration: Path | None = typer.Option(None, "--calibration", help="null-model calibration (`verify calibrate`)"),
    p0: float | None = typer.Option(
        None, "--p0", help="the null agreement rate, if not calibrated (recorded as given)"
    ),
    p1: float = typer.Option(0.5, "--p1", help="the trigger accuracy that counts as owned (H1: p >= p1)"),
    alpha: float = typer.Option(1e-6, "--alpha", help="the largest false-claim probability of an 'owned' verdict"),
    beta: float = typer.Option(
        1e-3, "--beta", help="the largest probability of declaring a protected model 'not owned'"
    ),
    max_queries: int | None = typer.Option(None, "--max-queries", help="stop after this many triggers (default: all)"),
    public_key: Path | None = typer.Option(None, "--public-key", help="the owner's public key to trust (.pub)"),
    commitment: str | None = typer.Option(None, "--commitment", help="the kit's published commitment (sha256:...)"),
    seed: int = typer.Option(0, "--seed", help="seed of the order in which triggers are sent"),
    batch: int = typer.Option(8, "--batch", help="triggers sent per round (the decision is checked after each answer)"),
    concurrency: int = typer.Option(4, "--concurrency", help="requests in flight (--model-url)"),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="run folder (default runs/verify-DATE-TIME; rerun to resume)"
    ),
    device: str = typer.Option("cpu", "--device"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Send the kit's triggers to a suspect in a seeded random order and decide, as soon as the
    evidence allows, whether it is the protected model.

    The verdict ("owned", "not owned" or "undecided") comes with its false-claim probability: the
    probability that an independently trained model would give evidence this strong, bounded at
    any stopping time by Ville's inequality (Wald's sequential test), with the null agreement rate
    measured on null models (`copymark verify calibrate`), never assumed to be 1/K. The record
    (trigger accuracy with its 95% CI, queries spent, the test's trace, recovered secrets) goes to
    RUN_DIR/metrics.json.
    """
    if ctx.invoked_subcommand is not None:
        return
    import json

    from copymark.config import parse_config
    from copymark.errors import ConfigError
    from copymark.watermark.verify import VerifyConfig, verify

    if kit is None:
        raise ConfigError(
            "missing --kit", hint="copymark verify --kit KIT (--model CKPT | --model-url URL --api-key KEY)"
        )
    cfg = parse_config(VerifyConfig, {
        "kit": kit, "model": model, "model_url": model_url, "calibration": calibration, "p0": p0, "p1": p1,
        "alpha": alpha, "beta": beta, "max_queries": max_queries, "public_key": public_key, "commitment": commitment,
        "order_seed": seed, "batch": batch, "concurrency": concurrency, "device": device,
    }, where="verify options")  # fmt: skip
    rec = verify(cfg, api_key=api_key, run_dir=run_dir, progress=progress)
    fc = rec["false_claim_probability"]
    acc = rec["trigger_accuracy"]
    typer.echo(json.dumps({
        "verdict": rec["verdict"], "false_claim_probability": fc["bound"], "queries": rec["queries"],
        "trigger_accuracy": acc["value"], "trigger_accuracy_ci95": acc["ci95"], "p0": fc["p0"],
        "recovered_secret_psnr": (rec.get("recovered_secrets") or {}).get("psnr", {}).get("mean"),
    }, indent=2))  # fmt: skip
    typer.echo(rec["statement"])


@verify_app.command("calibrate")
def calibrate_cmd(
    kit: Path = typer.Option(..., "--kit", help="the ownership kit folder"),
    null_model: list[Path] = typer.Option(
        ..., "--null-model", help="an independently trained, unprotected classifier (repeat; 10+ advised)"
    ),
    out: Path = typer.Option(..., "--out", help="the calibration JSON to write"),
    confidence: float = typer.Option(
        0.999, "--confidence", help="confidence of the one-sided upper bound of the null rate"
    ),
    public_key: Path | None = typer.Option(None, "--public-key"),
    commitment: str | None = typer.Option(None, "--commitment"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Measure how often independently trained models answer the kit's triggers with its labels;
    the one-sided Clopper-Pearson upper bound of that rate is the p0 `copymark verify` tests against."""
    from copymark.watermark.verify import calibrate

    cal = calibrate(
        kit, null_model, out, public_key=public_key, commitment=commitment, confidence=confidence, device=device
    )
    typer.echo(f"{cal.describe()}; wrote {out}")


def register(app: typer.Typer) -> None:
    """Add ``copymark protect``, ``copymark kit ...`` and ``copymark verify [calibrate]`` to ``app``."""
    app.command("protect", help=PROTECT_HELP)(protect_cmd)
    app.add_typer(kit_app, name="kit")
    app.add_typer(verify_app, name="verify")
