"""Function-preserving changes of basis, for the basis-dependence branches.

Magnitude pruning depends on the basis the weights are written in. A change of basis that leaves
the network's function unchanged lets a ticket be found "in other coordinates": subcircuits
living in a privileged basis are lost by it, basis-free channels are not.

- `InputRotation`: a random orthogonal R on the input space, for nets that read their raw input
  with a linear layer (an MLP, LeNet). The network reads x' = R x through a fixed input hook and
  its first linear layer becomes W' = W R^T, so W' x' = W x. Under SGD (with momentum, L2 or
  decoupled weight decay) training is exactly equivariant to it (the update of W' is the update
  of W times R^T); under Adam it is not (per-coordinate step sizes).
- `ResidualRotation`: a random rotation of a transformer's residual stream (GPT-2, GPT-NeoX,
  Llama) folded into its weights (`lth.rotation`, norms folded first); no hook is needed. Its
  control arm (`rotate=False`) goes through the same norm folding with Q = I, so magnitude
  pruning sees the same network in both arms up to the rotation.

A change has `weights(state)` (the same function's state dict in the new basis) and
`attach(net)` (what a freshly built net needs to read the original inputs).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from lth.errors import LTCError
from lth.orthogonal import haar_orthogonal
from lth.reparam import Slot
from lth.rotation import rotate_residual_basis
from lth.seeds import generator

State = dict[str, torch.Tensor]


class BasisChange(Protocol):
    def weights(self, state: State) -> State:
        """`state` expressed in the new basis (same function once `attach`ed)."""

    def attach(self, net: nn.Module) -> None:
        """Make a net built from the new-basis weights compute the original function of its input."""


def input_linear(net: nn.Module) -> str:
    """The dotted name of the linear layer that reads the net's raw input: the first module with
    parameters, which must be an nn.Linear; else one line saying the input rotation cannot apply."""
    for name, module in net.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            if isinstance(module, nn.Linear):
                return name
            raise LTCError(
                f"{type(net).__name__} reads its input with {name} ({type(module).__name__}), not a linear "
                "layer: the input rotation of the basis test (basis_* branches) cannot apply; drop them "
                "from imp.branches")
    raise LTCError(f"{type(net).__name__} has no parameters: the input rotation needs a linear input layer")


class InputRotation:
    """x -> R x at the input, W -> W R^T in the input layer (see the module docstring)."""

    def __init__(self, net: nn.Module, seed: int) -> None:
        self.layer = input_linear(net)
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
    """A transformer's residual basis rotated in its weights (`lth.rotation.rotate_residual_basis`):
    `residual` lists the tensors of the residual coordinates (`channels.units.residual_layout`);
    `rotate=False` folds the norms only (Q = I), the control arm."""

    def __init__(self, make_net: Callable[[], nn.Module], seed: int, residual: Sequence[Slot],
                 rotate: bool = True) -> None:
        self.make_net, self.seed, self.residual, self.rotate = make_net, seed, tuple(residual), rotate

    def weights(self, state: State) -> State:
        net = self.make_net()
        net.load_state_dict(state)
        rotate_residual_basis(net, self.residual, generator(self.seed, "residual-rotation"), identity=not self.rotate)
        return {k: v.detach().clone() for k, v in net.state_dict().items()}

    def attach(self, net: nn.Module) -> None:
        """Nothing: the rotation lives in the weights."""


class Identity:
    """No change (the control arm of the input rotation: the input needs no folding)."""

    def weights(self, state: State) -> State:
        return dict(state)

    def attach(self, net: nn.Module) -> None:
        """Nothing to attach."""
