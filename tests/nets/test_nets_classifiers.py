"""Host classifiers: ResNet-18 is torchvision's (parameter count, state-dict keys, logits), its stems
follow the input size, normalisation happens inside forward, and the configs live in the NetConfig union."""

from __future__ import annotations

import pytest
import torch
from _nets_counts import bn, conv, linear

from copymark.errors import ConfigError
from copymark.nets import count_parameters
from copymark.nets.build import build_net, load_net, parse_net_config, save_net
from copymark.nets.classifiers import ResNet18, SmallCNN, stem_for_size

TORCHVISION_RESNET18 = 11_689_512  # torchvision.models.resnet18(): 1000 classes, ImageNet stem


@pytest.fixture(scope="module")
def torchvision_resnet18():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def test_imagenet_stem_is_torchvision_resnet18(torchvision_resnet18):
    tv = torchvision_resnet18
    cfg = parse_net_config(
        {"kind": "resnet18", "num_classes": 1000, "input_size": 256, "mean": [0, 0, 0], "std": [1, 1, 1]}
    )
    assert cfg.stem == "imagenet"
    ours = build_net(cfg).eval()
    assert count_parameters(ours) == count_parameters(tv) == TORCHVISION_RESNET18
    theirs = tv.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.items()}
    ours.load_state_dict(theirs, strict=True)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))  # the same layers in the same order


def test_initialisation_is_torchvision_s():
    """Kaiming-normal (fan_out) convs, BN weight 1 / bias 0: conv weight std = sqrt(2 / fan_out)."""
    torch.manual_seed(0)
    net = ResNet18(num_classes=10, stem="imagenet")
    w = net.layer3[0].conv1.weight.detach()  # 256 x 128 x 3 x 3: fan_out = 256 * 9
    assert abs(float(w.std()) - (2 / (256 * 9)) ** 0.5) < 0.05 * (2 / (256 * 9)) ** 0.5
    assert torch.equal(net.layer1[0].bn1.weight, torch.ones(64)) and torch.equal(net.bn1.bias, torch.zeros(64))


@pytest.mark.parametrize(
    "size, stem, conv1, pool, final",
    [(32, "cifar", (3, 1), False, 4), (64, "tiny", (3, 1), True, 4), (256, "imagenet", (7, 2), True, 8)],
)
def test_stems_follow_the_input_size(size, stem, conv1, pool, final):
    cfg = parse_net_config({"kind": "resnet18", "num_classes": 5, "input_size": size})
    assert cfg.stem == stem == stem_for_size(size)
    net = build_net(cfg).eval()
    assert (net.conv1.kernel_size[0], net.conv1.stride[0]) == conv1
    assert isinstance(net.maxpool, torch.nn.MaxPool2d) is pool
    feats = {}

    def keep_shape(module, inputs, output):
        feats["layer4"] = output.shape  # a hook that returns nothing leaves the output alone

    net.layer4.register_forward_hook(keep_shape)
    with torch.no_grad():
        out = net(torch.rand(2, 3, size, size))
    assert out.shape == (2, 5) and feats["layer4"] == (2, 512, final, final)
    # only conv1 and the classifier differ from torchvision's ImageNet ResNet-18 with 1000 classes
    stem_weights = conv(3, 64, conv1[0], bias=False)
    expected = (
        TORCHVISION_RESNET18 - conv(3, 64, 7, False) + stem_weights - linear(512, 1000, True) + linear(512, 5, True)
    )
    assert count_parameters(net) == expected


def test_normalisation_happens_inside_forward():
    mean, std = (0.2, 0.4, 0.6), (0.5, 0.25, 0.125)
    torch.manual_seed(0)
    a = build_net(parse_net_config({"kind": "small_cnn", "num_classes": 3, "mean": mean, "std": std})).eval()
    b = build_net(parse_net_config({"kind": "small_cnn", "num_classes": 3, "mean": [0, 0, 0], "std": [1, 1, 1]})).eval()
    assert set(a.state_dict()) == set(b.state_dict())  # the constants are not weights
    b.load_state_dict(a.state_dict())
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b((x - m) / s))


def test_small_cnn_parameters_and_determinism():
    net = SmallCNN(num_classes=4, widths=(8, 16))
    expected = conv(3, 8, 3, False) + bn(8) + conv(8, 16, 3, False) + bn(16) + linear(16, 4, True)
    assert count_parameters(net) == expected
    net.eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


def test_configs_round_trip_through_checkpoints(tmp_path):
    cfg = parse_net_config(
        {"kind": "resnet18", "num_classes": 3, "input_size": 64, "class_names": ["cat", "dog", "fox"]}
    )
    torch.manual_seed(0)
    net = build_net(cfg)
    save_net(tmp_path / "ckpt", net, cfg, {"run": "test"})
    back, cfg2 = load_net(tmp_path / "ckpt", expected_kind=("resnet18", "small_cnn"))
    assert cfg2 == cfg and back.class_names == ["cat", "dog", "fox"] and back.input_size == 64
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back(x), net.eval()(x))


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"num_classes": 3, "class_names": ["a", "b"]}, "class_names has 2 names"),
        ({"stem": "huge"}, "stem"),
        ({"std": [1, 0, 1]}, "std must be positive"),
        ({"num_classes": 1}, "num_classes"),
        ({"widht": 3}, "unknown key .*widht"),
    ],
)
def test_bad_configs_name_the_key(bad, match):
    with pytest.raises(ConfigError, match=match):
        parse_net_config({"kind": "resnet18", **bad})
