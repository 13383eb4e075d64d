"""The sites whose units the tests read, for a run's network: the input coordinates, when the input
is a feature vector, and every site with a unit layout (`channels.units`): the hidden layers of an
MLP or vision net; in a transformer every block's MLP neurons (`mlp_hidden.l`), heads (`attn.l`, a
head's d_head coordinates one unit) and residual stream (`resid_pre.l`, and `resid_post` of the
last block: the other `resid_post.l` are `resid_pre.{l+1}`).

Each site comes with the layout that says which weights belong to each of its units, so the
ticket's mask can be read per unit: an input coordinate owns its column of the first layer's
weight; a hidden unit its row of the layer's weight (and bias) and its column of the next one.
`ticket_paths` reads the mask as a graph: how many of the ticket's input-to-output paths run
through each unit.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from channels.units import (
    NEURON,
    RESIDUAL,
    UnitLayout,
    mlp_unit_layout,
    unit_keep_fraction,
    unit_layouts,
)
from lth.reparam import IN, OUT, Slot

INPUT = "input"


@dataclass(frozen=True)
class UnitSite:
    """A site, its unit count and the layout of its units' weights."""

    name: str
    units: int
    layout: UnitLayout

    @property
    def residual(self) -> bool:
        """A residual-stream site (the coordinates every block reads and writes)."""
        return self.layout.kind == RESIDUAL

    def unit_of(self) -> torch.Tensor:
        """Each activation coordinate's unit (a head spans d_head coordinates)."""
        return torch.arange(self.units * self.layout.unit_dims) // self.layout.unit_dims

    @property
    def writer(self) -> str:
        """The weight that writes the site's units (its rows are the units; none for the input)."""
        return next(slot.name for slot in self.layout.slots if slot.role == IN and slot.name.endswith("weight"))

    @property
    def reader(self) -> str:
        """The weight that reads the site's units (its columns are the units)."""
        return next(slot.name for slot in self.layout.slots if slot.role == OUT)


def input_site(mask: Mapping[str, torch.Tensor], x: torch.Tensor) -> UnitSite | None:
    """The input coordinates of a network fed feature vectors (x float, (n, d)); None otherwise."""
    if not torch.is_floating_point(x) or x.dim() != 2:
        return None
    first = next((name for name, m in mask.items() if m.dim() == 2 and m.shape[1] == x.shape[1]), None)
    return None if first is None else UnitSite(INPUT, x.shape[1], UnitLayout(INPUT, "coordinate", (Slot(first, 1, role=OUT),), False, x.shape[1]))


def hidden_sites(mask: Mapping[str, torch.Tensor]) -> list[UnitSite]:
    """Every MLP hidden layer `act.i` whose weights are in the mask, in depth order."""
    found, i = [], 0
    while (layout := mlp_unit_layout(mask.keys(), f"act.{i}")) is not None:
        found.append(UnitSite(f"act.{i}", layout.count(mask), layout))
        i += 1
    return found


def layout_sites(net: nn.Module) -> list[UnitSite]:
    """Every site of `net` with a unit layout, in depth order; of the residual stream `resid_pre.l`
    and the last `resid_post` (the stream between blocks read once). [] for a model none is known for."""
    layouts = unit_layouts(net)
    last_post = max((layout.site for layout in layouts if layout.site.startswith("resid_post.")),
                    key=lambda site: int(site.split(".")[1]), default=None)
    return [UnitSite(layout.site, layout.n_units, layout) for layout in layouts
            if not layout.site.startswith("resid_post.") or layout.site == last_post]


def unit_sites(mask: Mapping[str, torch.Tensor], x: torch.Tensor, net: nn.Module | None = None) -> list[UnitSite]:
    """The input (when it has coordinates of its own) and the hidden sites: from the network's unit
    layouts when `net` is given and known (`layout_sites`), else the MLP layers the mask names."""
    first = input_site(mask, x)
    hidden = layout_sites(net) if net is not None else []
    return ([first] if first is not None else []) + (hidden or hidden_sites(mask))


def _chain(mask: Mapping[str, torch.Tensor], sites: list[UnitSite]) -> list[torch.Tensor] | None:
    """The weight masks from the input to the output, (out, in) each, when the hidden sites form a
    plain chain (each layer's reader is the next one's writer); None otherwise."""
    hidden = [s for s in sites if s.name != INPUT]
    if not hidden or any(s.layout.kind != NEURON for s in hidden):
        return None
    names = [hidden[0].writer] + [s.reader for s in hidden]
    if any(s.writer != names[i] for i, s in enumerate(hidden)) or \
            any(n not in mask or mask[n].dim() != 2 for n in names):
        return None
    return [mask[n].double() for n in names]


def ticket_paths(mask: Mapping[str, torch.Tensor], sites: list[UnitSite]) -> dict[str, np.ndarray]:
    """Per site and unit: the number of input-to-output paths of the mask's graph that run through
    the unit, (paths from the inputs to it) x (paths from it to the outputs). A unit the ticket keeps
    but cuts off from the output (its outgoing weights pruned) carries none. Networks that are no
    plain chain of neurons (conv nets, transformers) fall back to the fraction of each unit's
    weights the mask keeps (a head: its q, k, v and output slices; a residual coordinate: every
    pruned tensor's row or column that reads or writes it)."""
    chain = _chain(mask, sites)
    if chain is None:
        return {s.name: unit_keep_fraction(mask, s.layout) for s in sites}
    into = [torch.ones(chain[0].shape[1], dtype=torch.float64)]
    for layer in chain[:-1]:
        into.append(layer @ into[-1])
    out_of = [torch.ones(chain[-1].shape[0], dtype=torch.float64)]
    for layer in reversed(chain):
        out_of.insert(0, layer.T @ out_of[0])
    hidden = [s for s in sites if s.name != INPUT]
    found = {s.name: (into[i + 1] * out_of[i + 1]).numpy() for i, s in enumerate(hidden)}
    if any(s.name == INPUT for s in sites):
        found[INPUT] = out_of[0].numpy()
    return found
