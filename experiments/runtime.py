"""The process an `ltc` command runs in: its console, quiet libraries, and CPU thread limits."""
from __future__ import annotations

import ctypes
import logging
import os
import warnings
from pathlib import Path

import torch
from rich.console import Console

console = Console(highlight=False, soft_wrap=True)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
BLAS_SETTERS = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
                "scipy_openblas_set_num_threads", "openblas_set_num_threads64_")


def quiet_libraries() -> None:
    """Keep the console to the bars and one line per level."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # the step-indexed sampler makes mid-level resumes exact, which Lightning cannot see
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
    os.environ.setdefault("WANDB_SILENT", "true")


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that hold a child process's torch/OpenMP/BLAS pools to `threads`."""
    return {var: str(threads) for var in THREAD_VARIABLES}


def limit_cpu_threads(threads: int) -> list[str]:
    """Run torch and every loaded OpenBLAS (numpy's, scipy's) on `threads` threads, and let
    child processes and libraries loaded later inherit it. Returns the BLAS libraries limited.

    torch.set_num_threads does not reach numpy's own OpenBLAS; on busy shared cores its idle
    threads were measured to slow a 100 x 100 eigh from 0.8 ms to 135 ms.
    """
    torch.set_num_threads(threads)
    os.environ.update(thread_environment(threads))
    maps = Path("/proc/self/maps")
    paths = {line.split()[-1] for line in maps.read_text().splitlines() if "openblas" in line} if maps.exists() else set()
    limited = []
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        setter = next((getattr(lib, name) for name in BLAS_SETTERS if hasattr(lib, name)), None)
        if setter is not None:
            setter(threads)
            limited.append(Path(path).name)
    return limited
