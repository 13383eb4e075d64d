"""Coupling between transformer blocks: do their Jacobians share singular directions across depth and tokens?

The block Jacobian J_l(t) = d resid_post.l[t] / d resid_pre.l[t] (one block, residual included,
at one token) has top-k singular vectors U_l(t) (outputs) and V_l(t) (inputs). In the spirit of
Aubry et al. (2024, "Transformer block coupling"), the coupling of two blocks is the mean of the
top-k subspace overlaps of their left and right singular vectors,

    coupling(A, B) = (overlap(U_A, U_B) + overlap(V_A, V_B)) / 2,

1 for shared directions, about k / d (`chance`) for unrelated ones. Reported as a depth matrix
(layers l, l' at the same token, averaged over tokens) and a token matrix (tokens t, t' in the
same layer, averaged over layers). In a causal model the J_l(t) of all tokens come from d backward
passes per layer (`channels.self_jacobian`), not d per token.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from channels.compare import subspace_overlap
from channels.jacobian import iter_sequence_jacobian
from channels.self_jacobian import self_jacobians


def block_jacobians(
    model: nn.Module, ids: torch.Tensor, layer: int, targets: list[int], chunk_size: int, causal: bool
) -> torch.Tensor:
    """J_l(t) for each target, (n_targets, d, d), exact: in a causal model from d backward passes
    for all targets together (`channels.self_jacobian`), else d VJPs per target."""
    a, b = f"resid_pre.{layer}", f"resid_post.{layer}"
    if causal:
        return self_jacobians(model, ids, a, b, targets, chunk_size)
    blocks = iter_sequence_jacobian(model, ids, a, b, targets=targets, offsets=[0], chunk_size=chunk_size)
    return torch.stack([block[0] for _, block in blocks])


def block_singular_vectors(
    model: nn.Module, ids: torch.Tensor, n_layers: int, targets: list[int], k: int, chunk_size: int,
    causal: bool = True,
) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """[layer][target] -> (U (d, k), V (d, k)) of J_l(t)."""
    out = []
    for layer in range(n_layers):
        row = []
        for block in block_jacobians(model, ids, layer, targets, chunk_size, causal):
            left, _, right = torch.linalg.svd(block.double())
            row.append((left[:, :k].cpu().numpy(), right[:k].T.cpu().numpy()))
        out.append(row)
    return out


def coupling(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """(overlap of the left top-k subspaces + overlap of the right ones) / 2."""
    return 0.5 * (subspace_overlap(a[0], b[0]) + subspace_overlap(a[1], b[1]))


def coupling_matrices(vectors: list[list[tuple[np.ndarray, np.ndarray]]]) -> dict[str, np.ndarray]:
    """`depth` (L, L): mean over tokens; `tokens` (n_t, n_t): mean over layers."""
    n_layers, n_targets = len(vectors), len(vectors[0])
    depth = np.array([
        [np.mean([coupling(vectors[i][t], vectors[j][t]) for t in range(n_targets)]) for j in range(n_layers)]
        for i in range(n_layers)
    ])
    tokens = np.array([
        [np.mean([coupling(vectors[l][i], vectors[l][j]) for l in range(n_layers)]) for j in range(n_targets)]
        for i in range(n_targets)
    ])
    return {"depth": depth, "tokens": tokens}


def measure_coupling(
    model: nn.Module, ids: torch.Tensor, n_layers: int, targets: list[int], k: int, chunk_size: int,
    causal: bool = True,
) -> dict:
    """The coupling matrices of one context (1, L) at `targets`, with k, d and chance k / d."""
    vectors = block_singular_vectors(model, ids, n_layers, targets, k, chunk_size, causal)
    width = vectors[0][0][0].shape[0]
    matrices = coupling_matrices(vectors)
    off = ~np.eye(n_layers, dtype=bool)
    return {
        "k": k,
        "width": width,
        "chance": k / width,
        "targets": targets,
        "depth": matrices["depth"],
        "tokens": matrices["tokens"],
        "mean_across_depth": float(matrices["depth"][off].mean()) if n_layers > 1 else float("nan"),
        "mean_adjacent_layers": float(np.mean(np.diag(matrices["depth"], 1))) if n_layers > 1 else float("nan"),
    }
