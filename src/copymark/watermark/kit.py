"""The ownership kit: tamper-evident, signed evidence that a classifier is the owner's.

An owner who protects a classifier (``copymark protect``) keeps a *kit*: everything needed to
verify ownership later, and nothing that runs code when loaded::

    KIT/
      manifest.json     what the kit holds (below), with the SHA-256 of every other file
      manifest.sig      Ed25519 signature of the exact bytes of manifest.json
      triggers/*.png    the trigger (stego) images sent to a suspect model
      secrets/*.png     the secret images hidden in them (one file per distinct secret)
      codec/            the codec checkpoint (model.safetensors + config.json), when learned

``manifest.json`` records the format, the protection method, the protected model's identity
(a fingerprint of its weights, its class count, input size and class names), the codec, every
trigger (id, the cover's id and class, the verification label, the trigger and secret files),
the owner's public key, and ``files``: the SHA-256 of every file in the kit but the manifest and
its signature.

**Commitment.** ``sha256:<hex>`` of manifest.json is a one-line commitment an owner can publish
(or timestamp) before any dispute: a kit later shown with that commitment cannot have been
changed since, and since the manifest hashes every file, neither can any trigger or label.

**Loading** (:func:`load_kit`) checks, and refuses with the name of the offending file: a
missing manifest or signature, a signature that does not verify with the manifest's public key,
a public key or commitment other than the one the verifier trusts (when given), a file whose
hash differs, a file the manifest lists that is missing, a file it does not list (extra), a
path that leaves the kit, and any file type but PNG, JSON and safetensors (no pickle anywhere
in a kit). The signature alone proves only that the kit is consistent with the key inside it;
what ties a kit to its owner is a public key or commitment published beforehand, so verifiers
should pass ``trusted_public_key`` or ``commitment``.

Keys (:func:`generate_keypair`, ``copymark kit keygen``) are Ed25519 (the ``cryptography``
package), stored as PEM: the private key PKCS#8 (encrypted when a passphrase is given,
file mode 0600), the public key SubjectPublicKeyInfo.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from pydantic import Field, ValidationError

from copymark.config import StrictModel, format_validation_error
from copymark.errors import CopymarkError, DataError
from copymark.files import atomic_write_bytes

KIT_FORMAT = "copymark-ownership-kit/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
ALLOWED_SUFFIXES = (".png", ".json", ".safetensors")


class KitError(CopymarkError):
    """An ownership kit is missing, incomplete, tampered with, or does not fit the model."""


# ---------------------------------------------------------------------------------------------
# the manifest


class ModelIdentity(StrictModel):
    """What identifies the protected model: a fingerprint of its weights and its interface."""

    fingerprint: str = Field(description="sha256 of the weights (see weights_fingerprint)")
    num_classes: int = Field(ge=2)
    input_size: int = Field(ge=8, description="side of the square input images, px")
    class_names: list[str] = Field(default_factory=list)


class CodecRecord(StrictModel):
    kind: str
    folder: str | None = Field(None, description="relative folder of the codec checkpoint; None for lsb")
    config: dict[str, Any] = Field(default_factory=dict)


class TriggerRecord(StrictModel):
    trigger_id: str
    cover_id: str = Field(description="the cover image's key in the owner's data")
    cover_label: int | None = Field(None, description="the cover's own class (never the verification label)")
    label: int = Field(ge=0, description="the verification label the protected model answers")
    trigger: str = Field(description="relative path of the trigger PNG")
    secret: str = Field(description="relative path of the secret PNG")


class KitManifest(StrictModel):
    format: str = KIT_FORMAT
    created: str
    method: str
    model: ModelIdentity
    codec: CodecRecord | None = None
    triggers: list[TriggerRecord]
    public_key: str = Field(description="ed25519:<64 hex digits>, the key manifest.sig verifies with")
    files: dict[str, str] = Field(description="relative path -> sha256 of every file but the manifest and signature")
    extra: dict[str, Any] = Field(default_factory=dict)


def manifest_bytes(manifest: KitManifest) -> bytes:
    """The canonical bytes of a manifest (sorted keys, indented, UTF-8): what is signed and hashed."""
    return (json.dumps(manifest.model_dump(), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def commitment_of_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def weights_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors of a state dict (sorted names, dtype, shape and raw bytes).

    Independent of the file format and of key order, so the same weights saved twice (or loaded
    from another container) have the same fingerprint; any changed value changes it.
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode() + b"\0" + str(t.dtype).encode() + b"\0" + str(tuple(t.shape)).encode() + b"\0")
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------------------------------------
# keys


def generate_keypair(
    private_path: str | Path, public_path: str | Path | None = None, passphrase: str | None = None
) -> Path:
    """Write a new Ed25519 key pair (private PEM, mode 0600; public PEM beside it); return the public path.

    Refuses to overwrite an existing key file: losing the private key loses the ability to sign.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    priv = Path(private_path)
    pub = Path(public_path) if public_path is not None else priv.with_suffix(".pub")
    for p in (priv, pub):
        if p.exists():
            raise KitError(
                f"{p} exists; refusing to overwrite a key", hint="choose another path or move the old key away"
            )
    key = Ed25519PrivateKey.generate()
    enc: Any = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    priv.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write_bytes(pub, pub_pem)
    return pub


def load_private_key(path: str | Path, passphrase: str | None = None) -> Any:
    """An Ed25519 private key from a PEM file (KitError naming the file when it is not one)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = Path(path)
    if not p.is_file():
        raise KitError(f"private key not found: {p}", hint="create one with `copymark kit keygen --out owner.key`")
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), passphrase.encode() if passphrase else None)
    except TypeError:
        raise KitError(f"{p} is encrypted", hint="give its passphrase ($COPYMARK_KIT_PASSPHRASE)") from None
    except ValueError as err:
        raise KitError(
            f"{p}: not a readable private key ({err})", hint="wrong passphrase, or not a PEM key file"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KitError(f"{p}: not an Ed25519 key", hint="create one with `copymark kit keygen`")
    return key


def load_public_key(path_or_text: str | Path) -> str:
    """A public key as ``ed25519:<hex>`` from a PEM file or from that text itself."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = str(path_or_text)
    if text.startswith("ed25519:"):
        _public_key_object(text, "the given public key")
        return text
    p = Path(text)
    if not p.is_file():
        raise KitError(f"public key not found: {p}", hint="pass the owner's .pub file or its ed25519:<hex> text")
    try:
        key = serialization.load_pem_public_key(p.read_bytes())
    except ValueError as err:
        raise KitError(f"{p}: not a PEM public key ({err})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KitError(f"{p}: not an Ed25519 public key")
    return _public_key_text(key)


def _public_key_text(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return "ed25519:" + key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def _public_key_object(text: str, where: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = bytes.fromhex(text.removeprefix("ed25519:"))
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise KitError(f"{where}: {text[:24]}... is not an ed25519:<64 hex digits> public key") from None


# ---------------------------------------------------------------------------------------------
# writing a kit


@dataclass(frozen=True)
class KitTrigger:
    """One trigger to put in a kit: its PNG, the secret's PNG, the cover's id/class and the label."""

    trigger_png: bytes
    secret_png: bytes
    cover_id: str
    label: int
    cover_label: int | None = None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_kit(
    folder: str | Path,
    *,
    triggers: list[KitTrigger],
    model: ModelIdentity,
    method: str,
    private_key: Any,
    codec_kind: str,
    codec_config: dict[str, Any] | None = None,
    codec_dir: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write a signed kit into ``folder`` (must not exist or be empty); return its commitment.

    ``codec_dir`` (a codec checkpoint folder: model.safetensors + config.json) is copied into
    ``codec/``; a classical codec (lsb) has none.
    """
    root = Path(folder)
    if root.exists() and any(root.iterdir()):
        raise KitError(f"{root} is not empty; a kit is written into a new folder", hint="choose another folder")
    if not triggers:
        raise KitError("a kit needs at least one trigger")
    for i, t in enumerate(triggers):
        if not 0 <= t.label < model.num_classes:
            raise KitError(f"trigger {i}: verification label {t.label} outside [0, {model.num_classes})")
        if t.cover_label is not None and t.label == t.cover_label:
            raise KitError(f"trigger {i}: verification label {t.label} is the cover's own class")
    files: dict[str, bytes] = {}
    records = []
    for i, t in enumerate(triggers):
        tid = f"t{i:05d}"
        secret_rel = f"secrets/{_sha256(t.secret_png)[:20]}.png"
        files.setdefault(secret_rel, t.secret_png)
        files[f"triggers/{tid}.png"] = t.trigger_png
        records.append(
            TriggerRecord(
                trigger_id=tid,
                cover_id=t.cover_id,
                cover_label=t.cover_label,
                label=t.label,
                trigger=f"triggers/{tid}.png",
                secret=secret_rel,
            )  # fmt: skip
        )
    codec_rec = CodecRecord(kind=codec_kind, folder=None, config=dict(codec_config or {}))
    if codec_dir is not None:
        src = Path(codec_dir)
        for name in ("model.safetensors", "config.json"):
            if not (src / name).is_file():
                raise KitError(f"codec checkpoint {src} has no {name}")
            files[f"codec/{name}"] = (src / name).read_bytes()
        codec_rec = codec_rec.model_copy(update={"folder": "codec"})
    manifest = KitManifest(
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        method=method,
        model=model,
        codec=codec_rec,
        triggers=records,
        public_key=_public_key_text(private_key.public_key()),
        files={rel: _sha256(data) for rel, data in sorted(files.items())},
        extra=dict(extra or {}),
    )
    for rel, data in files.items():
        atomic_write_bytes(root / rel, data)
    body = manifest_bytes(manifest)
    atomic_write_bytes(root / SIGNATURE, private_key.sign(body).hex().encode() + b"\n")
    atomic_write_bytes(root / MANIFEST, body)  # last: a kit without a manifest is visibly incomplete
    return commitment_of_bytes(body)


# ---------------------------------------------------------------------------------------------
# loading a kit


@dataclass(frozen=True)
class OwnershipKit:
    """A kit whose every file, hash and signature has been checked."""

    root: Path
    manifest: KitManifest
    commitment: str

    @property
    def labels(self) -> list[int]:
        return [t.label for t in self.manifest.triggers]

    @property
    def num_classes(self) -> int:
        return self.manifest.model.num_classes

    def path(self, rel: str) -> Path:
        return self.root / rel

    def trigger_pngs(self) -> list[bytes]:
        return [self.path(t.trigger).read_bytes() for t in self.manifest.triggers]

    def trigger_images(self) -> torch.Tensor:
        """All triggers as one float batch ``N x 3 x H x W`` in [0, 1]."""
        from copymark.images import load_image

        return torch.stack([load_image(self.path(t.trigger)) for t in self.manifest.triggers])

    def secret_images(self) -> torch.Tensor:
        """The secret of each trigger (same order), ``N x 3 x H x W`` in [0, 1]."""
        from copymark.images import load_image

        return torch.stack([load_image(self.path(t.secret)) for t in self.manifest.triggers])

    @property
    def codec_dir(self) -> Path | None:
        c = self.manifest.codec
        return self.root / c.folder if c is not None and c.folder else None


def _safe_rel(rel: str, where: Path) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or rel != p.as_posix():
        raise KitError(f"{where}: the manifest names a path outside the kit: {rel!r}", hint="the kit was tampered with")
    if p.suffix.lower() not in ALLOWED_SUFFIXES:
        raise KitError(
            f"{where}: {rel}: a kit holds only {', '.join(ALLOWED_SUFFIXES)} files (no pickle, no code)",
            hint="the kit was tampered with, or made by another tool",
        )
    return rel


def load_kit(
    folder: str | Path, trusted_public_key: str | Path | None = None, commitment: str | None = None
) -> OwnershipKit:
    """Open and check a kit (see the module docstring); KitError names what is wrong."""
    from cryptography.exceptions import InvalidSignature

    root = Path(folder)
    if not root.is_dir():
        raise KitError(f"ownership kit not found: {root}", hint="pass the KIT folder `copymark protect` wrote")
    mf, sf = root / MANIFEST, root / SIGNATURE
    for f in (mf, sf):
        if not f.is_file():
            raise KitError(f"{root}: {f.name} is missing; not a complete ownership kit")
    body = mf.read_bytes()
    try:
        raw = json.loads(body)
    except json.JSONDecodeError as err:
        raise KitError(f"{mf}: not valid JSON ({err})", hint="the kit was tampered with") from None
    try:
        manifest = KitManifest.model_validate(raw)
    except ValidationError as err:
        raise KitError(
            format_validation_error(err, str(mf)), hint="the kit was tampered with, or is of another version"
        ) from None
    if manifest.format != KIT_FORMAT:
        raise KitError(f"{mf}: format {manifest.format!r}, expected {KIT_FORMAT!r}")
    found = commitment_of_bytes(body)
    if commitment is not None and commitment.strip() != found:
        raise KitError(
            f"{mf}: the manifest's commitment is {found}, not the trusted {commitment.strip()}",
            hint="this is not the kit that was committed to (or it was changed since)",
        )
    if trusted_public_key is not None and load_public_key(trusted_public_key) != manifest.public_key:
        raise KitError(f"{mf}: signed with {manifest.public_key[:24]}..., not with the trusted owner's key")
    try:
        sig = bytes.fromhex(sf.read_text().strip())
        _public_key_object(manifest.public_key, str(mf)).verify(sig, body)
    except (ValueError, InvalidSignature):
        raise KitError(
            f"{sf}: the signature does not verify for {mf.name}", hint="the manifest was changed after signing"
        ) from None
    listed = {_safe_rel(rel, mf): sha for rel, sha in manifest.files.items()}
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {MANIFEST, SIGNATURE}
    for rel in sorted(present - set(listed)):
        raise KitError(f"{root}: {rel} is not listed in the manifest (extra file)", hint="the kit was tampered with")
    for rel, sha in sorted(listed.items()):
        p = root / rel
        if not p.is_file():
            raise KitError(f"{root}: {rel} is missing", hint="restore the kit from its backup")
        if _sha256(p.read_bytes()) != sha:
            raise KitError(
                f"{root}: {rel} does not match its SHA-256 in the manifest (changed)", hint="the kit was tampered with"
            )
    k = manifest.model.num_classes
    for t in manifest.triggers:
        for rel in (t.trigger, t.secret):
            if rel not in listed:
                raise KitError(f"{mf}: trigger {t.trigger_id} names {rel}, which the manifest does not list")
        if not 0 <= t.label < k:
            raise KitError(f"{mf}: trigger {t.trigger_id} has label {t.label} outside [0, {k})")
    if not manifest.triggers:
        raise KitError(f"{mf}: the kit holds no triggers")
    return OwnershipKit(root, manifest, found)


def check_kit_fits(
    kit: OwnershipKit, num_classes: int, fingerprint: str | None = None, input_size: int | None = None
) -> None:
    """Refuse a kit made for another model: class count, weights fingerprint, input size."""
    m = kit.manifest.model
    if num_classes != m.num_classes:
        raise KitError(
            f"kit {kit.root} is for a {m.num_classes}-class model; this model answers {num_classes} classes",
            hint="use the kit made when this model was protected",
        )
    if input_size is not None and input_size != m.input_size:
        raise KitError(f"kit {kit.root} has {m.input_size} px triggers; the model takes {input_size} px inputs")
    if fingerprint is not None and fingerprint != m.fingerprint:
        raise DataError(
            f"the model's weights fingerprint {fingerprint[:19]}... differs from the kit's {m.fingerprint[:19]}...",
            hint="this is not the model the kit was made for (a suspect copy may differ; verify through its answers)",
        )
