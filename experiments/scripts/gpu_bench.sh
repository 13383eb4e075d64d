#!/usr/bin/env bash
# The benchmark suite (`ltc bench`) on one CUDA GPU, as one prepared script: two stages under time
# limits of 210 s and 60 s, so at most about 5 minutes on an H100 / H200 (estimated, not yet run).
#
#   experiments/scripts/gpu_bench.sh OUT_DIR
#
# Writes into OUT_DIR:
#   gpu.txt                        nvidia-smi and torch's view of the device
#   bench_cuda.json / .md          every case in float32 (TF32 off), incl. the precision case:
#                                  top-k singular values of J(t, t) under TF32 and bf16 vs float32
#   bench_cuda_tf32.json / .md     the matmul-bound cases again with TF32 matmuls allowed
#   log.txt                        everything printed
# The JSON files are rewritten after every case, so a stage stopped by its time limit keeps the
# cases it finished.
#
# Needs torch with CUDA, transformers, pytorch-lightning, numpy, rich. Not jsonargparse: the suite
# is called from Python here, not through `ltc bench`. The callback and end_to_end cases run
# `ltc imp` on MNIST-1D and need `jsonargparse` and `mnist1d` (mnist1d imports requests, scipy,
# matplotlib); without them they are skipped, with a note in log.txt. They are pure Python: to
# bring them, put their package folders (jsonargparse, docstring_parser, typeshed_client,
# mnist1d; they are under .venv/lib/python3.11/site-packages/ here) in a folder named by
# EXTRA_SITE, e.g. EXTRA_SITE=.venv/lib/python3.11/site-packages experiments/scripts/gpu_bench.sh out/
#
# Rehearse the script on a CPU machine (no GPU time spent): BENCH_DEVICE=cpu BENCH_SIZE=tiny.
set -euo pipefail
source "$(dirname "$0")/common.sh"  # OUT, PY, the repository root, offline, log.txt

DEVICE=${BENCH_DEVICE:-cuda}
SIZE=${BENCH_SIZE:-full}
{ nvidia-smi || true; "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"; } \
  > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

cases=masking,covariance,jacobian_chunks,jacobian
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
  cases=$cases,precision
fi
if "$PY" -c "import jsonargparse, mnist1d" 2>/dev/null; then
  cases=$cases,callback,end_to_end
else
  echo "NOTE: callback and end_to_end skipped: jsonargparse or mnist1d does not import here (see EXTRA_SITE above)"
fi

suite() {  # suite NAME LIMIT_S TF32 CASES
  echo "== $1: cases $4, TF32 $3, limit $2 s"
  timeout --signal=INT "$2" "$PY" - "$OUT/$1.json" "$3" "$4" "$DEVICE" "$SIZE" <<'PY' \
    || echo "== $1 stopped (exit $?): the JSON holds the finished cases"
import sys
from pathlib import Path

from experiments.bench.suite import BenchSettings, run_suite
from experiments.bench.tables import markdown_table, print_table
from lth.rundir import write_text

out, tf32, cases, device, size = Path(sys.argv[1]), sys.argv[2] == "1", tuple(sys.argv[3].split(",")), *sys.argv[4:]
settings = BenchSettings(size=size, device=device, threads=0, cases=cases, tf32=tf32)
result = run_suite(settings, out, progress=lambda name: print(f"bench: {name} ...", flush=True))
print_table(result)
write_text(out.with_suffix(".md"), markdown_table(result))
PY
}

suite bench_cuda 210 0 "$cases"
suite bench_cuda_tf32 60 1 masking,jacobian_chunks,jacobian
echo "wrote $(ls "$OUT")"
