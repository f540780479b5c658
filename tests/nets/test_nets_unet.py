"""UNet-256 generator (pix2pix)."""

from __future__ import annotations

import _nets_counts as _counts
import torch
from torch import nn

from copymark.nets import count_parameters
from copymark.nets.unet import UNetGenerator


def test_param_count_unet_256():
    # junyanz/pytorch-CycleGAN-and-pix2pix prints "[Network G] Total number of parameters : 54.414 M"
    # for pix2pix's unet_256 (models/base_model.py print_networks, "%.3f M"; e.g. a facades training
    # log). The exact integer is the sum over the layers of models/networks.py UnetGenerator
    # (BatchNorm => bias-free convs except the outermost transposed conv): 54,413,955.
    with torch.device("meta"):
        n = count_parameters(UNetGenerator())
    assert n == _counts.junyanz_unet() == 54_413_955
    assert f"{n / 1e6:.3f}" == "54.414"


def test_shapes_range_and_skip_structure():
    torch.manual_seed(0)
    net = UNetGenerator(ngf=4, num_downs=5).eval()
    assert net.stride == 32
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1
    # num_downs=8 => 3 dropout blocks, next to the innermost; num_downs=5 => none.
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 0
    big = UNetGenerator(ngf=2, num_downs=8)
    assert sum(isinstance(m, nn.Dropout) for m in big.modules()) == 3
    assert sum(isinstance(m, nn.Dropout) for m in UNetGenerator(ngf=2, use_dropout=False).modules()) == 0


def test_dropout_follows_train_and_eval():
    torch.manual_seed(0)
    net = UNetGenerator(ngf=2, num_downs=8)
    x = torch.rand(1, 3, 256, 256)
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a, b)  # deterministic at eval
    net.train()
    with torch.no_grad():
        c, d = net(x), net(x)
    assert not torch.equal(c, d)  # dropout active in training


def test_gradients_reach_every_parameter():
    net = UNetGenerator(ngf=2, num_downs=6)
    net(torch.rand(2, 3, 64, 64)).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
