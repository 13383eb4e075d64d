"""Exact function-preserving reparametrisations of a network's units: permutations and positive
rescalings, written on its weights.

A unit (a hidden ReLU unit, a conv channel, an MLP neuron, an attention head, a residual
coordinate) owns a region of several parameter tensors. A `Slot` names one such region: along
`axis` of tensor `name`, unit j owns the `block` entries starting at `offset + j * stride`
(stride defaults to block: units side by side). A GPT-2 head in the fused `c_attn` weight, for
instance, is three slots on axis 1 (q, k, v at offsets 0, d, 2d, block d_head); a GPT-NeoX head
is three slots interleaved with stride 3 d_head.

Each slot has a `role` under rescaling by s_j > 0:
  IN       the unit's incoming weights and bias (its value is a linear function of them): x s_j
  OUT      the weights that read the unit:                                                / s_j
  CARRIED  moved with the unit by a permutation, unchanged by a rescaling (a head's q and k,
           a Llama gate, BatchNorm running statistics, a norm's gain)
A permutation moves every slot; a rescaling is a symmetry only where the unit's nonlinearity is
positively homogeneous (ReLU), which the layout owner (`channels.units`) says.

Convention: `perm[j]` is the old unit that becomes new unit j.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lth.errors import LTCError

IN, OUT, CARRIED = "in", "out", "carried"
ROLES = (IN, OUT, CARRIED)
State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Slot:
    """The entries of tensor `name` that each of `n` units owns along `axis` (see the module
    docstring): unit j owns indices offset + j * stride + [0, block)."""

    name: str
    axis: int
    block: int = 1
    offset: int = 0
    stride: int | None = None
    role: str = IN

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"slot role must be one of {ROLES}, got {self.role!r}")

    @property
    def step(self) -> int:
        return self.block if self.stride is None else self.stride

    def indices(self, n: int) -> torch.Tensor:
        """(n, block) indices along `axis`: row j holds unit j's entries."""
        starts = self.offset + self.step * torch.arange(n)
        return starts[:, None] + torch.arange(self.block)[None, :]

    def rows(self, tensor: torch.Tensor, n: int) -> torch.Tensor:
        """The tensor's entries of each unit as an (n, entries) matrix."""
        picked = tensor.movedim(self.axis, 0)[self.indices(n).flatten()]
        return picked.reshape(n, -1)


def _check(state: Mapping[str, torch.Tensor], slot: Slot, n: int) -> None:
    size = state[slot.name].shape[slot.axis]
    end = slot.offset + slot.step * (n - 1) + slot.block
    if end > size:
        raise LTCError(f"{slot.name} has {size} entries on axis {slot.axis}, the layout needs {end} for {n} units")


def permute_slots(state: Mapping[str, torch.Tensor], slots: Iterable[Slot], perm: Sequence[int]) -> State:
    """`state` with the units relabelled: new unit j is old unit perm[j] in every slot (tensors
    absent from `state` are skipped, other tensors are unchanged)."""
    perm = torch.as_tensor(np.asarray(perm), dtype=torch.long)
    n = len(perm)
    if not torch.equal(perm.sort().values, torch.arange(n)):
        raise LTCError(f"not a permutation of {n} units: {perm.tolist()[:10]}...")
    out = dict(state)
    for slot in slots:
        if slot.name not in out:
            continue
        _check(out, slot, n)
        tensor = out[slot.name]
        index = torch.arange(tensor.shape[slot.axis])
        index[slot.indices(n).flatten()] = slot.indices(n)[perm].flatten()
        out[slot.name] = tensor.index_select(slot.axis, index)
    return out


def rescale_slots(state: Mapping[str, torch.Tensor], slots: Iterable[Slot], scales: Sequence[float]) -> State:
    """`state` with unit j's IN entries multiplied by scales[j] and its OUT entries divided by it
    (computed in float64, stored in each tensor's dtype); CARRIED entries unchanged."""
    scales = torch.as_tensor(np.asarray(scales), dtype=torch.float64)
    if not bool((scales > 0).all()):
        raise LTCError("unit rescaling needs positive factors")
    n = len(scales)
    out = dict(state)
    for slot in slots:
        if slot.name not in out or slot.role == CARRIED:
            continue
        _check(out, slot, n)
        tensor = out[slot.name]
        factor = torch.ones(tensor.shape[slot.axis], dtype=torch.float64)
        per_entry = scales if slot.role == IN else 1.0 / scales
        factor[slot.indices(n).flatten()] = per_entry.repeat_interleave(slot.block)
        shape = [1] * tensor.dim()
        shape[slot.axis] = -1
        out[slot.name] = (tensor.double() * factor.view(shape)).to(tensor.dtype)
    return out


def rotate_slots(state: Mapping[str, torch.Tensor], slots: Iterable[Slot], q: torch.Tensor) -> State:
    """`state` with every IN and OUT slot of single-entry units contracted with an orthogonal Q on
    its axis: new[..., j, ...] = sum_i old[..., i, ...] Q[i, j]. For residual coordinates this
    writes the stream as x' = x Q: writes become W Q, reads Q^T W (the same contraction, Q being
    orthogonal). CARRIED slots (norm gains) must be constant, as after folding them."""
    out = dict(state)
    n = q.shape[0]
    for slot in slots:
        if slot.name not in out:
            continue
        if slot.block != 1 or slot.offset != 0 or slot.step != 1 or out[slot.name].shape[slot.axis] != n:
            raise LTCError(f"{slot.name}: a rotation needs the whole axis {slot.axis} to be the rotated units")
        tensor = out[slot.name]
        if slot.role == CARRIED:
            if not bool((tensor == tensor.flatten()[0]).all()):
                raise LTCError(f"{slot.name} is not constant: fold the norms before rotating")
            continue
        moved = tensor.double().movedim(slot.axis, -1) @ q.double()
        out[slot.name] = moved.movedim(-1, slot.axis).to(tensor.dtype)
    return out
