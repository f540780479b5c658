"""CycleGAN ResNet generator."""

from __future__ import annotations

import _nets_counts as _counts
import torch
from torch import nn

from copymark.nets import count_parameters
from copymark.nets.resnet_gen import ResnetGenerator


def test_param_count_resnet_9blocks():
    # junyanz/pytorch-CycleGAN-and-pix2pix prints "[Network G_A] Total number of parameters :
    # 11.378 M" for CycleGAN's resnet_9blocks (InstanceNorm without affine); the exact sum over
    # models/networks.py ResnetGenerator is 11,378,179.
    with torch.device("meta"):
        net = ResnetGenerator()
    n = count_parameters(net)
    assert n == _counts.junyanz_resnet() == 11_378_179
    assert f"{n / 1e6:.3f}" == "11.378"
    # The 2017 code used affine InstanceNorm and printed "Total number of parameters: 11388675"
    # (junyanz/pytorch-CycleGAN-and-pix2pix issue #45): ours plus 2 x the normalised channels.
    affine = sum(2 * m.num_features for m in net.modules() if isinstance(m, nn.InstanceNorm2d))
    assert n + affine == _counts.junyanz_resnet(affine_in=True) == 11_388_675


def test_shapes_range_determinism():
    torch.manual_seed(0)
    net = ResnetGenerator(ngf=4, n_blocks=2).eval()
    x = torch.rand(2, 3, 36, 44)
    with torch.no_grad():
        y1, y2 = net(x), net(x)
    assert y1.shape == x.shape
    assert torch.equal(y1, y2)
    assert y1.min() >= 0 and y1.max() <= 1
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in net.modules()) == 2 + 2 * 2


def test_dropout_option_and_state_dict_layout():
    net = ResnetGenerator(ngf=4, n_blocks=3, use_dropout=True)
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 3
    keys = set(ResnetGenerator(ngf=4, n_blocks=9).state_dict())
    # Same key layout as junyanz's ResnetGenerator (model.<i>.conv_block.<j>.weight).
    assert "model.10.conv_block.1.weight" in keys and "model.26.weight" in keys
