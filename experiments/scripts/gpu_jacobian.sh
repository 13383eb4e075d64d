#!/usr/bin/env bash
# Residual-stream Jacobians of a GPT-2-small-shaped model on one CUDA GPU, as one prepared script
# (a few minutes on an H100 / H200, each stage under a time limit):
#
#   experiments/scripts/gpu_jacobian.sh OUT_DIR
#
# 1. the `jacobian` case of the benchmark suite (experiments/bench/jacobian.py) at its CUDA size
#    (context 1024, 256 rows, 2 baseline pairs, chunks of 64): the all-pairs sweep J(t, s), s <= t,
#    against the per-pair autograd baseline (extrapolated to the full sweep), the achieved FLOP rate
#    against a float32 matmul timed in the same run, and matrix-free top-k singular values against
#    exact. Its table goes to bench.txt / bench.md, every figure to bench.json.
# 2. `ltc jacobian` on a randomly initialised GPT-2 small saved locally (no download): a short
#    real sweep at context 1024 (3 targets of one context, covariance over 8 contexts), printing
#    the time per (context, t) item split into Jacobian, singular values and Gram.
#
# 3. the full all-pairs summary with `--method sketch` (m = 64 random VJPs per target) at context
#    1024: all 524,800 blocks J(t, s) of one context (||J||_F^2, participation ratio with standard
#    errors, top-k at t - s = 0, 2), its wall time against the 10-minute target.
#
# Writes into OUT_DIR: gpu.txt, bench.txt, bench.json, bench.md, sweep.txt, sweep_results.json, the two founding
# figures and metrics_vs_distance.png of the sweep, full_sketch.txt, full_sketch_results.json,
# log.txt (everything printed).
#
# Needs torch with CUDA, transformers, numpy, rich, matplotlib, pytorch-lightning, safetensors;
# step 2 also jsonargparse (pure Python: bring its package folders jsonargparse, docstring_parser
# and typeshed_client, from .venv/lib/python3.11/site-packages/ here, in a folder named by
# EXTRA_SITE, e.g. EXTRA_SITE=.extra experiments/scripts/gpu_jacobian.sh out/). Without it step 2 is
# skipped with a note.
set -euo pipefail
source "$(dirname "$0")/common.sh"  # OUT, PY, the repository root, offline, log.txt

{ nvidia-smi || true; "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; } \
  > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"

echo "== 1. the jacobian case of the benchmark suite, context 1024"
timeout --signal=INT 240 "$PY" - "$OUT/bench.json" <<'PY' | tee "$OUT/bench.txt" || echo "== bench stopped (exit $?)"
import sys
from pathlib import Path

from experiments.bench.suite import BenchSettings, run_suite
from experiments.bench.tables import markdown_table, print_table
from lth.rundir import write_text

out = Path(sys.argv[1])
result = run_suite(BenchSettings(device="cuda", threads=0, cases=("jacobian",)), out)
print_table(result)
write_text(out.with_suffix(".md"), markdown_table(result))
PY

echo "== 2. ltc jacobian on a random GPT-2 small, context 1024"
if ! "$PY" -c "import jsonargparse" 2>/dev/null; then
  echo "NOTE: step 2 skipped: jsonargparse does not import here (see EXTRA_SITE above)"
  exit 0
fi
MODEL=$(mktemp -d)/gpt2-random
"$PY" - "$MODEL" <<'PY'
import sys

import torch
from transformers import GPT2Config, GPT2LMHeadModel

torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config()).save_pretrained(sys.argv[1])
PY
SWEEP=$(mktemp -d)/sweep
timeout --signal=INT 300 "$PY" -m experiments.cli jacobian --model "$MODEL" --context_length 1024 \
  --contexts 1 --targets 3 --covariance_contexts 8 --device cuda --chunk_size 64 \
  --wandb.mode disabled --progress false --out "$SWEEP" | tee "$OUT/sweep.txt" || echo "== sweep stopped (exit $?)"
cp "$SWEEP/results.json" "$OUT/sweep_results.json" 2>/dev/null || true
for f in founding_s_eq_t founding_s_eq_t_minus_2 metrics_vs_distance; do
  cp "$SWEEP/figures/resid_pre.0__resid_post.11/$f.png" "$OUT/" 2>/dev/null || true
done
echo "== 3. the full all-pairs sketch summary of GPT-2 small at context 1024 (every t, every s <= t)"
FULL=$(mktemp -d)/full
START=$(date +%s)
timeout --signal=INT 600 "$PY" -m experiments.cli jacobian --model "$MODEL" --context_length 1024 \
  --contexts 1 --targets 1024 --covariance_contexts 8 --device cuda --chunk_size 64 --method sketch \
  --sketch_size 64 --wandb.mode disabled --progress false --out "$FULL" | tee "$OUT/full_sketch.txt" \
  || echo "== full sketch stopped (exit $?)"
echo "full all-pairs sketch: $(( $(date +%s) - START )) s wall (target <= 600 s)" | tee -a "$OUT/full_sketch.txt"
cp "$FULL/results.json" "$OUT/full_sketch_results.json" 2>/dev/null || true
echo "wrote $(ls "$OUT")"
