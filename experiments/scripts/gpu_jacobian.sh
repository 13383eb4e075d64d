#!/usr/bin/env bash
# Residual-stream Jacobians on one CUDA GPU, as one prepared script (about 12 minutes on an H100 /
# H200, each stage under a time limit):
#
#   experiments/scripts/gpu_jacobian.sh OUT_DIR
#
# 1. the Jacobian cases of the benchmark suite at their CUDA sizes: `jacobian` (the all-pairs sweep
#    J(t, s), s <= t, at context 1024 against the per-pair autograd baseline, its FLOP rate, matrix-free
#    top-k), `jacobian_sketch` (the sketch against the exact sweep per summarised block: top-8 at t - s = 0
#    and 2, the participation ratio's worst error) and `jacobian_peers` (the Jacobian lens and block
#    coupling against the reference implementations' way). bench.txt / bench.md, every figure in bench.json.
# 2. `ltc jacobian` on a randomly initialised GPT-2 small saved locally (no download): a short real
#    sweep at context 1024 (3 targets of one context, covariance over 8 contexts).
# 3. the full all-pairs summary with `--method sketch` at context 1024: all 524,800 blocks J(t, s) of
#    one context, its wall time against the 10-minute target.
# 4. the trained GPT across training: `ltc jacobian --config configs/gpt_text_jacobian.yaml` over the
#    checkpoints of `ltc lm` (CHECKPOINTS, default runs/gpt_text: carry that folder to the GPU machine;
#    about 35 MB) and its permuted twin, with every target of 4 contexts (128 x 4 items per model):
#    training.json, answer.md and the figures against the training step under OUT_DIR/training/.
#
# Writes into OUT_DIR: gpu.txt, bench.txt, bench.json, bench.md, sweep.txt, sweep_results.json, the two
# founding figures and metrics_vs_distance.png of the sweep, full_sketch.txt, full_sketch_results.json,
# training.txt and training/ (answer.md, training.json, figures/), log.txt (everything printed).
#
# Needs torch with CUDA, transformers, numpy, rich, matplotlib, pytorch-lightning, safetensors, tokenizers,
# jsonargparse (pure Python: when the GPU machine lacks it, bring its package folders jsonargparse,
# docstring_parser and typeshed_client, from .venv/lib/python3.11/site-packages/, in a folder named by
# EXTRA_SITE, e.g. EXTRA_SITE=.extra experiments/scripts/gpu_jacobian.sh out/; without it stages 2-4 are
# skipped with a note).
# Rehearse on a CPU machine (no GPU time spent): JACOBIAN_DEVICE=cpu JACOBIAN_SIZE=tiny (the bench at its
# tiny sizes, contexts of 16 tokens, stage 3 on 16 tokens; stage 4 trains a tiny LM first when CHECKPOINTS
# does not exist).
set -euo pipefail
source "$(dirname "$0")/common.sh"  # OUT, PY, the repository root, offline, log.txt
DEVICE=${JACOBIAN_DEVICE:-cuda}
SIZE=${JACOBIAN_SIZE:-full}
CHECKPOINTS=${CHECKPOINTS:-runs/gpt_text}
if [ "$SIZE" = tiny ]; then
  CONTEXT=16; CHUNK=8; TRAINING_ITEMS=(--contexts 1 --targets 2 --covariance_contexts 4 --coupling_targets 2)
else
  CONTEXT=1024; CHUNK=64; TRAINING_ITEMS=(--contexts 4 --targets 128 --covariance_contexts 64)
fi
THREADS=(); if [ "$DEVICE" = cpu ]; then THREADS=(--threads 1); fi

{ nvidia-smi || true; "$PY" -c "import torch; print(torch.__version__, torch.version.cuda,
                                  torch.cuda.is_available() and torch.cuda.get_device_name())"; } \
  > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
if [ "$DEVICE" = cuda ]; then "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"; fi

echo "== 1. the Jacobian cases of the benchmark suite ($DEVICE, $SIZE)"
timeout --signal=INT 300 "$PY" - "$OUT/bench.json" "$DEVICE" "$SIZE" <<'PY' | tee "$OUT/bench.txt" \
  || echo "== bench stopped (exit $?)"
import sys
from pathlib import Path

from experiments.bench.suite import BenchSettings, run_suite
from experiments.bench.tables import markdown_table, print_table
from lth.rundir import write_text

out, device, size = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
cases = ("jacobian", "jacobian_sketch", "jacobian_peers")
result = run_suite(BenchSettings(size=size, device=device, threads=0 if device == "cuda" else 1, cases=cases), out)
print_table(result)
write_text(out.with_suffix(".md"), markdown_table(result))
PY

if ! "$PY" -c "import jsonargparse" 2>/dev/null; then
  echo "NOTE: stages 2-4 skipped: jsonargparse does not import here (see EXTRA_SITE above)"
  exit 0
fi
echo "== 2. ltc jacobian on a random GPT-2 small, context $CONTEXT"
MODEL=$(mktemp -d)/gpt2-random
"$PY" - "$MODEL" <<'PY'
import sys

import torch
from transformers import GPT2Config, GPT2LMHeadModel

torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config()).save_pretrained(sys.argv[1])
PY
SWEEP=$(mktemp -d)/sweep
timeout --signal=INT 180 "$PY" -m experiments.cli jacobian --model "$MODEL" --context_length "$CONTEXT" \
  --contexts 1 --targets 3 --covariance_contexts 8 --device "$DEVICE" --chunk_size "$CHUNK" "${THREADS[@]}" \
  --wandb.mode disabled --progress false --out "$SWEEP" | tee "$OUT/sweep.txt" || echo "== sweep stopped (exit $?)"
cp "$SWEEP/results.json" "$OUT/sweep_results.json" 2>/dev/null || true
for f in founding_s_eq_t founding_s_eq_t_minus_2 metrics_vs_distance; do
  cp "$SWEEP/figures/resid_pre.0__resid_post.11/$f.png" "$OUT/" 2>/dev/null || true
done

echo "== 3. the full all-pairs sketch summary of GPT-2 small at context $CONTEXT (every t, every s <= t)"
FULL=$(mktemp -d)/full
START=$(date +%s)
timeout --signal=INT 240 "$PY" -m experiments.cli jacobian --model "$MODEL" --context_length "$CONTEXT" \
  --contexts 1 --targets "$CONTEXT" --covariance_contexts 8 --device "$DEVICE" --chunk_size "$CHUNK" \
  "${THREADS[@]}" --method sketch --sketch_size 64 --wandb.mode disabled --progress false --out "$FULL" \
  | tee "$OUT/full_sketch.txt" || echo "== full sketch stopped (exit $?)"
echo "full all-pairs sketch: $(( $(date +%s) - START )) s wall (target <= 600 s at context 1024)" \
  | tee -a "$OUT/full_sketch.txt"
cp "$FULL/results.json" "$OUT/full_sketch_results.json" 2>/dev/null || true

echo "== 4. the trained GPT across training (checkpoints $CHECKPOINTS)"
if [ ! -d "$CHECKPOINTS" ] && [ "$SIZE" = tiny ]; then
  CHECKPOINTS=$(mktemp -d)/lm
  "$PY" -m experiments.cli lm --config configs/gpt_text_train.yaml --out "$CHECKPOINTS" --net.n_layer 4 \
    --net.n_embd 16 --net.n_head 2 --data.context_length 16 --schedule.steps 30 --threads 1 --progress false
fi
if [ -d "$CHECKPOINTS" ]; then
  timeout --signal=INT 300 "$PY" -m experiments.cli jacobian --config configs/gpt_text_jacobian.yaml \
    --checkpoints "$CHECKPOINTS" "${TRAINING_ITEMS[@]}" \
    --device "$DEVICE" --chunk_size "$CHUNK" "${THREADS[@]}" --wandb.mode disabled --progress false \
    --out "$OUT/training" | tee "$OUT/training.txt" || echo "== training sweep stopped (exit $?)"
  rm -rf "$OUT"/training/step-* "$OUT"/training/twin-* "$OUT"/training/twins  # keep the series, not the items
else
  echo "NOTE: stage 4 skipped: no checkpoints at $CHECKPOINTS (carry runs/gpt_text, or set CHECKPOINTS)"
fi
echo "wrote $(ls "$OUT")"
