"""Density schedules: what each level prunes to (geometric, linear in the original count, a list),
per tensor, per module or global, with hand-computed counts and the MNIST-1D notebook's own
formula as references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lth.errors import LTCError
from lth.pruning import check_schedule, magnitude_prune

NOTEBOOK_STEP = 0.010101010101010102  # 1/99 as the recipe writes it: np.linspace(0, 1, 100)[1]


def _weights(**shapes) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(0)
    weights = {name: torch.randn(*shape, generator=gen) for name, shape in shapes.items()}
    return weights, {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}


def _line(weights, mask, levels, **kwargs) -> list[dict]:
    """The masks of levels 1..levels, each pruned from the previous one as the driver does."""
    masks = []
    for level in range(1, levels + 1):
        mask = magnitude_prune(weights, mask, kwargs["fraction"],
                               kwargs.get("strategy", "layerwise"), kwargs.get("overrides"),
                               kwargs["schedule"], level)
        masks.append(mask)
    return masks


def test_linear_schedule_keeps_the_asked_count_of_each_tensor_at_every_level():
    # 1% of the original per level: a tensor of 100 keeps 100 - L, one of 30 keeps 30 - floor(0.3 L)
    weights, mask = _weights(a=(10, 10), b=(30,))
    masks = _line(weights, mask, 12, fraction=0.01, schedule="linear")
    assert [int(m["a"].sum()) for m in masks] == [99, 98, 97, 96, 95, 94, 93, 92, 91, 90, 89, 88]
    assert [int(m["b"].sum()) for m in masks] == [30, 30, 30, 29, 29, 29, 28, 28, 28, 27, 27, 27]
    for earlier, later in zip(masks, masks[1:]):  # nested: a level only removes what survived the last
        assert all(not (later[n] & ~earlier[n]).any() for n in later)
    kept = weights["a"].abs()[masks[-1]["a"]]
    assert kept.min() >= weights["a"].abs()[~masks[-1]["a"]].max()  # the largest |w| survive


def test_linear_schedule_hits_the_notebooks_counts_at_10_and_8_percent():
    # the notebook's layers, weight and bias together: 40*500+500, 500*500+500, 500*10+10 parameters.
    # Round 90 (our level 89) drops floor(89/99 n): 18429 of 20500, 225196 of 250500, 4503 of 5010;
    # round 92 (level 91) drops floor(91/99 n): 18843, 230257, 4605.
    sizes = {"l1.weight": (500, 40), "l1.bias": (500,), "l2.weight": (500, 500), "l2.bias": (500,),
             "l3.weight": (10, 500), "l3.bias": (10,)}
    weights, dense = _weights(**sizes)
    for level, expected in ((89, (2071, 25304, 507)), (91, (1657, 20243, 405))):
        mask = magnitude_prune(weights, dense, NOTEBOOK_STEP, "modulewise", schedule="linear", level=level)
        kept = tuple(int(mask[f"{m}.weight"].sum() + mask[f"{m}.bias"].sum()) for m in ("l1", "l2", "l3"))
        assert kept == expected


@pytest.mark.parametrize("total", [20500, 250500, 5010, 7, 101])
def test_linear_schedule_counts_are_the_notebooks_at_every_round(total):
    """The notebook keeps n - int(np.linspace(0, 1, 100)[L] * n) at round L + 1; so do we."""
    weights, dense = _weights(w=(total,))
    notebook = [total - int(s * total) for s in np.linspace(0, 1, 100)[1:99]]
    ours = [int(magnitude_prune(weights, dense, NOTEBOOK_STEP, "layerwise", schedule="linear", level=level)["w"].sum())
            for level in range(1, 99)]
    assert ours == notebook


def test_listed_densities_per_tensor_and_global():
    weights, mask = _weights(a=(10,), b=(20,))
    first = magnitude_prune(weights, mask, 0.2, "layerwise", schedule=[0.5, 0.25], level=1)
    second = magnitude_prune(weights, first, 0.2, "layerwise", schedule=[0.5, 0.25], level=2)
    assert (int(first["a"].sum()), int(first["b"].sum())) == (5, 10)
    assert (int(second["a"].sum()), int(second["b"].sum())) == (3, 5)  # 10 - floor(7.5), 20 - floor(15)
    pooled = magnitude_prune(weights, mask, 0.2, "global", schedule=[0.4], level=1)
    assert int(pooled["a"].sum() + pooled["b"].sum()) == 12  # 30 - floor(0.6 * 30), one threshold
    everything = torch.cat([weights["a"], weights["b"]]).abs()
    survivors = torch.cat([pooled["a"], pooled["b"]])
    assert everything[survivors].min() >= everything[~survivors].max()


def test_modulewise_ranks_a_modules_weight_and_bias_together():
    weights = {"fc.weight": torch.tensor([[4.0, -3.0], [2.0, 5.0]]), "fc.bias": torch.tensor([0.1, -6.0]),
               "out.weight": torch.tensor([[1.0, 2.0, 3.0]]), "out.bias": torch.tensor([0.5])}
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    out = magnitude_prune(weights, mask, 0.5, "modulewise", schedule=[0.5], level=1)
    # fc: 6 parameters keep 3, the largest |.| of weight and bias together: -6.0, 5.0, 4.0
    assert out["fc.weight"].tolist() == [[True, False], [False, True]] and out["fc.bias"].tolist() == [False, True]
    # out: 4 keep 2: 3.0 and 2.0; its bias 0.5 goes
    assert out["out.weight"].tolist() == [[False, True, True]] and out["out.bias"].tolist() == [False]
    layerwise = magnitude_prune(weights, mask, 0.5, "layerwise", schedule=[0.5], level=1)
    assert layerwise["fc.bias"].sum() == 1 and layerwise["out.bias"].sum() == 1  # each tensor alone keeps half


def test_linear_rate_overrides_set_a_tensors_own_step():
    weights, mask = _weights(**{"hidden.weight": (100,), "out.weight": (100,)})
    out = magnitude_prune(weights, mask, 0.1, "global", {"out.*": 0.05}, schedule="linear", level=3)
    assert (int(out["hidden.weight"].sum()), int(out["out.weight"].sum())) == (70, 85)


def test_geometric_is_the_default_and_counts_what_remains():
    weights, mask = _weights(a=(100,))
    once = magnitude_prune(weights, mask, 0.2, "layerwise")
    twice = magnitude_prune(weights, once, 0.2, "layerwise", schedule="geometric", level=2)
    assert (int(once["a"].sum()), int(twice["a"].sum())) == (80, 64)


@pytest.mark.parametrize("schedule, levels, overrides, message", [
    ("sideways", 3, {}, "unknown imp.schedule"),
    ([0.5, 0.7], 2, {}, "must not rise"),
    ([0.5, 0.0], 2, {}, "in \\(0, 1\\]"),
    ([0.5], 2, {}, "lists 1 densities but imp.levels is 2"),
    ("linear", 99, {}, "prunes everything by level 99: use at most 98 levels"),
    ("linear", 10, {"out.*": 0.2}, "rate_overrides"),
    ([0.5], 1, {"out.*": 0.2}, "apply to the geometric and linear"),
])
def test_schedules_that_cannot_run_are_refused(schedule, levels, overrides, message):
    fraction = NOTEBOOK_STEP if schedule == "linear" and not overrides else 0.05
    with pytest.raises(LTCError, match=message):
        check_schedule(schedule, fraction, levels, overrides)
