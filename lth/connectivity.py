"""Linear mode connectivity and instability (Frankle et al. 2020).

Two copies of a network trained from the same weights (with different data order) are
*linearly connected* when the error does not rise along the straight line between them. IMP
finds matching tickets only where training is stable in this sense, so the error barrier is
reported beside each level's tickets.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from lth.errors import LTCError


def interpolate_state_dicts(sd_a: Mapping[str, Tensor], sd_b: Mapping[str, Tensor],
                            alpha: float) -> dict[str, Tensor]:
    """The point (1 - alpha) * a + alpha * b of the line between two state dicts.

    Floating tensors (weights, biases, BatchNorm running statistics) are interpolated; the
    others (integer buffers such as BatchNorm's num_batches_tracked) are taken from a. A weight
    that is zero in both a and b (pruned by a shared mask) is zero at every alpha.
    """
    if set(sd_a) != set(sd_b):
        raise LTCError(
            f"state dicts have different entries ({sorted(set(sd_a) ^ set(sd_b))[:5]}): "
            "interpolate two copies of the same model"
        )
    out = {}
    for name, a in sd_a.items():
        b = sd_b[name]
        if a.shape != b.shape:
            raise LTCError(
                f"{name!r} has shape {tuple(a.shape)} in one state dict and {tuple(b.shape)} in "
                "the other: interpolate two copies of the same model"
            )
        out[name] = torch.lerp(a, b.to(a.dtype), alpha) if a.is_floating_point() else a.clone()
    return out


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_batchnorm_statistics(model: nn.Module, inputs: Iterable[Tensor]) -> int:
    """Re-estimate every BatchNorm's running mean and variance on `inputs` (train-mode forwards).

    The running statistics of an interpolated network are not the statistics of its activations,
    so before evaluating a point of the line they are reset and recomputed as the plain average
    over the batches (momentum None: a cumulative mean, independent of batch order). Weights are
    untouched; the model is left in eval mode. Returns the number of batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    n = 0
    try:
        for x in inputs:
            model(x)
            n += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    if norms and n == 0:
        raise LTCError("no batches to recompute the BatchNorm statistics on: the training set is empty")
    return n


def error_barrier(model: nn.Module, sd_a: Mapping[str, Tensor], sd_b: Mapping[str, Tensor],
                  evaluate: Callable[[nn.Module], float], n_points: int = 11) -> dict:
    """Error along the line from sd_a to sd_b and the height of its barrier.

    `evaluate(model)` returns the error (e.g. 1 - test accuracy) of `model` as loaded; it may
    recompute BatchNorm statistics first, since interpolated running statistics are not the
    statistics of the interpolated network. With err(alpha) the error at
    (1 - alpha) * a + alpha * b, on n_points evenly spaced alphas in [0, 1]:

        barrier         = max_alpha [err(alpha) - ((1 - alpha) err(0) + alpha err(1))]
        barrier_vs_mean = max_alpha err(alpha) - (err(0) + err(1)) / 2

    `barrier` measures the rise above the straight line joining the end errors (>= 0, since the
    ends are on the grid); `barrier_vs_mean` is the error barrier height of Frankle et al. (2020),
    who call training stable when it is about 0. The two agree when err(0) = err(1). Weights that
    are zero in both ends (pruned by a shared mask) stay zero along the whole line, so the line
    stays inside the ticket's subspace. The model's own weights are restored afterwards.

    Returns alphas, errors, barrier, barrier_alpha (where the barrier is reached),
    barrier_vs_mean, error_a, error_b.
    """
    if n_points < 2:
        raise LTCError(f"n_points must be at least 2 (both ends of the line), got {n_points}")
    alphas = torch.linspace(0.0, 1.0, n_points, dtype=torch.float64).tolist()
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    errors = []
    try:
        for alpha in alphas:
            model.load_state_dict(interpolate_state_dicts(sd_a, sd_b, alpha))
            errors.append(float(evaluate(model)))
    finally:
        model.load_state_dict(original)
    err_a, err_b = errors[0], errors[-1]
    rise = [e - ((1 - a) * err_a + a * err_b) for a, e in zip(alphas, errors)]
    peak = max(range(n_points), key=rise.__getitem__)
    return {
        "alphas": alphas,
        "errors": errors,
        "barrier": rise[peak],
        "barrier_alpha": alphas[peak],
        "barrier_vs_mean": max(errors) - (err_a + err_b) / 2,
        "error_a": err_a,
        "error_b": err_b,
    }
