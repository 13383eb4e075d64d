"""Units of a layer: which weights belong to each unit, how much of it a mask keeps, and aligning
the units of two networks (hidden units are only defined up to a permutation): by their
activations (`align_units`) or by their weights (`weight_matching`).

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


def localisation(vectors: np.ndarray, weights: np.ndarray, keep: np.ndarray,
                 n_perm: int = 1000, seed: int = 0) -> dict[str, float]:
    """How much of the channels' mass sits on the units a ticket keeps, against a permutation null.

    vectors (d, k): channel directions over d units; weights (k,): their eigenvalues; keep (d,):
    u_j, the fraction of unit j the ticket keeps. share = sum_c w_c sum_j v_jc^2 u_j / sum_c w_c
    (v_c scaled to unit norm). Null: the u_j permuted among units (the same unevenness on random
    units); its mean is exactly mean(u). score = (share - mean u) / (max u - mean u): 0 at chance,
    1 when all the mass sits on the most-kept units. p = fraction of null draws >= share.
    nan score when every unit is kept alike (no power).
    """
    v = vectors / np.linalg.norm(vectors, axis=0, keepdims=True)
    w = np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    w = w / w.sum() if w.sum() > 0 else np.full(w.shape, 1.0 / w.size)
    mass = (v**2) @ w  # (d,), sums to 1
    share = float(mass @ keep)
    mean, top = float(keep.mean()), float(keep.max())
    rng = np.random.default_rng(seed)
    null = np.stack([keep[rng.permutation(keep.size)] for _ in range(n_perm)]) @ mass
    score = (share - mean) / (top - mean) if top - mean > 1e-12 else float("nan")
    return {"share": share, "null_mean": mean, "null_sd": float(null.std()), "score": float(score),
            "p_value": float((1 + (null >= share - 1e-12).sum()) / (1 + n_perm))}


def align_units(acts_a: np.ndarray, acts_b: np.ndarray) -> np.ndarray:
    """perm such that unit perm[j] of network b best matches unit j of network a.

    Maximises the summed Pearson correlation of matched units' activations over the same inputs
    (Hungarian algorithm); a constant (dead) unit correlates 0 with everything.
    """
    a = acts_a - acts_a.mean(0)
    b = acts_b - acts_b.mean(0)
    norms = np.outer(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0))
    corr = np.divide(a.T @ b, norms, out=np.zeros((a.shape[1], b.shape[1])), where=norms > 0)
    rows, cols = linear_sum_assignment(-corr)
    perm = np.empty(a.shape[1], dtype=np.int64)
    perm[rows] = cols
    return perm


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
