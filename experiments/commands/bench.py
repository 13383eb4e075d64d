"""`ltc bench`: the benchmark suite, one table of ratios measured side by side in one run.

    ltc bench [--quick] [--out bench.json] [--markdown bench.md] [--device cuda] [--threads 1] [--tf32]
              [--cases '[masking, covariance]'] [--chunk_sizes '[8, 64]']

The cases, their sizes and how peak memory is measured: `experiments.bench.suite`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import ActionYesNo, ArgumentParser

from experiments.bench.suite import CUDA_CASES, DEFAULT_CONFIG, BenchSettings, run_suite
from experiments.bench.tables import markdown_table, print_table
from experiments.config import parse
from lth.errors import LTCError
from lth.rundir import write_text


def build_parser() -> ArgumentParser:
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
    """Parse the flags, run the suite, print its table; also write the JSON / Markdown when asked."""
    args = parse(build_parser(), argv)
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
