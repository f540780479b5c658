"""``copymark kit ...``: the owner's signing key and the ownership kit.

* ``kit keygen``  a new Ed25519 key pair (the private key signs kits; publish the public key)
* ``kit check``   check a kit (every hash, the signature, optionally the trusted key or
  commitment) and print its commitment
"""

from __future__ import annotations

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


def register(app: typer.Typer) -> None:
    """Add ``copymark kit ...`` to ``app``."""
    app.add_typer(kit_app, name="kit")
