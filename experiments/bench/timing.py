"""Wall-clock timing of benchmark paths, with CUDA kernels finished before the clock is read."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def synchronize(device: str | torch.device) -> Callable[[], None]:
    """`torch.cuda.synchronize` on a CUDA device (its kernels run asynchronously), else a no-op."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def timed(fn: Callable[[], T], device: str | torch.device) -> tuple[float, T]:
    """(seconds, result) of one call of `fn`, the device idle at both ends."""
    sync = synchronize(device)
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - start, result


def best_seconds(paths: dict[str, Callable[[], object]], repeats: int, device: str | torch.device) -> dict[str, float]:
    """Best wall time of each path over `repeats` rounds; paths take turns within every round so
    load spikes on a shared machine hit them alike. One untimed warm-up round first."""
    best = dict.fromkeys(paths, float("inf"))
    for round_ in range(repeats + 1):
        for name, fn in paths.items():
            seconds, _ = timed(fn, device)
            if round_ > 0:
                best[name] = min(best[name], seconds)
    return best
