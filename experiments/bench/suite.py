"""The benchmark suite behind `ltc bench` (`experiments.commands.bench`): one table of ratios
measured side by side in one run. This module holds the sizes, the settings, the peak-memory
meter, the row format, the case registry and the loop that runs the cases; each case is a
`case(settings)` function of its own module (tables: `experiments.bench.tables`).

Cases (each times its path and its baseline in turn, in the same process):
- masking: a masked training step vs the dense step vs `torch.nn.utils.prune` (bench/masking.py);
- covariance: streaming float64 covariance vs stack + torch.cov vs one float64 X^T X (bench/covariance.py);
- jacobian: the all-pairs residual Jacobian sweep of a GPT-2-small shape vs a per-pair
  `autograd.functional.jacobian` loop (both EXTRAPOLATED from a measured subset to the full sweep),
  its FLOP rate vs a float32 matmul, and matrix-free top-k singular values vs exact J + SVD
  (bench/jacobian.py);
- jacobian_sketch: the sketched sweep against the exact one per summarised block, with top-8 and the
  participation ratio's errors (bench/jacobian_sketch.py);
- jacobian_peers: the Jacobian lens and block coupling against the public reference implementations'
  way, time per prompt and agreement (bench/jacobian_peers.py);
- jacobian_chunks: the same sweep at two VJP chunk sizes, the knob that bounds its peak memory
  (on CUDA the larger one is chosen from free memory; bench/jacobian.py);
- precision (CUDA only): the top-k singular values of J(t, t) under TF32 and bf16 against float32,
  to see whether `--tf32` keeps the spectra accurate (bench/jacobian.py);
- callback: the SpectraCallback's share of a level's training time on the default experiment
  (bench/callback.py);
- training_loop: a level's fit through the IMP driver vs a plain PyTorch loop of the same training,
  and the per-step costs the driver was cut down by (bench/training_loop.py);
- end_to_end: the default experiment's wall time, EXTRAPOLATED from a reduced run (bench/end_to_end.py).

Peak memory of each case: on CUDA torch.cuda.max_memory_allocated above the case's start; on Linux
CPUs the peak resident set above the case's start (VmHWM, reset through /proc/self/clear_refs after
returning freed heap to the system; an upper bound, as it also counts library code a case is the
first to touch), elsewhere the process's ru_maxrss (not per case). The end-to-end case reports its
child process's ru_maxrss. The table says which.

Sizes: the full run took 6 minutes on 2 busy CPU cores (budget 15), `--quick` about one minute;
`--tiny` is for the smoke test (figures meaningless). On a CPU, one thread by default for torch and
numpy's BLAS (`experiments.runtime.limit_cpu_threads`): on busy shared cores idle worker threads
were measured to slow runs 3-10x, unevenly (ratios need even timings), and a 100 x 100 numpy eigh
from 0.8 ms to 135 ms. The callback and end-to-end cases need `mnist1d` and `jsonargparse` (the
`ltc imp` stack).
"""
from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from experiments.runtime import limit_cpu_threads
from lth.errors import LTCError
from lth.rundir import write_text

if TYPE_CHECKING:
    from typing import Self

CPU_CASES = ("masking", "covariance", "jacobian", "jacobian_chunks", "jacobian_sketch", "jacobian_peers", "callback",
             "training_loop", "end_to_end")
CUDA_CASES = ("masking", "covariance", "jacobian", "jacobian_chunks", "jacobian_sketch", "jacobian_peers", "precision",
              "callback", "training_loop", "end_to_end")
DEFAULT_CONFIG = "configs/mnist1d_imp.yaml"


@dataclass(frozen=True)
class Sizes:
    """How much work each case times (see the case modules for the meaning of each)."""

    masking_steps: int
    masking_rounds: int
    masking_shapes: tuple[str, ...]
    cov_rows: int
    cov_dim: int
    cov_chunk: int
    cov_repeats: int
    jac_context: int
    jac_rows: int
    jac_pairs: int
    svd_context: int
    top_k: int
    block_size: int
    n_iter: int
    jac_chunk: int
    chunk_context: int
    chunk_rows: int
    chunk_sizes: tuple[int, ...]  # 0 = choose from free CUDA memory
    train_steps: int | None  # steps per training of the callback and end-to-end cases; None = the config's
    sketch_context: int = 32  # jacobian_sketch: context, targets, random VJPs per target
    sketch_targets: int = 2
    sketch_size: int = 64
    peer_context: int = 32  # jacobian_peers: context, prompts, tokens of the block coupling, model
    peer_prompts: int = 4
    peer_tokens: int = 4
    peer_layers: int = 4  # GPT-2 shape at this depth and width (the per-token way costs width
    peer_width: int = 256  # backward passes per layer and token: GPT-2 small's 768 x 12 is for a GPU)


ALL_SHAPES = ("mnist1d-mlp", "lenet-300-100", "wide-mlp")
FULL = Sizes(masking_steps=40, masking_rounds=5, masking_shapes=ALL_SHAPES,
             cov_rows=131_072, cov_dim=256, cov_chunk=4096, cov_repeats=3,
             jac_context=128, jac_rows=16, jac_pairs=2, svd_context=16, top_k=32, block_size=8, n_iter=12,
             jac_chunk=32, chunk_context=128, chunk_rows=64, chunk_sizes=(8, 64), train_steps=None)
SIZES = {
    "full": FULL,
    "quick": replace(FULL, masking_steps=20, masking_rounds=3, masking_shapes=ALL_SHAPES[:2], cov_rows=32_768,
                     cov_dim=128, cov_repeats=2, jac_context=32, jac_rows=4, jac_pairs=1, svd_context=8,
                     chunk_context=32, chunk_rows=16, chunk_sizes=(4, 16), train_steps=300, sketch_context=16,
                     sketch_targets=1, peer_context=16, peer_prompts=1, peer_tokens=2, peer_layers=2,
                     peer_width=128),
    "tiny": replace(FULL, masking_steps=2, masking_rounds=1, masking_shapes=ALL_SHAPES[:1], cov_rows=512,
                    cov_dim=16, cov_chunk=128, cov_repeats=1, jac_context=8, jac_rows=2, jac_pairs=1,
                    svd_context=4, top_k=8, block_size=4, n_iter=4, jac_chunk=8, chunk_context=8, chunk_rows=4,
                    chunk_sizes=(2, 4), train_steps=20, sketch_context=4, sketch_targets=1, sketch_size=4,
                    peer_context=8, peer_prompts=1, peer_tokens=2, peer_layers=2, peer_width=64),
}
CUDA_FULL = replace(FULL, masking_steps=100, cov_rows=262_144, jac_context=1024, jac_rows=256, svd_context=1024,
                    jac_chunk=64, chunk_context=1024, chunk_rows=256, chunk_sizes=(16, 0), sketch_context=256,
                    sketch_targets=4, peer_context=256, peer_prompts=4, peer_tokens=32, peer_layers=12,
                    peer_width=768)


@dataclass
class BenchSettings:
    """One run of the suite."""

    size: str = "full"
    device: str = "cpu"
    threads: int = 1
    cases: tuple[str, ...] | None = None  # None = every case that runs on the device
    chunk_sizes: tuple[int, ...] | None = None  # None = the size's
    tf32: bool = False
    config: str = DEFAULT_CONFIG
    sizes: Sizes = field(init=False)

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise LTCError(f"unknown bench size {self.size!r}: use one of {', '.join(SIZES)}")
        cuda = self.device.startswith("cuda")
        if cuda and not torch.cuda.is_available():
            raise LTCError(f"--device {self.device}: no CUDA device is visible here; use --device cpu")
        if not cuda and self.device != "cpu":
            raise LTCError(f"unknown --device {self.device!r}: use cpu or cuda")
        available = CUDA_CASES if cuda else CPU_CASES
        self.cases = tuple(self.cases or available)
        unknown = [c for c in self.cases if c not in available]
        if unknown:
            raise LTCError(f"unknown case {unknown[0]!r} on {self.device}: choose from {', '.join(available)}")
        self.sizes = CUDA_FULL if cuda and self.size == "full" else SIZES[self.size]
        if self.chunk_sizes is not None:
            if len(self.chunk_sizes) != 2 or any(c < 0 for c in self.chunk_sizes) or (0 in self.chunk_sizes and not cuda):
                raise LTCError("--chunk_sizes takes two sizes >= 1 (0 = from free memory, CUDA only), e.g. '[8, 64]'")
            self.sizes = replace(self.sizes, chunk_sizes=tuple(self.chunk_sizes))


# ---- peak memory ---------------------------------------------------------------------------------
class PeakMemory:
    """Peak memory of a block above its start, with the method used (see the module docstring)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.bytes = 0
        self.method = ""

    @staticmethod
    def _status(field_name: str) -> int:
        text = Path("/proc/self/status").read_text()
        return int(re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024

    @staticmethod
    def _can_reset_rss() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def __enter__(self) -> Self:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            self.method = "CUDA max_memory_allocated above start"
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so reuse shows as growth
        except (OSError, AttributeError):
            pass
        if self._can_reset_rss():
            self._start = self._status("VmRSS")
            self.method = "peak RSS above start (VmHWM reset)"
        else:
            self._start = 0
            self.method = "process ru_maxrss so far (not per case)"
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self._start
        elif self.method.startswith("peak RSS"):
            self.bytes = self._status("VmHWM") - self._start
        else:
            kib = 1 if sys.platform == "darwin" else 1024
            self.bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib


# ---- table rows ----------------------------------------------------------------------------------
def row(case: str, what: str, ours_s: float, baseline_s: float, ratio: float, means: str,
        peak: PeakMemory | int, note: str = "", method: str | None = None) -> dict:
    """One table row: our time, the baseline's, their ratio (what it means), peak memory."""
    peak_bytes = peak.bytes if isinstance(peak, PeakMemory) else int(peak)
    return {"case": case, "what": what, "ours_s": float(ours_s), "baseline_s": float(baseline_s),
            "ratio": float(ratio), "ratio_means": means, "peak_bytes": peak_bytes,
            "memory_method": method or peak.method, "note": note}


CaseResult = tuple[dict, Callable[[PeakMemory], list[dict]]]
"""What a case returns: its figures (JSON-ready), and its table rows given the case's peak memory."""
Case = Callable[[BenchSettings], CaseResult]


@dataclass(frozen=True)
class LazyCase:
    """The case function `experiments.bench.<module>.<function>`, imported when first called: a case's
    imports (transformers, Lightning, the `ltc imp` stack) are paid only by a suite that runs it."""

    module: str
    function: str = "case"

    def load(self) -> Case:
        return getattr(importlib.import_module(f"experiments.bench.{self.module}"), self.function)

    def __call__(self, settings: BenchSettings) -> CaseResult:
        return self.load()(settings)


CASES: dict[str, Case] = {
    "masking": LazyCase("masking"), "covariance": LazyCase("covariance"), "jacobian": LazyCase("jacobian"),
    "jacobian_chunks": LazyCase("jacobian", "chunks_case"), "precision": LazyCase("jacobian", "precision_case"),
    "jacobian_sketch": LazyCase("jacobian_sketch"), "jacobian_peers": LazyCase("jacobian_peers"),
    "callback": LazyCase("callback"), "training_loop": LazyCase("training_loop"),
    "end_to_end": LazyCase("end_to_end"),
}


# ---- the suite -----------------------------------------------------------------------------------
def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = names[0] if names else cpu
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "load_average": list(os.getloadavg())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run_suite(settings: BenchSettings, out: Path | None = None,
              progress: Callable[[str], None] = lambda _: None) -> dict:
    """Run every case of `settings`; returns {machine, settings, cases, rows} (JSON-ready), also
    written to `out` after each case (a run stopped midway keeps its finished cases)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    blas = limit_cpu_threads(settings.threads) if settings.threads else []
    if settings.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = settings.tf32
        torch.backends.cudnn.allow_tf32 = settings.tf32
    result = {"machine": {**machine(), "blas_limited": blas}, "settings": asdict(settings), "cases": {}, "rows": []}
    for name in settings.cases:
        progress(name)
        start = time.perf_counter()
        with PeakMemory(settings.device) as mem:
            figures, rows = CASES[name](settings)
        case_rows = rows(mem)
        result["cases"][name] = {"seconds": time.perf_counter() - start, "figures": figures}  # peaks: in rows
        result["rows"] += case_rows
        result["machine"]["load_average_end"] = list(os.getloadavg())
        if out is not None:
            write_text(out, json.dumps(result, indent=2, default=str))
    return result
