"""70x70 PatchGAN discriminator."""

from __future__ import annotations

import _nets_counts as _counts
import torch

from copymark.nets import count_parameters
from copymark.nets.patchgan import PatchGANDiscriminator


def test_param_counts():
    # pix2pix's conditional D (6 input channels, BatchNorm): junyanz's old print_network printed
    # "Total number of parameters: 2768705" (quoted in public pix2pix notes), and
    # models/base_model.py print_networks prints "[Network D] Total number of parameters : 2.769 M".
    with torch.device("meta"):
        d6 = count_parameters(PatchGANDiscriminator(in_channels=6))
        d3_instance = count_parameters(PatchGANDiscriminator(in_channels=3, norm="instance"))
    assert d6 == _counts.junyanz_patchgan(6) == 2_768_705
    # CycleGAN's D (3 channels, junyanz InstanceNorm without affine => biased convs): printed as
    # "[Network D_A] Total number of parameters : 2.765 M"; exact sum over models/networks.py
    # NLayerDiscriminator: 2,764,737.
    assert d3_instance == _counts.junyanz_patchgan(3, norm="instance") == 2_764_737
    assert f"{d3_instance / 1e6:.3f}" == "2.765"


def test_output_is_30x30_patch_logits_at_256():
    net = PatchGANDiscriminator(in_channels=6, ndf=4).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 6, 256, 256))
    assert y.shape == (2, 1, 30, 30)


def test_receptive_field_is_70x70():
    torch.manual_seed(0)
    net = PatchGANDiscriminator(ndf=2).eval()  # eval: BatchNorm does not mix positions
    x = torch.rand(1, 3, 128, 128, requires_grad=True)
    y = net(x)
    i, j = y.shape[-2] // 2, y.shape[-1] // 2
    y[0, 0, i, j].backward()
    g = x.grad[0].abs().sum(0)
    rows = torch.nonzero(g.sum(1)).flatten()
    cols = torch.nonzero(g.sum(0)).flatten()
    assert int(rows[-1] - rows[0] + 1) == 70
    assert int(cols[-1] - cols[0] + 1) == 70


def test_input_range_is_converted_inside():
    torch.manual_seed(0)
    net = PatchGANDiscriminator(ndf=2, norm="none").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), net.model(x * 2 - 1))
        assert torch.equal(net(x), net(x.clone()))
