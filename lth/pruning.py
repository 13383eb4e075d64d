"""Magnitude pruning of the remaining weights (Frankle & Carbin 2019), level by level along a
density schedule.

The schedule says what each level prunes to (`check_schedule`):
- `geometric` (the default): every rate is a fraction of the weights that *remain*: pruning 20%
  twice leaves 64%;
- `linear`: level L keeps 1 - L * rate of each group's *original* count (rate 1/99 is the
  MNIST-1D notebook's `np.linspace(0, 1, 100)`, about 1% of the original per level);
- a list of densities: level L keeps densities[L - 1] of each group's original count.
A target density d of a group of n weights keeps n - floor((1 - d) * n) of them (the notebook's
count), computed exactly from the decimals written in the recipe.

Groups share one magnitude threshold (`strategy`): `global` pools every tensor, `layerwise`
prunes each tensor alone, `modulewise` pools the tensors of one module (a Linear's weight and
bias: the notebook's layers). Name patterns are shell-style globs (`fnmatch`) matched against
parameter names.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from fractions import Fraction

import torch
from torch import nn

from lth.errors import LTCError
from lth.masks import Mask

PRUNABLE_LAYER_TYPES: tuple[type, ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face GPT-2's `Conv1D` (a Linear with an (in, out) weight), matched by name so
    that `lth` need not import transformers."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _output_embedding(model: nn.Module) -> nn.Module | None:
    getter = getattr(model, "get_output_embeddings", None)
    return getter() if callable(getter) else None


def default_prunable(model: nn.Module) -> list[str]:
    """Weights of Linear / Conv layers (and HF Conv1D), in model order.

    Biases, norms, embeddings and a Hugging Face model's unembedding (`get_output_embeddings`)
    are left out; add them with `include` patterns.
    """
    params = dict(model.named_parameters())
    unembed = _output_embedding(model)
    names = []
    for mod_name, module in model.named_modules():
        if module is unembed:
            continue
        if isinstance(module, PRUNABLE_LAYER_TYPES) or _is_hf_conv1d(module):
            name = f"{mod_name}.weight" if mod_name else "weight"
            if name in params and params[name].requires_grad:
                names.append(name)
    return names


def _matching(names: Sequence[str], pattern: str) -> list[str]:
    return [n for n in names if fnmatchcase(n, pattern)]


def select_prunable(
    model: nn.Module, include: Sequence[str] = (), ignore: Sequence[str] = ()
) -> list[str]:
    """The default prunable weights plus parameters matching `include`, minus those matching `ignore`.

    A pattern that matches nothing is an error (it is almost always a typo).
    """
    all_names = [n for n, _ in model.named_parameters()]
    chosen = default_prunable(model)
    for pattern in include:
        hits = _matching(all_names, pattern)
        if not hits:
            raise LTCError(f"include pattern {pattern!r} matches no parameter; some names: {all_names[:6]}")
        chosen += [n for n in hits if n not in chosen]
    for pattern in ignore:
        hits = _matching(chosen, pattern)
        if not hits:
            raise LTCError(f"ignore pattern {pattern!r} matches no prunable parameter; prunable: {chosen[:8]}")
        chosen = [n for n in chosen if n not in hits]
    if not chosen:
        raise LTCError(
            f"no prunable tensors in {type(model).__name__}: add patterns to imp.include or relax imp.ignore"
        )
    order = {n: i for i, n in enumerate(all_names)}
    return sorted(chosen, key=order.__getitem__)


def resolve_rates(
    names: Sequence[str], fraction: float, overrides: Mapping[str, float]
) -> dict[str, float | None]:
    """Per-tensor pruning rate: the override whose pattern matches (first wins), else None (= default)."""
    check_fraction(fraction, "imp.prune_fraction")
    rates: dict[str, float | None] = {n: None for n in names}
    for pattern, rate in overrides.items():
        check_fraction(rate, f"imp.rate_overrides[{pattern!r}]", allow_zero=True)
        hits = _matching(names, pattern)
        if not hits:
            raise LTCError(f"rate override pattern {pattern!r} matches no prunable tensor; prunable: {list(names)[:8]}")
        for n in hits:
            if rates[n] is None:
                rates[n] = rate
    return rates


def check_fraction(value: float, what: str, allow_zero: bool = False) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise LTCError(f"{what} must be in {interval}, got {value}")


def _prune_smallest(scores: torch.Tensor, alive: torch.Tensor, count: int) -> torch.Tensor:
    """Return a copy of `alive` with the `count` smallest-scored alive entries set False.

    Ties are broken by position (earlier entries pruned first), so the result is deterministic.
    """
    flat_alive = alive.reshape(-1)
    idx = flat_alive.nonzero().squeeze(1)
    if count <= 0 or idx.numel() == 0:
        return alive.clone()
    order = torch.sort(scores.reshape(-1)[idx], stable=True).indices
    out = flat_alive.clone()
    out[idx[order[: min(count, idx.numel())]]] = False
    return out.reshape(alive.shape)


GEOMETRIC, LINEAR = "geometric", "linear"
STRATEGIES = ("global", "layerwise", "modulewise")
Schedule = str | Sequence[float]


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise LTCError(f"unknown imp.strategy {strategy!r}: use {', '.join(STRATEGIES)}")


def check_schedule(schedule: Schedule, fraction: float, levels: int,
                   overrides: Mapping[str, float] | None = None) -> None:
    """Refuse a schedule that cannot be run for `levels` levels: an unknown rule, densities that
    are not in (0, 1] or that rise, fewer densities than levels, a linear rule that reaches 0."""
    overrides = overrides or {}
    if isinstance(schedule, str):
        if schedule not in (GEOMETRIC, LINEAR):
            raise LTCError(f"unknown imp.schedule {schedule!r}: use {GEOMETRIC}, {LINEAR} or a list of densities")
        if schedule == LINEAR:
            named = [(f"imp.rate_overrides[{pattern!r}]", rate) for pattern, rate in overrides.items()]
            for what, rate in [("imp.prune_fraction", fraction), *named]:
                if levels * _exact(rate) >= 1:
                    most = math.ceil(1 / _exact(rate)) - 1
                    raise LTCError(f"the linear schedule at {rate} of the original weights per level ({what}) "
                                   f"prunes everything by level {levels}: use at most {most} levels")
        return
    densities = [float(d) for d in schedule]
    if not all(0 < d <= 1 for d in densities):
        raise LTCError(f"imp.schedule densities must be in (0, 1], got {densities}")
    if any(b > a for a, b in zip(densities, densities[1:])):
        raise LTCError(f"imp.schedule densities must not rise from one level to the next, got {densities}")
    if len(densities) < levels:
        raise LTCError(f"imp.schedule lists {len(densities)} densities but imp.levels is {levels}: "
                       "give one density per pruned level, or fewer levels")
    if overrides:
        raise LTCError("imp.rate_overrides are rates per level: they apply to the geometric and linear schedules, "
                       "not to a list of densities")


def _exact(value: float) -> Fraction:
    """The decimal written in the recipe, exactly (0.1 -> 1/10, not the binary float's value)."""
    return Fraction(repr(float(value)))


def kept_count(total: int, sparsity: Fraction) -> int:
    """Weights a group of `total` keeps when `sparsity` of it is pruned: total - floor(sparsity * total)."""
    return total - math.floor(sparsity * total)


def target_sparsity(schedule: Schedule, level: int, rate: float) -> Fraction:
    """The fraction of a group's original count pruned at `level` (>= 1) by a linear or listed schedule."""
    if schedule == LINEAR:
        return level * _exact(rate)
    return 1 - _exact(schedule[level - 1])


def _groups(rates: Mapping[str, float | None], strategy: str) -> list[tuple[list[str], float | None]]:
    """The tensors that share one threshold, each group with its rate (None = the default):
    overridden tensors alone, the others pooled as `strategy` says."""
    check_strategy(strategy)
    own = [([n], r) for n, r in rates.items() if r is not None]
    rest = [n for n, r in rates.items() if r is None]
    if strategy == "global":
        pooled = [rest] if rest else []
    elif strategy == "layerwise":
        pooled = [[n] for n in rest]
    else:
        modules: dict[str, list[str]] = {}
        for n in rest:
            modules.setdefault(n.rpartition(".")[0], []).append(n)
        pooled = list(modules.values())
    return [(names, None) for names in pooled] + own


def magnitude_prune(
    weights: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    fraction: float,
    strategy: str = "global",
    overrides: Mapping[str, float] | None = None,
    schedule: Schedule = GEOMETRIC,
    level: int = 1,
) -> Mask:
    """The mask of `level` from the previous level's `mask`, pruning the smallest |w| still alive.

    Geometric schedule: each group loses round(rate * its remaining) weights (`global`: exactly
    that count across every tensor without an override, one threshold). Linear or listed
    schedule: each group keeps `kept_count(its original count, target_sparsity)`. Tensors
    matched by `overrides` are pruned alone at their own rate (e.g. the output layer at half
    the rate, as Frankle & Carbin did). Ties are broken by position.
    """
    rates = resolve_rates(list(mask), fraction, overrides or {})
    new_mask: Mask = {}
    for names, rate in _groups(rates, strategy):
        r = fraction if rate is None else rate
        scores = torch.cat([weights[n].detach().abs().cpu().reshape(-1).double() for n in names])
        alive = torch.cat([mask[n].cpu().reshape(-1) for n in names])
        remaining = int(alive.sum())
        if schedule == GEOMETRIC:
            count = round(r * remaining)
        else:
            count = remaining - kept_count(alive.numel(), target_sparsity(schedule, level, r))
        kept = _prune_smallest(scores, alive, count)
        offset = 0
        for n in names:
            size = mask[n].numel()
            new_mask[n] = kept[offset : offset + size].reshape(mask[n].shape)
            offset += size
    return {n: new_mask[n] for n in mask}


def prune_to_counts(weights: Mapping[str, torch.Tensor], like: Mapping[str, torch.Tensor]) -> Mask:
    """One-shot magnitude pruning to another mask's per-tensor counts: in each tensor of `like`,
    keep the `like[name].sum()` entries of largest |w| (ties broken by position, as in
    `magnitude_prune`), so two masks can be compared at exactly matched per-layer sparsity."""
    out: Mask = {}
    for name, m in like.items():
        scores = weights[name].detach().abs().cpu()
        alive = torch.ones_like(m, dtype=torch.bool, device="cpu")
        out[name] = _prune_smallest(scores, alive, m.numel() - int(m.sum()))
    return out
