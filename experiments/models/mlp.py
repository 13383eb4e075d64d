"""Multi-layer perceptrons, the default subject of IMP on MNIST-1D."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lth.errors import LTCError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}
INITS = ("uniform", "normal")
DEFAULT_INIT = "uniform"  # nn.Linear's own; runs named before `init` existed used it


def normal_init_(layer: nn.Linear) -> None:
    """Re-draw `layer`'s weights and bias from normals with the variances of `nn.Linear`'s default
    uniform init (bound b = 1/sqrt(fan_in), variance b^2 / 3). A Gaussian weight matrix stays
    Gaussian, entry by entry, when its input space is rotated; a uniform one does not (its entries
    are bounded in the original basis and not in a rotated one), which marks the original basis
    for magnitude pruning before any training has."""
    std = layer.in_features ** -0.5 / 3 ** 0.5
    nn.init.normal_(layer.weight, std=std)
    nn.init.normal_(layer.bias, std=std)


class MLP(nn.Module):
    """Linear -> activation blocks, then a linear output layer named `out`.

    Hidden layers are `hidden.0`, `hidden.1`, ... (each a Linear followed by the activation at
    `act.0`, `act.1`, ...), so the hidden representations are the sites `act.{i}`. `init`:
    `nn.Linear`'s default uniform init, or `normal` at the same variances (`normal_init_`), whose
    distribution a rotation of the input space leaves unchanged (what T1's basis arms assume).
    """

    def __init__(
        self,
        in_features: int = 40,
        hidden: Sequence[int] = (100, 100),
        num_classes: int = 10,
        activation: str = "relu",
        init: str = DEFAULT_INIT,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise LTCError(f"unknown activation {activation!r}: use one of {sorted(ACTIVATIONS)}")
        if init not in INITS:
            raise LTCError(f"unknown init {init!r}: use one of {', '.join(INITS)}")
        widths = [in_features, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.act = nn.ModuleList(ACTIVATIONS[activation]() for _ in hidden)
        self.out = nn.Linear(widths[-1], num_classes)
        if init == "normal":
            for layer in (*self.hidden, self.out):
                normal_init_(layer)

    def forward(self, x):
        x = x.flatten(1)
        for layer, act in zip(self.hidden, self.act):
            x = act(layer(x))
        return self.out(x)


class ResidualMLP(nn.Module):
    """The MLP of the MNIST-1D lottery-ticket notebook (Greydanus 2020): one input layer, then
    residual blocks, then a linear output layer named `out`.

        h = relu(W_0 x);   h = h + relu(W_i h) for i = 1..blocks;   logits = out(h)

    Layers keep `nn.Linear`'s default init. The input layer is `hidden.0`, the blocks
    `hidden.1`, ...; the activation sites are `act.0` (the input layer's relu) and `act.i` (block
    i's relu, before it is added to the stream), as in `MLP`.
    """

    def __init__(self, in_features: int = 40, width: int = 500, num_classes: int = 10, blocks: int = 1) -> None:
        super().__init__()
        if width < 1 or blocks < 0:
            raise LTCError(f"ResidualMLP needs width >= 1 and blocks >= 0, got width={width}, blocks={blocks}")
        self.hidden = nn.ModuleList([nn.Linear(in_features, width), *(nn.Linear(width, width) for _ in range(blocks))])
        self.act = nn.ModuleList(nn.ReLU() for _ in self.hidden)
        self.out = nn.Linear(width, num_classes)

    def forward(self, x):
        h = self.act[0](self.hidden[0](x.flatten(1)))
        for layer, act in zip(self.hidden[1:], self.act[1:]):
            h = h + act(layer(h))
        return self.out(h)
