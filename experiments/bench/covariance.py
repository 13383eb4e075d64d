"""Benchmark: streaming covariance against stacking every row, side by side in one process.

    python -m experiments.bench.covariance [--rows N --dim D --chunk C]

Rows are float32 activations with a large mean (10, against unit-scale variance), fed in
chunks as a forward hook would see them. Three ways to the same covariance:
- streaming: StreamingCovariance.update per chunk (float64 accumulator, O(d^2) memory);
- torch.cov: stack all chunks, cast to float64, torch.cov (the reference values);
- X^T X: one float64 matmul of the already stacked rows, timed alone (the speed floor).
Memory is reported by construction (torch's CPU allocations are invisible to tracemalloc):
the streaming path holds the accumulator plus one chunk's float64 working copy and scatter;
stacking holds at least the float64 matrix of all rows.
"""

import argparse
import time
from collections.abc import Callable

import torch

from channels.covariance import StreamingCovariance

FLOAT64_BYTES = 8


def _best_seconds(
    paths: dict[str, Callable[[], torch.Tensor]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Best wall time of each path; paths take turns within every round so load spikes on a
    shared machine hit them alike. One untimed warm-up round first."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    best = dict.fromkeys(paths, float("inf"))
    for round_ in range(repeats + 1):
        for name, fn in paths.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if round_ > 0:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


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
    seconds = _best_seconds(
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


def format_table(figures: dict[str, float]) -> str:
    """The figures as a small plain-text table of times and ratios."""
    mib = 1024**2
    rows_per_s = figures["rows"] / figures["streaming_s"]
    lines = [
        (
            f"covariance of {figures['rows']} rows x {figures['dim']} (float32 in, chunks of "
            f"{figures['chunk']}) on {figures['device']}, {figures['threads']} CPU threads"
        ),
        f"{'path':<28}{'seconds':>10}{'streaming / path':>18}",
        f"{'streaming (float64)':<28}{figures['streaming_s']:>10.3f}{1.0:>17.2f}x",
        (
            f"{'X^T X float64 matmul':<28}{figures['matmul_s']:>10.3f}"
            f"{figures['time_vs_matmul']:>17.2f}x   (target <= 2x)"
        ),
        f"{'stack + torch.cov':<28}{figures['torch_cov_s']:>10.3f}{figures['time_vs_torch_cov']:>17.2f}x",
        f"streaming throughput: {rows_per_s:,.0f} rows/s",
        f"max relative difference vs torch.cov: {figures['max_rel_diff']:.2e}   (target <= 1e-10)",
        (
            f"memory: accumulator {figures['accumulator_bytes'] / mib:.2f} MiB + working "
            f"{figures['working_bytes'] / mib:.2f} MiB vs stacked >= "
            f"{figures['stacked_bytes'] / mib:.1f} MiB (ratio {figures['memory_vs_stacked']:.4f})"
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=262_144)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(format_table(run(args.rows, args.dim, args.chunk, args.repeats, device=args.device)))


if __name__ == "__main__":
    main()
