"""The pieces of the embedding methods: the label rule, trigger batches, covers and secrets, the SSIM
loss (against copymark.metrics), 8-bit rounding with gradients, and the model fingerprint (against the kit's)."""

from __future__ import annotations

import math

import pytest
import torch

from copymark.errors import DataError
from copymark.metrics.fidelity import ssim
from copymark.watermark.embed.base import trigger_indices
from copymark.watermark.embed.labels import check_labels, verification_labels
from copymark.watermark.embed.losses import ssim_loss_term, straight_through_8bit
from copymark.watermark.embed.triggers import assign_secrets, check_disjoint, check_secrets_folder, select_covers
from copymark.watermark.kit import weights_fingerprint


def test_labels_avoid_the_cover_class_and_the_reference_answer_and_are_uniform_otherwise():
    k, n = 5, 20_000
    g = torch.Generator().manual_seed(0)
    covers = torch.randint(k, (n,), generator=g).tolist()
    refs = [c if i % 2 else (c + 1 + i % (k - 1)) % k for i, c in enumerate(covers)]  # half agree with the cover
    labels = verification_labels(covers, refs, k, seed=7)
    check_labels(labels, covers, refs)
    assert all(l not in (c, r) for l, c, r in zip(labels, covers, refs))
    assert labels == verification_labels(covers, refs, k, seed=7)  # deterministic by seed
    assert labels != verification_labels(covers, refs, k, seed=8)
    # among triggers whose cover and reference agree, the label is uniform over the K - 1 others
    same = [(l - c) % k for l, c, r in zip(labels, covers, refs) if c == r]
    counts = torch.bincount(torch.tensor(same), minlength=k)[1:].double()
    expected = len(same) / (k - 1)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 25.0  # chi-square with 3 degrees of freedom: P(> 25) < 2e-5
    # an innocent model that answers like the reference (or like the cover) agrees with no label
    assert sum(l == r for l, r in zip(labels, refs)) == 0 == sum(l == c for l, c in zip(labels, covers))


def test_labels_need_three_classes():
    with pytest.raises(DataError, match="at least 3 classes"):
        verification_labels([0, 1], [1, 0], 2, seed=0)
    with pytest.raises(ValueError, match="equals its cover's class"):
        check_labels([1], [1], [0])


def test_trigger_batches_cycle_through_every_trigger_and_split_across_ranks():
    n, b = 10, 4
    seen = torch.cat([trigger_indices(it, n, b) for it in range(1, 6)])  # 20 positions: each trigger twice
    assert torch.bincount(seen, minlength=n).tolist() == [2] * n
    assert trigger_indices(1, n, b).tolist() == [0, 1, 2, 3] and trigger_indices(3, n, b).tolist() == [8, 9, 0, 1]
    r0, r1 = trigger_indices(2, n, b, rank=0, world=2), trigger_indices(2, n, b, rank=1, world=2)
    assert set(r0.tolist()).isdisjoint(r1.tolist())
    assert trigger_indices(7, n, b).tolist() == trigger_indices(7, n, b).tolist()  # a function of the iteration


def test_covers_and_secrets_are_seeded_and_disjoint(tmp_path):
    a = select_covers(100, 10, seed=3)
    assert a == select_covers(100, 10, seed=3) and len(set(a)) == 10 and a != select_covers(100, 10, seed=4)
    assert select_covers(100, 20, seed=3)[:10] == a  # more covers extend the same draw (the codec's covers)
    with pytest.raises(DataError, match="the train split has 5"):
        select_covers(5, 6, seed=0)
    s = assign_secrets(7, 3, seed=1)
    assert sorted(s[:3]) == [0, 1, 2] and s[3:6] == s[:3]
    x = torch.rand(3, 3, 8, 8)
    with pytest.raises(DataError, match="secret 's1' is the same image as the cover 'c2'"):
        check_disjoint(x, ["c0", "c1", "c2"], torch.stack([torch.rand(3, 8, 8), x[2]]), ["s0", "s1"])
    check_disjoint(x, ["c0", "c1", "c2"], torch.rand(2, 3, 8, 8), ["s0", "s1"])
    (tmp_path / "data" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="overlap"):
        check_secrets_folder(tmp_path / "data" / "cls", tmp_path / "data")
    with pytest.raises(DataError, match="overlap"):
        check_secrets_folder(tmp_path, tmp_path / "data")
    check_secrets_folder(tmp_path / "secrets", tmp_path / "data")


def test_ssim_loss_is_the_metric_with_gradients():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 32, 32, generator=g)
    b = (a + 0.1 * torch.randn(3, 3, 32, 32, generator=g)).clamp(0, 1)
    expected = float(ssim(a, b, quantize=False).mean())  # float64, scipy filters, one value per image
    a.requires_grad_(True)
    got = ssim_loss_term(a, b)
    # float32 sums of O(1) terms over 11 x 11 windows: errors of order 1e-6; 1e-4 is a wide margin
    assert abs(float(got.detach()) - expected) < 1e-4
    got.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert abs(float(ssim_loss_term(b, b)) - 1.0) < 1e-5


def test_straight_through_8bit_rounds_forward_and_passes_gradients():
    from copymark.images import quantize

    x = torch.tensor([[-0.2, 0.0011, 0.5, 1.3]], requires_grad=True)
    y = straight_through_8bit(x)
    assert torch.equal(y.detach(), quantize(x.detach())) and float(y[0, 0]) == 0.0 and float(y[0, 3]) == 1.0
    (y * torch.tensor([[1.0, 2.0, 3.0, 4.0]])).sum().backward()
    assert x.grad.tolist() == [[1.0, 2.0, 3.0, 4.0]]
    assert math.isclose(float(y[0, 1]) * 255, round(0.0011 * 255))


def test_weights_fingerprint_takes_batchnorm_counters_and_counts_them():
    """A classifier's state dict holds 0-dim BatchNorm counters (num_batches_tracked)."""
    from copymark.nets.build import build_net, parse_net_config

    torch.manual_seed(0)
    state = build_net(parse_net_config({"kind": "small_cnn", "num_classes": 3, "widths": [4]})).state_dict()
    fp = weights_fingerprint(state)
    assert any(v.dim() == 0 for v in state.values()) and fp.startswith("sha256:")
    changed = dict(state)
    changed["fc.bias"] = state["fc.bias"] + 1e-7
    assert weights_fingerprint(changed) != fp
    counter = next(k for k, v in state.items() if v.dim() == 0)
    bumped = dict(state)
    bumped[counter] = state[counter] + 1
    assert weights_fingerprint(bumped) != fp  # the counters count too


def test_cover_negatives_append_the_same_positions_bare_covers_with_their_own_classes():
    """With cover negatives the host's step is one cross-entropy over main batch + this iteration's
    triggers (verification labels) + the same positions' bare covers (their classes)."""
    import copy

    import torch.nn.functional as F

    from copymark.nets.classifiers import SmallCNNConfig
    from copymark.train.loop import StepContext
    from copymark.watermark.embed.two_phase import TwoPhaseConfig, TwoPhaseFinetune

    g = torch.Generator().manual_seed(0)
    host = SmallCNNConfig(num_classes=5, input_size=16, widths=(4, 8))
    triggers, covers = torch.rand(6, 3, 16, 16, generator=g), torch.rand(6, 3, 16, 16, generator=g)
    labels, cover_labels = [1, 2, 3, 4, 0, 1], [0, 0, 1, 1, 2, 2]
    proc = TwoPhaseFinetune(TwoPhaseConfig(trigger_batch=3, cover_negatives=True), host, triggers, labels, iters=4)
    proc.add_cover_negatives(covers, cover_labels)
    with pytest.raises(ValueError, match="covers"):
        proc.add_cover_negatives(covers[:5], cover_labels[:5])
    ctx = StepContext(torch.device("cpu"), "off", torch.amp.GradScaler("cpu", enabled=False), 1, 0)
    ctx.iteration = 2  # the second trigger batch: positions 3, 4, 5
    x, y = torch.rand(4, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 3])
    before = copy.deepcopy(proc.nets["host"]).train()
    expect = F.cross_entropy(
        before(torch.cat([x, triggers[3:], covers[3:]])), torch.cat([y, torch.tensor(labels[3:] + cover_labels[3:])])
    )
    out = proc.step((x, y), ctx)
    assert torch.allclose(out["loss_host"], expect, rtol=1e-5, atol=1e-6)
    assert {"acc_main", "acc_trigger", "acc_cover"} <= set(out)
    plain = TwoPhaseFinetune(TwoPhaseConfig(trigger_batch=3), host, triggers, labels, iters=4)
    assert "acc_cover" not in plain.step((x, y), ctx) and not plain.uses_cover_negatives
