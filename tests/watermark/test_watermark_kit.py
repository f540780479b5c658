"""The ownership kit: round trip, commitment, and every kind of tampering refused by name."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from copymark.images import encode_png
from copymark.watermark.kit import (
    KitError,
    KitTrigger,
    ModelIdentity,
    check_kit_fits,
    commitment_of_bytes,
    generate_keypair,
    load_kit,
    load_private_key,
    load_public_key,
    weights_fingerprint,
    write_kit,
)


def _png(seed: int, size: int = 16) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return encode_png(torch.rand(3, size, size, generator=g))


@pytest.fixture
def keys(tmp_path):
    pub = generate_keypair(tmp_path / "keys" / "owner.key")
    return load_private_key(tmp_path / "keys" / "owner.key"), pub


def _codec_dir(tmp_path):
    d = tmp_path / "codec_src"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"not really weights, but hashed like any file")
    (d / "config.json").write_text('{"config": {"kind": "en2d"}}')
    return d


def _kit(tmp_path, keys, n: int = 4):
    key, _ = keys
    triggers = [
        KitTrigger(_png(i), _png(100 + i % 2), f"cover/{i}", label=(i + 1) % 3, cover_label=i % 3) for i in range(n)
    ]
    model = ModelIdentity(fingerprint="sha256:" + "ab" * 32, num_classes=3, input_size=16, class_names=["a", "b", "c"])
    commitment = write_kit(tmp_path / "kit", triggers=triggers, model=model, method="two-phase", private_key=key,
                           codec_kind="en2d", codec_dir=_codec_dir(tmp_path))  # fmt: skip
    return tmp_path / "kit", commitment, triggers


def test_round_trip_with_commitment_and_trusted_key(tmp_path, keys):
    kit_dir, commitment, triggers = _kit(tmp_path, keys)
    kit = load_kit(kit_dir, trusted_public_key=keys[1], commitment=commitment)
    assert kit.commitment == commitment == commitment_of_bytes((kit_dir / "manifest.json").read_bytes())
    assert kit.labels == [t.label for t in triggers]
    assert kit.trigger_pngs() == [t.trigger_png for t in triggers]
    assert kit.trigger_images().shape == (4, 3, 16, 16)
    assert len(list((kit_dir / "secrets").iterdir())) == 2  # one file per distinct secret
    assert torch.equal(kit.secret_images()[0], kit.secret_images()[2])
    assert kit.codec_dir is not None and (kit.codec_dir / "model.safetensors").is_file()
    assert [t.cover_id for t in kit.manifest.triggers] == [f"cover/{i}" for i in range(4)]
    check_kit_fits(kit, num_classes=3, fingerprint="sha256:" + "ab" * 32, input_size=16)


def _fails(kit_dir, match, **kw):
    with pytest.raises(KitError, match=match):
        load_kit(kit_dir, **kw)


def test_changed_missing_and_extra_files_are_refused_by_name(tmp_path, keys):
    kit_dir, _, _ = _kit(tmp_path, keys)
    t1 = kit_dir / "triggers" / "t00001.png"
    original = t1.read_bytes()
    t1.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit, same size
    _fails(kit_dir, r"triggers/t00001\.png does not match its SHA-256")
    t1.write_bytes(original)
    load_kit(kit_dir)
    t1.unlink()
    _fails(kit_dir, r"triggers/t00001\.png is missing")
    t1.write_bytes(original)
    (kit_dir / "triggers" / "t09999.png").write_bytes(original)
    _fails(kit_dir, r"triggers/t09999\.png is not listed in the manifest")
    (kit_dir / "triggers" / "t09999.png").unlink()
    (kit_dir / "codec" / "model.safetensors").write_bytes(b"swapped codec")
    _fails(kit_dir, r"codec/model\.safetensors does not match")


def test_changed_manifest_or_signature_is_refused(tmp_path, keys):
    kit_dir, commitment, _ = _kit(tmp_path, keys)
    mf = kit_dir / "manifest.json"
    good = mf.read_bytes()
    m = json.loads(good)
    m["triggers"][0]["label"] = (m["triggers"][0]["label"] + 1) % 3  # relabel one trigger
    mf.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    _fails(kit_dir, "signature does not verify")
    mf.write_bytes(good)
    (kit_dir / "manifest.sig").write_text("00" * 64 + "\n")
    _fails(kit_dir, "signature does not verify")
    (kit_dir / "manifest.sig").unlink()
    _fails(kit_dir, "manifest.sig is missing")


def test_a_kit_re_signed_with_another_key_fails_the_trusted_key_and_commitment(tmp_path, keys):
    kit_dir, commitment, triggers = _kit(tmp_path, keys)
    other = tmp_path / "other"
    generate_keypair(other / "mallory.key")
    forged = tmp_path / "forged"
    forged.mkdir()
    model = ModelIdentity(fingerprint="sha256:" + "ab" * 32, num_classes=3, input_size=16)
    relabelled = [KitTrigger(t.trigger_png, t.secret_png, t.cover_id, (t.label + 1) % 3, None) for t in triggers]
    write_kit(forged / "kit", triggers=relabelled, model=model, method="two-phase",
              private_key=load_private_key(other / "mallory.key"), codec_kind="lsb")  # fmt: skip
    load_kit(forged / "kit")  # self-consistent: the signature alone proves nothing about the owner
    _fails(forged / "kit", "not with the trusted owner's key", trusted_public_key=keys[1])
    _fails(forged / "kit", "not the trusted", commitment=commitment)


def test_pickle_and_paths_outside_the_kit_are_refused(tmp_path, keys):
    kit_dir, _, _ = _kit(tmp_path, keys)
    (kit_dir / "codec" / "evil.pth").write_bytes(b"\x80\x04 pickle")
    _fails(kit_dir, "not listed in the manifest")
    # a manifest that lists a pickle file (re-signed by the same key) is refused for its type
    key, _ = keys
    from copymark.watermark.kit import KitManifest, manifest_bytes

    m = KitManifest.model_validate_json((kit_dir / "manifest.json").read_text())
    import hashlib

    m.files["codec/evil.pth"] = hashlib.sha256((kit_dir / "codec" / "evil.pth").read_bytes()).hexdigest()
    body = manifest_bytes(m)
    (kit_dir / "manifest.json").write_bytes(body)
    (kit_dir / "manifest.sig").write_text(key.sign(body).hex())
    _fails(kit_dir, r"codec/evil\.pth: a kit holds only \.png, \.json, \.safetensors")
    m.files.pop("codec/evil.pth")
    m.files["../outside.png"] = "00" * 32
    body = manifest_bytes(m)
    (kit_dir / "manifest.json").write_bytes(body)
    (kit_dir / "manifest.sig").write_text(key.sign(body).hex())
    _fails(kit_dir, "outside the kit")


def test_kit_for_another_model_is_refused(tmp_path, keys):
    kit = load_kit(_kit(tmp_path, keys)[0])
    with pytest.raises(KitError, match="3-class model; this model answers 10 classes"):
        check_kit_fits(kit, num_classes=10)
    with pytest.raises(KitError, match="16 px triggers; the model takes 32 px"):
        check_kit_fits(kit, num_classes=3, input_size=32)


def test_write_kit_refuses_bad_labels_and_a_used_folder(tmp_path, keys):
    key, _ = keys
    model = ModelIdentity(fingerprint="sha256:x", num_classes=3, input_size=16)
    with pytest.raises(KitError, match="is the cover's own class"):
        write_kit(tmp_path / "k1", triggers=[KitTrigger(_png(0), _png(1), "c", 2, 2)], model=model, method="m",
                  private_key=key, codec_kind="lsb")  # fmt: skip
    with pytest.raises(KitError, match=r"outside \[0, 3\)"):
        write_kit(tmp_path / "k2", triggers=[KitTrigger(_png(0), _png(1), "c", 3)], model=model, method="m",
                  private_key=key, codec_kind="lsb")  # fmt: skip
    (tmp_path / "k3").mkdir()
    (tmp_path / "k3" / "x").write_text("x")
    with pytest.raises(KitError, match="not empty"):
        write_kit(tmp_path / "k3", triggers=[KitTrigger(_png(0), _png(1), "c", 1)], model=model, method="m",
                  private_key=key, codec_kind="lsb")  # fmt: skip


def test_keys_encrypted_private_key_public_text_and_no_overwrite(tmp_path):
    pub = generate_keypair(tmp_path / "k.key", passphrase="correct horse")
    assert oct((tmp_path / "k.key").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(KitError, match="encrypted"):
        load_private_key(tmp_path / "k.key")
    with pytest.raises(KitError, match="wrong passphrase"):
        load_private_key(tmp_path / "k.key", "wrong")
    key = load_private_key(tmp_path / "k.key", "correct horse")
    text = load_public_key(pub)
    assert text.startswith("ed25519:") and len(text) == 8 + 64 and load_public_key(text) == text
    sig = key.sign(b"msg")
    from copymark.watermark.kit import _public_key_object

    _public_key_object(text, "t").verify(sig, b"msg")  # the text form is the same key
    with pytest.raises(KitError, match="refusing to overwrite"):
        generate_keypair(tmp_path / "k.key")
    shutil.rmtree(tmp_path / "nothing", ignore_errors=True)
    with pytest.raises(KitError, match="private key not found"):
        load_private_key(tmp_path / "nothing" / "k.key")


def test_weights_fingerprint_is_order_and_format_independent_and_value_sensitive():
    a = {"w": torch.arange(6.0).view(2, 3), "b": torch.zeros(3)}
    b = {"b": torch.zeros(3), "w": torch.arange(6.0).view(2, 3).t().contiguous().t()}  # other key order, strides
    assert weights_fingerprint(a) == weights_fingerprint(b)
    c = {"w": a["w"].clone(), "b": a["b"].clone()}
    c["w"][1, 2] = torch.nextafter(c["w"][1, 2], torch.tensor(100.0))  # one ulp
    assert weights_fingerprint(c) != weights_fingerprint(a)
    assert weights_fingerprint({"w": a["w"].double(), "b": a["b"]}) != weights_fingerprint(a)  # dtype counts


def test_cli_keygen_and_check(tmp_path, capsys, monkeypatch):
    from copymark.cli import main

    monkeypatch.delenv("COPYMARK_KIT_PASSPHRASE", raising=False)
    assert main(["kit", "keygen", "--out", str(tmp_path / "k" / "owner.key")]) == 0
    assert "ed25519:" in capsys.readouterr().out
    key = load_private_key(tmp_path / "k" / "owner.key")
    kit_dir, commitment, _ = _kit(tmp_path, (key, tmp_path / "k" / "owner.pub"))
    assert main(["kit", "check", str(kit_dir), "--public-key", str(tmp_path / "k" / "owner.pub")]) == 0
    out = capsys.readouterr().out
    assert commitment in out and "intact (trusted key)" in out
    (kit_dir / "triggers" / "t00000.png").write_bytes(b"x")
    assert main(["kit", "check", str(kit_dir)]) == 2
    assert "t00000.png does not match" in capsys.readouterr().err
