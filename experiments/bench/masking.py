"""Benchmark case `masking`: the cost of keeping a mask during training, a masked step vs the
same step dense vs `torch.nn.utils.prune`'s re-parametrisation, timed side by side in one process.

Each round times all three variants in turn (so load spikes hit them alike); the rows report
median seconds per step and the ratios to dense. Target: masked <= 1.05x dense.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune

from experiments.bench.suite import BenchSettings, CaseResult, PeakMemory, row
from experiments.bench.timing import timed
from lth.enforce import MaskEnforcer
from lth.masks import full_mask
from lth.pruning import default_prunable, magnitude_prune

SHAPES = {"mnist1d-mlp": (40, [100, 100], 10, 100), "lenet-300-100": (784, [300, 100], 10, 60),
          "wide-mlp": (1024, [2048, 2048], 10, 256)}


def _mlp(n_in: int, hidden: list[int], n_out: int) -> nn.Sequential:
    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, n_out))


def _variant(kind: str, shape, device: str, density: float = 0.2):
    n_in, hidden, n_out, batch = shape
    torch.manual_seed(0)
    model = _mlp(n_in, hidden, n_out).to(device)
    names = default_prunable(model)
    mask = full_mask(model, names)
    while sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values()) > density:
        mask = magnitude_prune(dict(model.named_parameters()), mask, 0.2)
    opt_params = model.parameters
    if kind == "torch.prune":
        modules = dict(model.named_modules())
        for name in names:
            prune.custom_from_mask(modules[name.rsplit(".", 1)[0]], "weight", mask[name].to(device))
    opt = torch.optim.Adam(opt_params(), lr=1e-3)
    if kind == "masked":
        enforcer = MaskEnforcer(model, mask)
        enforcer.apply_to_weights()
        enforcer.attach(opt)
    x = torch.randn(batch, n_in, device=device)
    y = torch.randint(0, n_out, (batch,), device=device)

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _time(step: Callable[[], None], steps: int, device: str) -> float:
    """Seconds per step over `steps` steps, after one untimed warm-up step."""

    def steps_in_a_row() -> None:
        for _ in range(steps):
            step()

    step()
    seconds, _ = timed(steps_in_a_row, device)
    return seconds / steps


def run(steps: int = 200, rounds: int = 7, device: str = "cpu", shapes: list[str] | None = None) -> dict:
    """Median seconds per step of dense / masked / torch.prune, per model shape, and ratios to dense."""
    results = {}
    for name in shapes or list(SHAPES):
        variants = {kind: _variant(kind, SHAPES[name], device) for kind in ("dense", "masked", "torch.prune")}
        times: dict[str, list[float]] = {kind: [] for kind in variants}
        for _ in range(rounds):
            for kind, step in variants.items():
                times[kind].append(_time(step, steps, device))
        med = {kind: statistics.median(v) for kind, v in times.items()}
        results[name] = {"seconds_per_step": med,
                         "masked_vs_dense": med["masked"] / med["dense"],
                         "torch_prune_vs_dense": med["torch.prune"] / med["dense"]}
    return results


def case(s: BenchSettings) -> CaseResult:
    """The suite's `masking` case: figures per shape, and two rows each (masked and torch.prune vs dense)."""
    z = s.sizes
    figures = run(z.masking_steps, z.masking_rounds, s.device, list(z.masking_shapes))

    def rows(mem: PeakMemory) -> list[dict]:
        out = []
        for shape, r in figures.items():
            t = r["seconds_per_step"]
            out.append(row("masking", f"masked step, {shape}", t["masked"], t["dense"],
                           r["masked_vs_dense"], "masked / dense", mem, "target <= 1.05"))
            out.append(row("masking", f"torch.prune step, {shape}", t["torch.prune"], t["dense"],
                           r["torch_prune_vs_dense"], "prune / dense", mem))
        return out

    return figures, rows
