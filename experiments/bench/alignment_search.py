"""Benchmark: T4's alignment search at a wide site of the text GPT (`configs/tinygpt_seeds.yaml`'s
shape: 2 layers, width 128, 512 MLP neurons, 64-token contexts), before and after its sizing for
sequence models.

    python -m experiments.bench.alignment_search [--site mlp_hidden.0]

Both sizings are timed in this process on the same network, frame and pairs. The unsized search
(800 whole sequences, one unit per greedy round) is too slow to run whole on 2 CPU cores, so its
time is its measured cost per interchange evaluation and per subspace step (from two steps)
times its counted evaluations and steps; the sized search (`PAIR_POSITIONS`, `greedy_rounds`) is run whole and timed.
"""
from __future__ import annotations

import argparse
import time

import torch

from channels.verdict import alignment as t4
from channels.verdict.causal import TOP, counts
from channels.verdict.coordinates import canonical_frame, channels, intervene
from channels.verdict.unit_sites import unit_sites
from experiments.models.gpt import gpt2

CONTEXTS, LENGTH = 128, 64  # the report's evaluation rows: 8192 positions of 64-token contexts


def _network() -> tuple[torch.nn.Module, torch.Tensor, dict]:
    torch.manual_seed(0)
    net = gpt2(vocab_size=128, n_layer=2, n_head=4, n_embd=128, n_positions=LENGTH).double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randint(0, 128, (CONTEXTS, LENGTH), generator=torch.Generator().manual_seed(1))
    mask = {k: torch.ones_like(v, dtype=torch.bool) for k, v in net.state_dict().items()
            if k.endswith("weight") and (".attn" in k or ".mlp" in k)}
    return net, x, mask


def _seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="mlp_hidden.0")
    site_name = parser.parse_args(argv).site
    net, x, mask = _network()
    site = next(s for s in unit_sites(mask, x, net) if s.name == site_name)
    frame = canonical_frame(net, x, site.name, site.unit_of())
    k, m = counts(frame, channels(frame, TOP))
    m = max(k, m)
    width = len(frame.units) // frame.unit_count

    def evaluation_seconds(pairs: int) -> float:
        rows = torch.arange(pairs) % CONTEXTS
        u = t4._rows_of(frame, rows.numpy(), LENGTH)
        with torch.no_grad():
            return _seconds(lambda: intervene(net, x[rows], frame, lambda v: v + (u - v) * 0.5))

    def subspace_step_seconds(pairs: int, steps: int = 2) -> float:
        """Seconds per step of the subspace fit, from `steps` of its `STEPS` (each step costs the same)."""
        rows = torch.arange(pairs) % CONTEXTS
        target = torch.zeros(pairs, LENGTH, dtype=torch.long)
        full, t4.STEPS = t4.STEPS, steps
        try:
            start = time.perf_counter()
            t4.learned_subspace(net, x[rows], frame, t4._rows_of(frame, rows.numpy(), LENGTH), target, k * width)
            return (time.perf_counter() - start) / steps
        finally:
            t4.STEPS = full

    k_pool = min(m, t4.POOL)
    frames = 1 + t4.NULL_DRAWS
    old_pairs = t4.PAIRS // 2  # fit and score halves of 800 pairs (all kept: a trained GPT's predictions differ)
    old_evals = frames * (sum(t4.POOL - i for i in range(k_pool)) + 1) + 1
    new_pairs = t4.PAIR_POSITIONS // LENGTH // 2
    rounds = t4.greedy_rounds(k_pool, new_pairs * LENGTH)
    new_evals = frames * (sum(t4.POOL - len_ for len_ in _chosen_before(k_pool, rounds)) + 1) + 1
    old = old_evals * evaluation_seconds(old_pairs) + t4.STEPS * subspace_step_seconds(old_pairs)
    new_estimate = new_evals * evaluation_seconds(new_pairs) + t4.STEPS * subspace_step_seconds(new_pairs)
    start = time.perf_counter()
    found = t4.alignment(net, x, frame, k=k, m=m)
    new = time.perf_counter() - start
    print(f"T4 at {site_name} (width {frame.unit_count} units, k {k}, m {m}, {frames} frames), one seed, "
          f"{torch.get_num_threads()} thread(s):")
    print(f"  unsized: {old_pairs} pairs x {LENGTH} positions per half, {old_evals} evaluations: ~{old:.0f} s (estimated)")
    print(f"  sized:   {new_pairs} pairs x {LENGTH} positions per half, {rounds} greedy rounds, {new_evals} evaluations: "
          f"~{new_estimate:.0f} s estimated, {new:.0f} s run whole (pairs read: {found['pairs']})")
    print(f"  ratio unsized / sized (estimated / run): {old / new:.1f}x")
    return 0


def _chosen_before(k: int, rounds: int) -> list[int]:
    """How many units are chosen before each greedy round (the rounds share the k units evenly)."""
    before, chosen = [], 0
    for r in range(rounds):
        before.append(chosen)
        chosen += -(-(k - chosen) // (rounds - r))
    return before


if __name__ == "__main__":
    raise SystemExit(main())
