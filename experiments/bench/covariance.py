"""Benchmark case `covariance`: streaming covariance against stacking every row, side by side in
one process.

Rows are float32 activations with a large mean (10, against unit-scale variance), fed in
chunks as a forward hook would see them. Three ways to the same covariance:
- streaming: StreamingCovariance.update per chunk (float64 accumulator, O(d^2) memory);
- torch.cov: stack all chunks, cast to float64, torch.cov (the reference values);
- X^T X: one float64 matmul of the already stacked rows, timed alone (the speed floor).
Memory is reported by construction (torch's CPU allocations are invisible to tracemalloc):
the streaming path holds the accumulator plus one chunk's float64 working copy and scatter;
stacking holds at least the float64 matrix of all rows.
"""
from __future__ import annotations

import torch

from channels.covariance import StreamingCovariance
from experiments.bench.suite import BenchSettings, CaseResult, PeakMemory, row
from experiments.bench.timing import best_seconds

FLOAT64_BYTES = 8


def run(
    rows: int, dim: int, chunk: int, repeats: int = 3, seed: int = 0, device: str = "cpu"
) -> dict[str, float]:
    """Time and compare the three paths on the same rows; returns the figures."""
    where = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator) / dim**0.5
    batches = [
        (torch.randn(min(chunk, rows - start), dim, generator=generator) @ mixing + 10.0).to(where)
        for start in range(0, rows, chunk)
    ]

    def streaming() -> torch.Tensor:
        acc = StreamingCovariance(dim, device=where)
        for batch in batches:
            acc.update(batch)
        return acc.covariance()

    def stacked_cov() -> torch.Tensor:
        return torch.cov(torch.cat(batches).double().T)

    stacked = torch.cat(batches).double()
    seconds = best_seconds(
        {"streaming": streaming, "torch_cov": stacked_cov, "matmul": lambda: stacked.T @ stacked},
        repeats,
        where,
    )
    streaming_s, torch_cov_s, matmul_s = (
        seconds["streaming"],
        seconds["torch_cov"],
        seconds["matmul"],
    )
    ours, reference = streaming(), stacked_cov()

    accumulator_bytes = (dim * dim + dim) * FLOAT64_BYTES
    working_bytes = (min(chunk, rows) * dim + dim * dim) * FLOAT64_BYTES
    stacked_bytes = rows * dim * FLOAT64_BYTES
    return {
        "rows": rows,
        "dim": dim,
        "chunk": chunk,
        "device": str(where),
        "threads": torch.get_num_threads(),
        "streaming_s": streaming_s,
        "torch_cov_s": torch_cov_s,
        "matmul_s": matmul_s,
        "time_vs_matmul": streaming_s / matmul_s,
        "time_vs_torch_cov": streaming_s / torch_cov_s,
        "max_rel_diff": float((ours - reference).abs().max() / reference.abs().max()),
        "accumulator_bytes": accumulator_bytes,
        "working_bytes": working_bytes,
        "stacked_bytes": stacked_bytes,
        "memory_vs_stacked": (accumulator_bytes + working_bytes) / stacked_bytes,
    }


def case(s: BenchSettings) -> CaseResult:
    """The suite's `covariance` case: streaming vs torch.cov and vs one X^T X."""
    z = s.sizes
    f = run(z.cov_rows, z.cov_dim, z.cov_chunk, z.cov_repeats, device=s.device)
    shape = f"{f['rows']}x{f['dim']}"
    held = (f["accumulator_bytes"] + f["working_bytes"]) / 2**20
    note = f"max rel diff {f['max_rel_diff']:.0e}; holds {held:.1f} MiB vs stacked {f['stacked_bytes'] / 2**20:.0f} MiB"

    def rows(mem: PeakMemory) -> list[dict]:
        return [row("covariance", f"streaming cov {shape} vs torch.cov", f["streaming_s"],
                    f["torch_cov_s"], f["time_vs_torch_cov"], "streaming / torch.cov", mem, note),
                row("covariance", f"streaming cov {shape} vs X^T X", f["streaming_s"],
                    f["matmul_s"], f["time_vs_matmul"], "streaming / matmul", mem, "target <= 2")]

    return f, rows
