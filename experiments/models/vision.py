"""The networks of the canonical lottery-ticket benchmarks, as plain nn.Modules.

LeNet-300-100 and Conv-2/4/6 follow Frankle & Carbin (2019); ResNet-20 and VGG-16 are the CIFAR-10
variants of Frankle et al. (2020, linear mode connectivity / rewinding). Parameter names are chosen
so pruning-rate overrides can match them by pattern, the same way in every model:

    convs.{i}.weight   convolutions (Conv-N, VGG-16)
    fcs.{i}.weight     hidden fully connected layers (LeNet, Conv-N)
    out.weight         the output layer (every model)

`width` multiplies every hidden width (channels and hidden units), for toy sizes in tests.
"""
from __future__ import annotations

from collections import OrderedDict
from itertools import pairwise

import torch.nn.functional as F
from torch import Tensor, nn

from lth.errors import LTCError


def scaled(size: int, width: float) -> int:
    """A hidden width times the multiplier, at least 1."""
    if width <= 0:
        raise LTCError(f"width multiplier must be positive, got {width}")
    return max(1, round(size * width))


def init_glorot_normal(model: nn.Module) -> None:
    """Gaussian Glorot weights and zero biases (Frankle & Carbin 2019)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_kaiming_normal(model: nn.Module) -> None:
    """He-normal weights (fan-in, ReLU gain), zero biases, BatchNorm at scale 1 / shift 0 (Frankle et al. 2020)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()


class LeNet300100(nn.Module):
    """Fully connected in_features-300-100-num_classes with ReLU; the input is flattened.

    Layers: `fcs.0`, `fcs.1` (hidden), `out` (output).
    """

    def __init__(self, num_classes: int = 10, in_features: int = 784, width: float = 1.0) -> None:
        super().__init__()
        sizes = [in_features, scaled(300, width), scaled(100, width)]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        self.out = nn.Linear(sizes[-1], num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_glorot_normal(self)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return self.out(x)


class ConvNet(nn.Module):
    """Conv-2/4/6 of Frankle & Carbin (2019): pairs of 3x3 'same' convs with ReLU, each pair
    followed by 2x2 max-pooling (64-64-pool, then 128-128-pool, then 256-256-pool), then FC
    256-256-num_classes with ReLU.

    Layers: `convs.0` ... `convs.{2 * pairs - 1}`, `fcs.0`, `fcs.1`, `out` (output).
    """

    def __init__(self, pairs: int, num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32, width: float = 1.0) -> None:
        super().__init__()
        if not 1 <= pairs <= 3:
            raise LTCError(f"Conv-N has 1 to 3 pairs of convolutions (Conv-2/4/6), got {pairs}")
        channels = [in_channels]
        for c in (64, 128, 256)[:pairs]:
            channels += [scaled(c, width)] * 2
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size=3, padding=1) for a, b in pairwise(channels)
        )
        side = image_size // 2**pairs
        if side < 1:
            raise LTCError(f"image_size {image_size} is too small for {pairs} poolings of 2x2")
        sizes = [channels[-1] * side * side, scaled(256, width), scaled(256, width)]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        self.out = nn.Linear(sizes[-1], num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_glorot_normal(self)

    def forward(self, x: Tensor) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i % 2 == 1:
                x = F.max_pool2d(x, 2)
        x = x.flatten(1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return self.out(x)


class Conv2(ConvNet):
    """Conv-2: 64-64-pool, FC 256-256-out. Layers `convs.0-1`, `fcs.0-1`, `out` (output)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 width: float = 1.0) -> None:
        super().__init__(1, num_classes, in_channels, image_size, width)


class Conv4(ConvNet):
    """Conv-4: 64-64-pool-128-128-pool, FC 256-256-out. Layers `convs.0-3`, `fcs.0-1`, `out` (output)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 width: float = 1.0) -> None:
        super().__init__(2, num_classes, in_channels, image_size, width)


class Conv6(ConvNet):
    """Conv-6: 64-64-pool-128-128-pool-256-256-pool, FC 256-256-out. Layers `convs.0-5`, `fcs.0-1`,
    `out` (output)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 width: float = 1.0) -> None:
        super().__init__(3, num_classes, in_channels, image_size, width)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut of He et al. (2016): subsample by `stride`, zero-pad the new channels."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride, self.extra_channels = stride, extra_channels

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra_channels))


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), 3x3 convs, the first with `stride`.

    Shortcut when the shape changes: `conv` = 1x1 strided conv + BatchNorm (projection, as in
    Frankle et al. 2020), `pad` = subsample and zero-pad the new channels (He et al. 2016, option A,
    no parameters); the identity otherwise.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        elif shortcut == "conv":
            self.shortcut = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                bn=nn.BatchNorm2d(c_out),
            ))
        else:
            self.shortcut = ZeroPadShortcut(stride, c_out - c_in)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR (He et al. 2016): 3x3 conv stem with 16 channels, three stages of three
    basic blocks with 16, 32, 64 channels (stride 2 entering stages 2 and 3), global average
    pooling, one linear layer. Convs have no bias (BatchNorm follows).

    Layers: `stem.conv`, `stages.{s}.{b}.conv1`, `.conv2`, `.shortcut.conv` (projection shortcut
    of blocks that change shape, when shortcut="conv"), `out` (output).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 shortcut: str = "conv") -> None:
        super().__init__()
        if shortcut not in ("conv", "pad"):
            raise LTCError(f"unknown ResNet shortcut {shortcut!r}: use conv (1x1 projection) or pad (option A)")
        channels = [scaled(c, width) for c in (16, 32, 64)]
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False),
            bn=nn.BatchNorm2d(channels[0]),
        ))
        stages, c_in = [], channels[0]
        for s, c in enumerate(channels):
            blocks = [BasicBlock(c_in if b == 0 else c, c, 2 if (s > 0 and b == 0) else 1, shortcut)
                      for b in range(3)]
            stages.append(nn.Sequential(*blocks))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.out = nn.Linear(channels[-1], num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_kaiming_normal(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(F.relu(self.stem(x)))
        return self.out(x.mean(dim=(2, 3)))


VGG16_PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


class VGG16(nn.Module):
    """VGG-16 for CIFAR-10 as in Frankle et al. (2020): 13 3x3 convs (64,64,M,128,128,M,256x3,M,
    512x3,M,512x3; M = 2x2 max-pool), each followed by BatchNorm and ReLU, then global average
    pooling and one linear layer. Convs have no bias (BatchNorm follows).

    Layers: `convs.0` ... `convs.12`, `bns.0` ... `bns.12`, `out` (output).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        convs, bns, self.pool_after = [], [], []
        c_in = in_channels
        for spec in VGG16_PLAN:
            if spec == "M":
                self.pool_after.append(len(convs) - 1)
                continue
            c_out = scaled(spec, width)
            convs.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False))
            bns.append(nn.BatchNorm2d(c_out))
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.bns = nn.ModuleList(bns)
        self.out = nn.Linear(c_in, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_kaiming_normal(self)

    def forward(self, x: Tensor) -> Tensor:
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = F.relu(bn(conv(x)))
            if i in self.pool_after:
                x = F.max_pool2d(x, 2)
        return self.out(x.mean(dim=(2, 3)))
