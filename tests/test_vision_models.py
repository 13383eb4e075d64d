"""Benchmark networks: output shapes, prunable weight names, published sizes."""
import pytest
import torch
from torch import nn

from experiments.models.vision import VGG16, Conv2, Conv4, Conv6, LeNet300100, ResNet20
from lth.errors import LTCError


def prunable_weights(model: nn.Module) -> list[str]:
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


torch.manual_seed(0)  # the toy models below are built once, at collection

RESNET20_CONVS = ["stem.conv.weight"] + [
    f"stages.{s}.{b}.{layer}.weight"
    for s in range(3) for b in range(3)
    for layer in (["conv1", "conv2"] + (["shortcut.conv"] if s > 0 and b == 0 else []))
]

CASES = [
    (LeNet300100(width=0.1), (3, 1, 28, 28), ["fcs.0.weight", "fcs.1.weight", "out.weight"]),
    (Conv2(width=0.1), (3, 3, 32, 32), ["convs.0.weight", "convs.1.weight", "fcs.0.weight",
                                        "fcs.1.weight", "out.weight"]),
    (Conv4(width=0.1), (3, 3, 32, 32), [f"convs.{i}.weight" for i in range(4)]
     + ["fcs.0.weight", "fcs.1.weight", "out.weight"]),
    (Conv6(width=0.1), (3, 3, 32, 32), [f"convs.{i}.weight" for i in range(6)]
     + ["fcs.0.weight", "fcs.1.weight", "out.weight"]),
    (ResNet20(width=0.25), (3, 3, 32, 32), RESNET20_CONVS + ["out.weight"]),
    (VGG16(width=0.25), (3, 3, 32, 32), [f"convs.{i}.weight" for i in range(13)] + ["out.weight"]),
]


@pytest.mark.parametrize("model,input_shape,names", CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_forward_shape_and_prunable_names(model, input_shape, names):
    out = model(torch.randn(*input_shape))
    assert out.shape == (input_shape[0], 10)
    assert torch.isfinite(out).all()
    assert prunable_weights(model) == names
    assert prunable_weights(model)[-1] == "out.weight"
    out.sum().backward()  # every prunable tensor takes part in the forward pass
    params = dict(model.named_parameters())
    assert all(params[n].grad is not None and params[n].grad.abs().sum() > 0 for n in names)


def test_full_size_parameter_counts_match_the_architectures():
    # LeNet: 784*300+300 + 300*100+100 + 100*10+10
    assert count(LeNet300100()) == 266_610
    # Conv-2: 3*64*9+64 + 64*64*9+64 + (16*16*64)*256+256 + 256*256+256 + 256*10+10
    assert count(Conv2()) == 1792 + 36_928 + 4_194_560 + 65_792 + 2570
    # Conv-4 adds 64->128->128 and the FC sees 8*8*128
    assert count(Conv4()) == 1792 + 36_928 + 73_856 + 147_584 + 8192 * 256 + 256 + 65_792 + 2570
    # ResNet-20 (projection shortcuts) has about 0.27M parameters, VGG-16 about 14.7M
    assert 0.27e6 < count(ResNet20()) < 0.275e6
    assert 14.7e6 < count(VGG16()) < 14.75e6


def test_width_and_inputs_are_configurable():
    assert LeNet300100(num_classes=7, in_features=20, width=0.5)(torch.randn(2, 20)).shape == (2, 7)
    assert [m.out_features for m in LeNet300100(width=0.5).fcs] == [150, 50]
    grey = Conv6(num_classes=4, in_channels=1, image_size=28, width=0.1)
    assert grey(torch.randn(2, 1, 28, 28)).shape == (2, 4)
    assert grey.fcs[0].in_features == grey.convs[-1].out_channels * 3 * 3  # 28 -> 14 -> 7 -> 3
    assert ResNet20(in_channels=1, num_classes=3, width=0.25)(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    assert VGG16(num_classes=100, width=0.125).out.in_features == 64


def test_option_a_shortcut_pads_channels_without_parameters():
    model = ResNet20(width=0.25, shortcut="pad")
    assert not any("shortcut" in n for n in prunable_weights(model))
    block = model.stages[1][0]
    x = torch.randn(2, 4, 8, 8)
    skip = block.shortcut(x)
    assert skip.shape == (2, 8, 4, 4)
    assert torch.equal(skip[:, :4], x[:, :, ::2, ::2]) and not skip[:, 4:].any()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_bad_arguments_raise_ltcerror():
    with pytest.raises(LTCError, match="width"):
        LeNet300100(width=0)
    with pytest.raises(LTCError, match="shortcut"):
        ResNet20(shortcut="identity")
    with pytest.raises(LTCError, match="too small"):
        Conv6(image_size=4)


def test_initialisation_scales():
    torch.manual_seed(0)
    lenet = LeNet300100()
    # Glorot normal: std = sqrt(2 / (fan_in + fan_out))
    assert lenet.fcs[0].weight.std().item() == pytest.approx((2 / (784 + 300)) ** 0.5, rel=0.02)
    assert not lenet.fcs[0].bias.any()
    vgg = VGG16()
    # He normal: std = sqrt(2 / fan_in), fan_in = 3 * 3 * in_channels
    assert vgg.convs[5].weight.std().item() == pytest.approx((2 / (9 * 256)) ** 0.5, rel=0.02)
