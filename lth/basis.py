"""Function-preserving changes of basis, for the basis-dependence branches.

Magnitude pruning depends on the basis the weights are written in. A change of basis that leaves
the network's function unchanged lets a ticket be found "in other coordinates": subcircuits
living in a privileged basis are lost by it, basis-free channels are not.

- `InputRotation`: a random orthogonal R on the input space. The network reads x' = R x through
  a fixed input hook and its first linear layer becomes W' = W R^T, so W' x' = W x. Under SGD
  (with momentum and L2) training is exactly equivariant to it (the update of W' is the update
  of W times R^T); under Adam it is not (per-coordinate step sizes).
- `ResidualRotation`: a random rotation of a GPT-2's residual stream folded into its weights
  (`lth.rotation`, LayerNorms folded first); no hook is needed.

A change has `weights(state)` (the same function's state dict in the new basis) and
`attach(net)` (what a freshly built net needs to read the original inputs).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from lth.errors import LTCError
from lth.seeds import generator

State = dict[str, torch.Tensor]


class BasisChange(Protocol):
    def weights(self, state: State) -> State:
        """`state` expressed in the new basis (same function once `attach`ed)."""

    def attach(self, net: nn.Module) -> None:
        """Make a net built from the new-basis weights compute the original function of its input."""


def haar_orthogonal(d: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """A Haar-random (d, d) orthogonal matrix (QR of a Gaussian with R's diagonal signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def first_linear(net: nn.Module) -> str:
    """The dotted name of the first nn.Linear in module order (the layer reading the input)."""
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            return name
    raise LTCError(f"{type(net).__name__} has no linear input layer: the input rotation needs one")


class InputRotation:
    """x -> R x at the input, W -> W R^T in the first linear layer (see the module docstring)."""

    def __init__(self, net: nn.Module, seed: int) -> None:
        self.layer = first_linear(net)
        linear = net.get_submodule(self.layer)
        self.rotation = haar_orthogonal(linear.in_features, generator(seed, "input-rotation"))

    def weights(self, state: State) -> State:
        key = f"{self.layer}.weight"
        out = dict(state)
        w = state[key]
        out[key] = (w.double() @ self.rotation.T).to(w.dtype)
        return out

    def attach(self, net: nn.Module) -> None:
        rotation = self.rotation
        converted: dict[tuple, torch.Tensor] = {}  # R^T in each (dtype, device) the net runs in, made once

        def rotate(module, args):
            x = args[0].flatten(1)
            if x.shape[1] != rotation.shape[0]:
                raise LTCError(f"the input has {x.shape[1]} features, the rotation {rotation.shape[0]}: "
                               "the input rotation needs the first linear layer to read the raw input")
            key = (x.dtype, x.device)
            if key not in converted:
                converted[key] = rotation.to(dtype=x.dtype, device=x.device).T
            return (x @ converted[key], *args[1:])

        net.register_forward_pre_hook(rotate)


class ResidualRotation:
    """A GPT-2's residual basis rotated in its weights (`lth.rotation.rotate_residual_basis`)."""

    def __init__(self, make_net: Callable[[], nn.Module], seed: int) -> None:
        self.make_net, self.seed = make_net, seed

    def weights(self, state: State) -> State:
        from lth.rotation import rotate_residual_basis

        net = self.make_net()
        net.load_state_dict(state)
        rotate_residual_basis(net, generator(self.seed, "residual-rotation"))
        return {k: v.detach().clone() for k, v in net.state_dict().items()}

    def attach(self, net: nn.Module) -> None:
        """Nothing: the rotation lives in the weights."""


class Identity:
    """No change (the control arm of the basis comparison)."""

    def weights(self, state: State) -> State:
        return dict(state)

    def attach(self, net: nn.Module) -> None:
        """Nothing to attach."""
