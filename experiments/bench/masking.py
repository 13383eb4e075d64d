"""Cost of keeping a mask during training: a masked step vs the same step dense vs
`torch.nn.utils.prune`'s re-parametrisation, timed side by side in one process.

    python -m experiments.bench.masking [--steps 200] [--rounds 7] [--device cpu]

Each round times all three variants in turn (so load spikes hit them alike); the table reports
median seconds per step and the ratios to dense. Target: masked <= 1.05x dense.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn.utils import prune

from experiments.tasks.base import OptimConfig
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
    opt = OptimConfig(optimizer="adam", lr=1e-3).build(list(opt_params()), total_steps=1)  # the tasks' own Adam
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


def _time(step, steps: int, device: str) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    results = run(args.steps, args.rounds, args.device)
    print(f"{'model':<16}{'dense ms':>10}{'masked ms':>11}{'prune ms':>10}{'masked/dense':>14}{'prune/dense':>13}")
    for name, r in results.items():
        s = r["seconds_per_step"]
        print(f"{name:<16}{1e3 * s['dense']:>10.3f}{1e3 * s['masked']:>11.3f}{1e3 * s['torch.prune']:>10.3f}"
              f"{r['masked_vs_dense']:>14.3f}{r['torch_prune_vs_dense']:>13.3f}")


if __name__ == "__main__":
    main()
