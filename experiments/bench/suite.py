"""`ltc bench`: the benchmark suite, one table of ratios measured side by side in one run.

    ltc bench [--quick] [--out bench.json] [--markdown bench.md] [--device cuda] [--threads 1] [--tf32]
              [--cases '[masking, covariance]'] [--chunk_sizes '[8, 64]']

Cases (each times its path and its baseline in turn, in the same process):
- masking: a masked training step vs the dense step vs `torch.nn.utils.prune` (experiments.bench.masking);
- covariance: streaming float64 covariance vs stack + torch.cov vs one float64 X^T X (bench_covariance);
- jacobian: the all-pairs residual Jacobian sweep of a GPT-2-small shape vs a per-pair
  `autograd.functional.jacobian` loop (both EXTRAPOLATED from a measured subset to the full sweep),
  its FLOP rate vs a float32 matmul, and matrix-free top-k singular values vs exact J + SVD
  (bench_jacobian);
- jacobian_chunks: the same sweep at two VJP chunk sizes, the knob that bounds its peak memory
  (on CUDA the larger one is chosen from free memory);
- precision (CUDA only): the top-k singular values of J(t, t) under TF32 and bf16 against float32,
  to see whether `--tf32` keeps the spectra accurate;
- callback: the SpectraCallback's share of a level's training time on the default experiment
  (bench_callback);
- end_to_end: the default experiment's wall time, EXTRAPOLATED from a reduced run (bench_end_to_end).

Peak memory of each case: on CUDA torch.cuda.max_memory_allocated above the case's start; on Linux
CPUs the peak resident set above the case's start (VmHWM, reset through /proc/self/clear_refs after
returning freed heap to the system; an upper bound, as it also counts library code a case is the
first to touch), elsewhere the process's ru_maxrss (not per case). The end-to-end case reports its
child process's ru_maxrss. The table says which.

Sizes: the full run took 6 minutes on 2 busy CPU cores (budget 15), `--quick` about one minute;
`--tiny` is for the smoke test (figures meaningless). On a CPU, one thread by default for torch and
numpy's BLAS: on busy shared cores idle worker threads were measured to slow runs 3-10x, unevenly
(ratios need even timings), and a 100 x 100 numpy eigh from 0.8 ms to 135 ms.
The callback and end-to-end cases need `mnist1d` and `jsonargparse` (the `ltc imp` stack).
"""
from __future__ import annotations

import copy
import ctypes
import gc
import json
import math
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

from lth.errors import LTCError

if TYPE_CHECKING:
    from typing import Self

CPU_CASES = ("masking", "covariance", "jacobian", "jacobian_chunks", "callback", "end_to_end")
CUDA_CASES = ("masking", "covariance", "jacobian", "jacobian_chunks", "precision", "callback", "end_to_end")
DEFAULT_CONFIG = "configs/mnist1d_imp.yaml"


@dataclass(frozen=True)
class Sizes:
    """How much work each case times (see the bench_* modules for the meaning of each)."""

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


ALL_SHAPES = ("mnist1d-mlp", "lenet-300-100", "wide-mlp")
FULL = Sizes(masking_steps=40, masking_rounds=5, masking_shapes=ALL_SHAPES,
             cov_rows=131_072, cov_dim=256, cov_chunk=4096, cov_repeats=3,
             jac_context=128, jac_rows=16, jac_pairs=2, svd_context=16, top_k=32, block_size=8, n_iter=12,
             jac_chunk=32, chunk_context=128, chunk_rows=64, chunk_sizes=(8, 64), train_steps=None)
SIZES = {
    "full": FULL,
    "quick": replace(FULL, masking_steps=20, masking_rounds=3, masking_shapes=ALL_SHAPES[:2], cov_rows=32_768,
                     cov_dim=128, cov_repeats=2, jac_context=32, jac_rows=4, jac_pairs=1, svd_context=8,
                     chunk_context=32, chunk_rows=16, chunk_sizes=(4, 16), train_steps=300),
    "tiny": replace(FULL, masking_steps=2, masking_rounds=1, masking_shapes=ALL_SHAPES[:1], cov_rows=512,
                    cov_dim=16, cov_chunk=128, cov_repeats=1, jac_context=8, jac_rows=2, jac_pairs=1,
                    svd_context=4, top_k=8, block_size=4, n_iter=4, jac_chunk=8, chunk_context=8, chunk_rows=4,
                    chunk_sizes=(2, 4), train_steps=20),
}
CUDA_FULL = replace(FULL, masking_steps=100, cov_rows=262_144, jac_context=1024, jac_rows=256, svd_context=1024,
                    jac_chunk=64, chunk_context=1024, chunk_rows=256, chunk_sizes=(16, 0))


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


def _masking(s: BenchSettings) -> tuple[dict, Callable[[PeakMemory], list[dict]]]:
    from experiments.bench.masking import run

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


def _covariance(s: BenchSettings) -> tuple[dict, Callable[[PeakMemory], list[dict]]]:
    from experiments.bench.covariance import run

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


def _jacobian(s: BenchSettings) -> tuple[dict, Callable[[PeakMemory], list[dict]]]:
    from experiments import bench_jacobian

    z = s.sizes
    f = bench_jacobian.run(z.jac_context, z.jac_rows, z.jac_pairs, z.svd_context, z.top_k, z.block_size,
                           z.n_iter, z.jac_chunk, s.device)
    a, b = f["all_pairs"], f["topk"]
    fwd, bwd = bench_jacobian.sweep_flops(a["context"])
    matmul_equivalent_s = (fwd + a["measured_rows"] * bwd) / f["matmul_flops_per_s"]

    def rows(mem: PeakMemory) -> list[dict]:
        model_note = "peak includes the model"
        return [
            row("jacobian", f"all-pairs J sweep, context {a['context']}",
                a["ours_full_sweep_s_extrapolated"], a["baseline_full_sweep_s_extrapolated"],
                a["speedup_extrapolated"], "per-pair / sweep (speedup)", mem,
                f"EXTRAPOLATED; target >= 20; max rel diff {a['max_rel_diff']:.0e}; {model_note}"),
            row("jacobian", f"sweep FLOP rate vs matmul, {a['measured_rows']} rows",
                a["ours_measured_s"], matmul_equivalent_s, matmul_equivalent_s / a["ours_measured_s"],
                "sweep rate / matmul rate", mem, "baseline = the same FLOPs at the matmul's rate"),
            row("jacobian", f"top-{b['k']} SVD of J(t, t), context {b['context']}",
                b["matrix_free_s"], b["exact_s"], b["speedup"], "exact SVD / matrix-free (speedup)", mem,
                f"target >= 5; max rel err {b['max_rel_err']:.1%}"),
        ]

    return f, rows


def _sweep(model, ids, rows: int, chunk_size: int) -> None:
    from channels.jacobian import iter_sequence_jacobian
    from experiments.bench.jacobian import SITE_A, SITE_B

    for _ in iter_sequence_jacobian(model, ids, SITE_A, SITE_B, targets=[ids.shape[1] - 1],
                                    rows=list(range(rows)), chunk_size=chunk_size):
        pass


def chunk_from_free_memory(model, ids, rows: int, fraction: float = 0.5) -> int:
    """The largest power-of-two VJP chunk whose sweep fits in `fraction` of free CUDA memory.

    Peak memory is affine in the chunk size c: fixed + c * per_vjp; both are measured from two
    small sweeps (c = 2 and 8), then c = (fraction * free - fixed) / per_vjp, capped at `rows`.
    """
    peaks = {}
    for c in (2, 8):
        with PeakMemory("cuda") as mem:
            _sweep(model, ids, c, c)
        peaks[c] = mem.bytes
    per_vjp = max((peaks[8] - peaks[2]) / 6, 1.0)
    fixed = max(peaks[2] - 2 * per_vjp, 0.0)
    free, _ = torch.cuda.mem_get_info()
    fits = max(int((fraction * free - fixed) / per_vjp), 1)
    return min(2 ** int(math.log2(fits)), rows)


def _jacobian_chunks(s: BenchSettings) -> tuple[dict, Callable[[PeakMemory], list[dict]]]:
    from experiments.bench.jacobian import gpt2_small

    z = s.sizes
    where = torch.device(s.device)
    model = gpt2_small(z.chunk_context, where, 0)
    ids = torch.randint(0, model.config.vocab_size, (1, z.chunk_context),
                        generator=torch.Generator().manual_seed(0)).to(where)
    _sweep(model, ids, 1, 1)  # warm-up: first calls pay one-off costs
    sizes = [c or chunk_from_free_memory(model, ids, z.chunk_rows) for c in z.chunk_sizes]
    timed = []
    for c in sizes:
        with PeakMemory(s.device) as mem:
            start = time.perf_counter()
            _sweep(model, ids, z.chunk_rows, c)
            if where.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        timed.append({"chunk_size": c, "seconds": seconds, "peak_bytes": mem.bytes, "memory_method": mem.method})
    figures = {"context": z.chunk_context, "rows": z.chunk_rows, "auto": [c == 0 for c in z.chunk_sizes],
               "runs": timed}

    def rows(_: PeakMemory) -> list[dict]:
        first = timed[0]
        out = []
        for t, auto in zip(timed, figures["auto"]):
            chosen = " (from free memory)" if auto else ""
            out.append(row("jacobian_chunks", f"J sweep {z.chunk_rows} rows, context {z.chunk_context}, "
                           f"chunk {t['chunk_size']}{chosen}", t["seconds"], first["seconds"],
                           t["seconds"] / first["seconds"], f"time / chunk {first['chunk_size']}",
                           t["peak_bytes"], "peak excludes the model", t["memory_method"]))
        return out

    return figures, rows


def _precision(s: BenchSettings) -> tuple[dict, Callable[[PeakMemory], list[dict]]]:
    """Singular values of J(t, t) under float32, TF32 and bf16: time and relative error of the top k."""
    from channels.jacobian import iter_sequence_jacobian
    from experiments.bench.jacobian import SITE_A, SITE_B, gpt2_small

    z = s.sizes
    where = torch.device(s.device)
    model = gpt2_small(z.svd_context, where, 0)
    ids = torch.randint(0, model.config.vocab_size, (1, z.svd_context),
                        generator=torch.Generator().manual_seed(0)).to(where)
    t = z.svd_context - 1

    def singular_values(net) -> tuple[float, torch.Tensor]:
        torch.cuda.synchronize()
        start = time.perf_counter()
        ((_, block),) = iter_sequence_jacobian(net, ids, SITE_A, SITE_B, [t], [t], chunk_size=z.jac_chunk)
        values = torch.linalg.svdvals(block[0].double())[: z.top_k].cpu()
        torch.cuda.synchronize()
        return time.perf_counter() - start, values

    before = torch.get_float32_matmul_precision()
    try:
        singular_values(model)  # warm-up
        torch.set_float32_matmul_precision("highest")
        fp32_s, truth = singular_values(model)
        torch.set_float32_matmul_precision("high")
        tf32_s, tf32 = singular_values(model)
        torch.set_float32_matmul_precision("highest")
        bf16_s, bf16 = singular_values(copy.deepcopy(model).to(torch.bfloat16))
    finally:
        torch.set_float32_matmul_precision(before)
    err = {name: float(((v - truth).abs() / truth).max()) for name, v in (("tf32", tf32), ("bf16", bf16))}
    figures = {"context": z.svd_context, "k": z.top_k, "fp32_s": fp32_s, "tf32_s": tf32_s, "bf16_s": bf16_s,
               "tf32_max_rel_err": err["tf32"], "bf16_max_rel_err": err["bf16"]}

    def rows(mem: PeakMemory) -> list[dict]:
        return [row("precision", f"J(t, t) + SVD in {name}, context {z.svd_context}", sec, fp32_s,
                    fp32_s / sec, "float32 / this (speedup)", mem,
                    f"max rel err of top-{z.top_k} {err[name]:.2%} ({'keeps' if err[name] <= 0.01 else 'LOSES'} "
                    "spectra to 1%)")
                for name, sec in (("tf32", tf32_s), ("bf16", bf16_s))]

    return figures, rows


def _callback(s: BenchSettings) -> tuple[dict, Callable[[PeakMemory], list[dict]]]:
    from experiments.bench.callback import run

    f = run(s.config, s.sizes.train_steps, s.device)
    note = f"{f['measurements']} measurements in {f['steps']} steps"
    if f["steps"] != f["default_steps"]:
        note += f"; {f['share_at_default']:.1%} at the default {f['default_steps']} steps (estimated)"

    def rows(mem: PeakMemory) -> list[dict]:
        return [row("callback", "SpectraCallback share of level time", f["callback_s"],
                    f["train_s_with_callback"], f["share"], "share (target <= 0.10)", mem, note),
                row("callback", "level time with / without callback", f["train_s_with_callback"],
                    f["train_s_without_callback"], f["train_s_with_callback"] / f["train_s_without_callback"],
                    "with / without", mem, "two separate trainings: noisier")]

    return f, rows


def _end_to_end(s: BenchSettings) -> tuple[dict, Callable[[PeakMemory], list[dict]]]:
    from experiments.bench.end_to_end import run

    f = run(s.config, s.sizes.train_steps, s.device, s.threads or None)
    note = (f"EXTRAPOLATED from {f['measured_jobs']} jobs of {f['steps']} steps ({f['measured_wall_s']:.0f} s) "
            f"to {f['default_jobs']} jobs of {f['default_steps']}")

    def rows(_: PeakMemory) -> list[dict]:
        return [row("end_to_end", f"default experiment ({s.config})", f["estimated_default_s"],
                    f["estimated_default_train_s"], f["wall_vs_train"], "wall / fit time", f["peak_rss_bytes"],
                    note, "child process ru_maxrss")]

    return f, rows


CASES: dict[str, Callable[[BenchSettings], tuple[dict, Callable[[PeakMemory], list[dict]]]]] = {
    "masking": _masking, "covariance": _covariance, "jacobian": _jacobian, "jacobian_chunks": _jacobian_chunks,
    "precision": _precision, "callback": _callback, "end_to_end": _end_to_end,
}


# ---- the suite -----------------------------------------------------------------------------------
BLAS_SETTERS = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
                "scipy_openblas_set_num_threads", "openblas_set_num_threads64_")


def limit_cpu_threads(threads: int) -> list[str]:
    """Run torch and every loaded OpenBLAS (numpy's, scipy's) on `threads` threads.

    torch.set_num_threads does not reach numpy's own OpenBLAS; on busy shared cores its idle
    threads were measured to slow a 100 x 100 eigh from 0.8 ms to 135 ms. Libraries loaded
    later read OPENBLAS_NUM_THREADS. Returns the BLAS libraries limited.
    """
    torch.set_num_threads(threads)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
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


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _seconds(value: float) -> str:
    if value >= 7200:
        return f"{value / 3600:.1f} h"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.3g} s" if value >= 0.01 else f"{value * 1e3:.3g} ms"


COLUMNS = ("case", "measured", "ours", "baseline", "ratio", "ratio is", "peak mem", "note")


def _title(result: dict) -> str:
    m = result["machine"]
    where = m.get("gpu") if result["settings"]["device"].startswith("cuda") else f"{m['cpu']}, {m['cpu_count']} cores"
    return (f"ltc bench ({result['settings']['size']}) on {where}, {m['threads']} torch threads, "
            f"load average {m['load_average'][0]:.1f} -> {m['load_average_end'][0]:.1f}")


def _cells(r: dict) -> list[str]:
    return [r["case"], r["what"], _seconds(r["ours_s"]), _seconds(r["baseline_s"]), f"{r['ratio']:.3g}",
            r["ratio_means"], f"{r['peak_bytes'] / 2**20:.0f} MiB", r["note"]]


def _memory_methods(result: dict) -> str:
    return "peak memory: " + "; ".join(sorted({r["memory_method"] for r in result["rows"]}))


def print_table(result: dict) -> None:
    """The suite's rows as one rich table, with the machine it ran on."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=_title(result))
    for name in COLUMNS:
        table.add_column(name, justify="right" if name in ("ours", "baseline", "ratio", "peak mem") else "left")
    for r in result["rows"]:
        table.add_row(*_cells(r))
    console = Console(highlight=False, width=max(160, Console().width))
    console.print(table)
    console.print(_memory_methods(result))


def markdown_table(result: dict) -> str:
    """The same table as Markdown (for the README's Performance section)."""
    lines = [f"**{_title(result)}**", "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---:" if c in ("ours", "baseline", "ratio", "peak mem") else "---" for c in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in _cells(r)) + " |" for r in result["rows"]]
    return "\n".join([*lines, "", _memory_methods(result)]) + "\n"


def _parser():
    from jsonargparse import ActionYesNo, ArgumentParser

    parser = ArgumentParser(prog="ltc bench", description=__doc__.splitlines()[0].split(": ", 1)[1],
                            exit_on_error=False)
    parser.add_argument("--quick", action=ActionYesNo, default=False, help="about one minute on 2 CPU cores")
    parser.add_argument("--tiny", action=ActionYesNo, default=False, help="smallest sizes, for smoke tests")
    parser.add_argument("--out", type=str | None, default=None, help="also write the results as JSON here")
    parser.add_argument("--markdown", type=str | None, default=None, help="also write the table as Markdown here")
    parser.add_argument("--device", type=str, default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of torch and numpy's BLAS (1: steady timings on shared cores; 0: defaults)")
    parser.add_argument("--cases", type=list[str] | None, default=None,
                        help=f"cases to run (default all for the device): {', '.join(CUDA_CASES)}")
    parser.add_argument("--chunk_sizes", type=list[int] | None, default=None,
                        help="the two VJP chunk sizes of jacobian_chunks (0 = from free CUDA memory)")
    parser.add_argument("--tf32", action=ActionYesNo, default=False,
                        help="allow TF32 matmuls on CUDA in the timed cases (the precision case shows its error)")
    parser.add_argument("--config", type=str, default=DEFAULT_CONFIG,
                        help="the IMP recipe of the callback and end-to-end cases")
    return parser


def main(argv: list[str]) -> int:
    from experiments.config import parse

    args = parse(_parser(), argv)
    if args.quick and args.tiny:
        raise LTCError("--quick and --tiny pick different sizes: give one of them")
    if args.threads < 0:
        raise LTCError(f"--threads must be >= 0, got {args.threads}")
    if not Path(args.config).is_file():
        raise LTCError(f"--config {args.config} is not a file: run from the repository root or pass a recipe")
    settings = BenchSettings(size="tiny" if args.tiny else "quick" if args.quick else "full", device=args.device,
                             threads=args.threads, cases=tuple(args.cases) if args.cases else None,
                             chunk_sizes=tuple(args.chunk_sizes) if args.chunk_sizes else None,
                             tf32=args.tf32, config=args.config)
    out = Path(args.out) if args.out else None
    result = run_suite(settings, out, progress=lambda name: print(f"bench: {name} ...", file=sys.stderr, flush=True))
    print_table(result)
    if args.markdown:
        write_text(Path(args.markdown), markdown_table(result))
    for path in (args.out, args.markdown):
        if path:
            print(f"wrote {path}")
    return 0
