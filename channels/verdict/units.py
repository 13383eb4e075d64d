"""Units of a layer: which weights belong to each unit, how much of it a mask keeps, and aligning
the units of two networks (hidden units are only defined up to a permutation) by their weights
(`weight_matching`).

A unit layout lists, for a site, the tensors and axes indexed by its units: for the MLP site
`act.i` (the output of `hidden.i`), unit j is row j of `hidden.i.weight` (its inputs, and
entry j of `hidden.i.bias`) and column j of the next layer's weight (its outputs).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

Layout = list[tuple[str, int]]

_MLP_SITE = re.compile(r"^act\.(\d+)$")


def mlp_unit_layout(names: Iterable[str], site: str) -> Layout | None:
    """The layout of MLP site `act.i` over the tensors in `names`; None when the names are no such MLP."""
    names = set(names)
    match = _MLP_SITE.match(site)
    if not match:
        return None
    i = int(match.group(1))
    writer = f"hidden.{i}.weight"
    reader = f"hidden.{i + 1}.weight" if f"hidden.{i + 1}.weight" in names else "out.weight"
    if writer not in names or reader not in names:
        return None
    layout = [(writer, 0), (reader, 1)]
    if f"hidden.{i}.bias" in names:
        layout.append((f"hidden.{i}.bias", 0))
    return layout


def unit_keep_fraction(mask: Mapping[str, torch.Tensor], layout: Layout) -> np.ndarray:
    """u_j = kept / total over the weights of unit j that the mask covers (its inputs and outputs)."""
    kept, total = None, None
    for name, axis in layout:
        if name not in mask:
            continue
        m = mask[name].movedim(axis, 0).reshape(mask[name].shape[axis], -1).double()
        kept = m.sum(1) if kept is None else kept + m.sum(1)
        total = torch.full_like(kept, m.shape[1]) if total is None else total + m.shape[1]
    if kept is None:
        raise ValueError(f"the mask covers none of the layout's tensors {[n for n, _ in layout]}")
    return (kept / total).numpy()


def permute_units(tensors: Mapping[str, torch.Tensor], layout: Layout, perm: np.ndarray) -> dict[str, torch.Tensor]:
    """Relabel the units of `layout`: new unit j is old unit perm[j]; other tensors unchanged."""
    out = dict(tensors)
    index = torch.as_tensor(perm, dtype=torch.long)
    for name, axis in layout:
        if name in out:
            out[name] = out[name].index_select(axis, index)
    return out


def weight_matching(weights_a: Mapping[str, torch.Tensor], weights_b: Mapping[str, torch.Tensor],
                    layouts: list[Layout], sweeps: int = 5) -> list[np.ndarray]:
    """Permutations of network b's hidden units that best match network a's weights (Ainsworth
    et al. 2023): for each layout (one hidden layer), maximise sum over its tensors of
    <W_a, W_b permuted> by the Hungarian algorithm, one layer at a time with the others fixed,
    for a few sweeps. Returns one perm per layout (new unit j of b is old unit perm[j])."""
    perms = [np.arange(weights_a[layout[0][0]].shape[layout[0][1]]) for layout in layouts]

    def permuted_b() -> dict[str, torch.Tensor]:
        out = dict(weights_b)
        for layout, perm in zip(layouts, perms):
            out = permute_units(out, layout, perm)
        return out

    for _ in range(sweeps):
        changed = False
        for i, layout in enumerate(layouts):
            perms[i] = np.arange(len(perms[i]))
            current = permuted_b()
            cost = np.zeros((len(perms[i]), len(perms[i])))
            for name, axis in layout:
                a = weights_a[name].movedim(axis, 0).reshape(len(perms[i]), -1).double()
                b = current[name].movedim(axis, 0).reshape(len(perms[i]), -1).double()
                cost += (a @ b.T).numpy()
            rows, cols = linear_sum_assignment(-cost)
            new = np.empty(len(rows), dtype=np.int64)
            new[rows] = cols
            changed |= not np.array_equal(new, perms[i])
            perms[i] = new
        if not changed:
            break
    return perms
