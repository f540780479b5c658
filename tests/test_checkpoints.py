"""copymark.checkpoints: safetensors + config.json, no pickle, safe third-party loading."""

from __future__ import annotations

import json
import pathlib
import struct

import pytest
import torch
from torch import nn

import copymark
from copymark.checkpoints import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    atomic_write_json,
    load_checkpoint,
    load_strict,
    load_third_party_state_dict,
    read_checkpoint_meta,
    save_checkpoint,
)
from copymark.errors import WeightsError


class Tiny(nn.Module):
    def __init__(self, ch: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, ch, 3, padding=1)
        self.bn = nn.BatchNorm2d(ch)
        self.head = nn.Linear(ch, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


def _model(seed: int) -> Tiny:
    torch.manual_seed(seed)
    m = Tiny()
    m.bn.running_mean.uniform_()  # non-default buffers must round-trip too
    m.bn.num_batches_tracked.fill_(7)
    return m.eval()


def test_round_trip_equal_weights_and_outputs(tmp_path):
    m = _model(0)
    folder = save_checkpoint(tmp_path / "ck", m.state_dict(), {"kind": "tiny", "ch": 4}, {"step": 12, "data": "x"})
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]  # no temp files left
    state, meta = load_checkpoint(folder)
    assert meta["config"] == {"kind": "tiny", "ch": 4}
    assert meta["provenance"] == {"step": 12, "data": "x"} and meta["copymark_version"] == copymark.__version__
    ref = m.state_dict()
    assert state.keys() == ref.keys()
    for k in ref:
        assert state[k].dtype == ref[k].dtype and torch.equal(state[k], ref[k]), k
    fresh = _model(1)
    load_strict(fresh, state, str(folder))
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(fresh(x), m(x))
    # pointing at the weight file itself also works
    state2, _ = load_checkpoint(folder / WEIGHTS_FILE)
    assert torch.equal(state2["head.weight"], ref["head.weight"])


def test_folder_holds_no_pickle(tmp_path):
    folder = save_checkpoint(tmp_path / "ck", _model(0).state_dict(), {"kind": "tiny"})
    raw = (folder / WEIGHTS_FILE).read_bytes()
    assert raw[:1] != b"\x80" and raw[:2] != b"PK"  # neither a pickle stream nor torch's zip format
    (header_len,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 header length, then JSON
    header = json.loads(raw[8 : 8 + header_len])
    assert "conv.weight" in header and header["__metadata__"]["format"] == "pt"
    json.loads((folder / CONFIG_FILE).read_text())  # plain JSON


def test_tied_weights_are_saved(tmp_path):
    lin = nn.Linear(3, 3)
    state = {"a.weight": lin.weight, "b.weight": lin.weight}  # aliasing: safetensors refuses it raw
    save_checkpoint(tmp_path / "ck", state, {"kind": "tied"})
    back, _ = load_checkpoint(tmp_path / "ck")
    assert torch.equal(back["a.weight"], back["b.weight"])


def test_config_needs_kind_and_tensors_only(tmp_path):
    with pytest.raises(WeightsError, match="kind"):
        save_checkpoint(tmp_path / "ck", {"w": torch.zeros(1)}, {"ch": 4})
    with pytest.raises(WeightsError, match="'w' is a int"):
        save_checkpoint(tmp_path / "ck2", {"w": 3}, {"kind": "x"})  # type: ignore[dict-item]


def test_missing_and_broken_checkpoints(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_checkpoint(tmp_path / "none")
    folder = save_checkpoint(tmp_path / "ck", {"w": torch.ones(2)}, {"kind": "x"})
    (folder / CONFIG_FILE).unlink()
    with pytest.raises(WeightsError, match="no config.json"):
        load_checkpoint(folder)
    folder = save_checkpoint(tmp_path / "ck2", {"w": torch.ones(2)}, {"kind": "x"})
    (folder / WEIGHTS_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(WeightsError, match="cannot read weights"):
        load_checkpoint(folder)
    folder = save_checkpoint(tmp_path / "ck3", {"w": torch.ones(2)}, {"kind": "x"})
    (folder / CONFIG_FILE).write_text("{")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_checkpoint(folder)
    atomic_write_json(folder / CONFIG_FILE, {"config": {}})
    with pytest.raises(WeightsError, match="no config.kind"):
        load_checkpoint(folder)


# ----------------------------------------------------------------------------- third-party .pth


def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Example key map: DataParallel prefix off, and 'fc' renamed to our 'head'."""
    out = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        out[k.replace("fc.", "head.", 1) if k.startswith("fc.") else k] = v
    return out


def test_third_party_pth_with_key_map(tmp_path):
    m = _model(0)
    theirs = {("module." + k).replace("module.head.", "module.fc."): v for k, v in m.state_dict().items()}
    p = tmp_path / "theirs.pth"
    torch.save(theirs, p)
    state = load_third_party_state_dict(p, _strip_module)
    fresh = _model(3)
    load_strict(fresh, state, str(p))
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(fresh(x), m(x))
    # nested under "state_dict" (common in training checkpoints)
    torch.save({"state_dict": theirs}, tmp_path / "nested.pth")
    assert load_third_party_state_dict(tmp_path / "nested.pth", _strip_module).keys() == state.keys()


class _Payload:
    """A pickled object whose unpickling would create a marker file (code execution)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickled_object_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "payload": _Payload(marker)}, p)
    with pytest.raises(WeightsError) as e:
        load_third_party_state_dict(p, dict)
    assert str(p) in str(e.value) and "weights_only=True" in str(e.value)
    assert not marker.exists()  # the payload never ran


def test_non_tensor_entries_and_missing_file(tmp_path):
    torch.save(
        {"w": torch.zeros(1), "epoch": 3}, tmp_path / "mixed.pth"
    )  # loads with weights_only, but not a state dict
    with pytest.raises(WeightsError, match="state dict of tensors"):
        load_third_party_state_dict(tmp_path / "mixed.pth", dict)
    with pytest.raises(WeightsError, match="not found"):
        load_third_party_state_dict(tmp_path / "none.pth", dict)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="junk.pth"):
        load_third_party_state_dict(tmp_path / "junk.pth", dict)


# ----------------------------------------------------------------------------- load_strict


def test_load_strict_lists_missing_and_unexpected_keys():
    m = _model(0)
    state = dict(m.state_dict())
    del state["head.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as e:
        load_strict(_model(1), state, "ckpt-A")
    msg = str(e.value)
    assert "ckpt-A" in msg and "Tiny" in msg
    assert "missing ['head.bias']" in msg and "unexpected ['extra.weight']" in msg


def test_load_strict_shape_mismatch():
    state = dict(_model(0).state_dict())
    state["head.weight"] = torch.zeros(5, 4)
    with pytest.raises(WeightsError, match="do not fit Tiny"):
        load_strict(_model(1), state, "ckpt-B")


# ----------------------------------------------------------------------------- refusals on load


def test_unknown_top_level_config_key_is_refused_by_name(tmp_path):
    folder = save_checkpoint(tmp_path / "ck", _model(0).state_dict(), {"kind": "tiny"})
    meta = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**meta, "archtecture": {"ch": 8}}))
    with pytest.raises(WeightsError, match="unknown top-level key 'archtecture'") as e:
        load_checkpoint(folder)
    assert "config, copymark_version, provenance" in (e.value.hint or "")
    with pytest.raises(WeightsError, match="unknown top-level key"):
        read_checkpoint_meta(folder)  # refused before any weight is read


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, bad):
    state = _model(0).state_dict()
    state["head.weight"] = state["head.weight"].clone()
    state["head.weight"][1, 2] = bad
    folder = save_checkpoint(tmp_path / "ck", state, {"kind": "tiny"})
    with pytest.raises(WeightsError, match=r"tensor 'head.weight' holds 1 NaN/inf value\(s\) of 8"):
        load_checkpoint(folder)
    # integer buffers (BatchNorm's num_batches_tracked) are not floats and pass
    ok = save_checkpoint(tmp_path / "ok", _model(0).state_dict(), {"kind": "tiny"})
    assert load_checkpoint(ok)[0]["bn.num_batches_tracked"].item() == 7


def test_every_net_kind_loads_through_the_refusing_path(tmp_path):
    """nets.build.load_net (translation nets, codecs, detectors, victims) refuses NaN weights too."""
    from copymark.nets.build import build_net, load_net, parse_net_config, save_net

    cfg = parse_net_config({"kind": "xunet", "width": 2})
    save_net(tmp_path / "x", build_net(cfg), cfg)
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "x" / WEIGHTS_FILE))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key][0] = float("nan")
    save_file(state, str(tmp_path / "x" / WEIGHTS_FILE))
    with pytest.raises(WeightsError, match=f"tensor '{key}'"):
        load_net(tmp_path / "x")


def test_finite_values_whose_sum_overflows_are_accepted(tmp_path):
    """The fast check sums each tensor; a sum that overflows (float16) falls back to the exact check."""
    big = torch.full((4,), 60000.0, dtype=torch.float16)  # finite, but the float16 sum is inf
    assert not torch.isfinite(big.sum())
    folder = save_checkpoint(tmp_path / "ck", {"w": big}, {"kind": "x"})
    assert torch.equal(load_checkpoint(folder)[0]["w"], big)
