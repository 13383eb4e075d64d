"""Multi-layer perceptrons, the default subject of IMP on MNIST-1D."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lth.errors import LTCError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class MLP(nn.Module):
    """Linear -> activation blocks, then a linear output layer named `out`.

    Hidden layers are `hidden.0`, `hidden.1`, ... (each a Linear followed by the activation at
    `act.0`, `act.1`, ...), so the hidden representations are the sites `act.{i}`.
    """

    def __init__(
        self,
        in_features: int = 40,
        hidden: Sequence[int] = (100, 100),
        num_classes: int = 10,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise LTCError(f"unknown activation {activation!r}: use one of {sorted(ACTIVATIONS)}")
        widths = [in_features, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.act = nn.ModuleList(ACTIVATIONS[activation]() for _ in hidden)
        self.out = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        x = x.flatten(1)
        for layer, act in zip(self.hidden, self.act):
            x = act(layer(x))
        return self.out(x)
