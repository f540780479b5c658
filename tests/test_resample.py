"""The one bicubic upscale (copymark.resample) equals MATLAB-style imresize as images.resize_bicubic computes it."""

from __future__ import annotations

import pytest
import torch

from copymark import images as I
from copymark.resample import phase_weights, upscale_bicubic


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(2, 3, 12, 10), (1, 3, 1, 5), (1, 3, 2, 2), (3, 33, 17)])
def test_phase_form_equals_the_general_matlab_resize(shape, factor):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(factor))
    general = I.resize_bicubic(x, size=(shape[-2] * factor, shape[-1] * factor), method="matlab")
    # both sum four products of values in [0, 1] and weights summing to one, in float32,
    # in another order: the results differ by a few ulps of values below 1.5
    assert torch.allclose(upscale_bicubic(x, factor), general, rtol=0, atol=8 * torch.finfo(torch.float32).eps)


def test_weights_are_keys_cubic_and_sum_to_one():
    w = phase_weights(4)
    assert w.shape == (4, 5) and torch.allclose(w.sum(1), torch.ones(4))
    # phase 0 of x4 sits 3/8 px before its input pixel k: Keys' cubic (a = -0.5) at distances
    # 1.625, 0.625, 0.375, 1.375 (and 2.375: zero) from pixels k-2 .. k+2, e.g. 1.5 t^3 - 2.5 t^2 + 1 at 0.375
    assert w[0].tolist() == pytest.approx([-0.0439453125, 0.3896484375, 0.7275390625, -0.0732421875, 0.0], abs=1e-7)
    assert torch.allclose(w[3], w[0].flip(0))  # the phases are mirror images
    assert torch.equal(phase_weights(1), torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]]))  # factor 1: the identity
    with pytest.raises(ValueError):
        phase_weights(0)


def test_scriptable_inside_a_net():
    from copymark.nets.srresnet import SRResNet

    net = SRResNet(scale=4, n_blocks=1, nf=8, image_skip=True).eval()
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        assert torch.equal(torch.jit.script(net)(x), net(x))
