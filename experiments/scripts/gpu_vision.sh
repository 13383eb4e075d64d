#!/usr/bin/env bash
# The six vision recipes (LeNet-300-100, Conv-2/4/6, ResNet-20, VGG-16) on one CUDA GPU, as one
# prepared script of about 5 minutes at most: experiments.bench.vision_gpu runs each config's `ltc imp`
# for VISION_STEPS steps per level (default 600), levels 0 (dense) and 1 (pruned, masked training),
# and reports ms/step, images/s, test accuracy and peak GPU memory per config and level.
#
#   experiments/scripts/gpu_vision.sh OUT_DIR
#
# Budget: all runs together stop at VISION_BUDGET_S (default 270 s; configs left then get a row
# saying so), each run at 120 s (plus 10 s to stop), and the whole script is stopped at 330 s. Estimated from ms/step
# on an H200 with synthetic data (LeNet 1.5, Conv-6 3.2, ResNet-20 10.6, VGG-16 7.1): about 35 s
# of training in all, plus per run ~10 s of start-up and evaluation (10k test images per level).
#
# Data: real MNIST / CIFAR-10 under VISION_DATA_ROOT (default data/) when present; otherwise
# random pixels and labels of the official sizes are written into OUT_DIR/synthetic_data (accuracy
# is then chance, time per step is real; every row says which data it ran on).
#
# Writes into OUT_DIR:
#   gpu.txt                   nvidia-smi and torch's view of the device, before the runs
#   nvidia_smi.csv            GPU utilisation, memory and power, sampled every second during the runs
#   vision_gpu.json / .md     the table (the JSON is rewritten after every config)
#   runs/<config>/            the run directories (metrics.json per level), runs/<config>.log
#   log.txt                   everything printed
#
# Needs torch with CUDA, torchvision, pytorch-lightning, jsonargparse, rich, safetensors (the
# repository's .venv; PYTHON overrides the interpreter).
# Rehearse on a CPU machine (no GPU time spent): VISION_DEVICE=cpu VISION_SIZE=tiny (2 steps, one
# torch / BLAS thread per run unless VISION_THREADS says otherwise).
set -euo pipefail
source "$(dirname "$0")/common.sh"  # OUT, PY, the repository root, offline, log.txt
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

DEVICE=${VISION_DEVICE:-cuda}
SIZE=${VISION_SIZE:-full}
if [ "$DEVICE" = cuda ]; then STEPS=${VISION_STEPS:-600}; else STEPS=${VISION_STEPS:-2}; fi
BUDGET=${VISION_BUDGET_S:-270}
THREADS=${VISION_THREADS:-}
if [ "$DEVICE" = cpu ]; then THREADS=${THREADS:-1}; fi  # on small shared CPUs one thread per run is fastest

{ nvidia-smi || true
  "$PYTHON" -c "import torch; print(torch.__version__, torch.version.cuda,
                                    torch.cuda.is_available() and torch.cuda.get_device_name())"
} > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,memory.total,power.draw,temperature.gpu \
    --format=csv -l 1 > "$OUT/nvidia_smi.csv" 2>&1 &
  SMI_PID=$!
  trap 'kill "$SMI_PID" 2>/dev/null || true' EXIT
else
  echo "NOTE: no nvidia-smi here: no utilisation log"
fi

echo "== vision recipes: device $DEVICE, $SIZE data, $STEPS steps per level, budget $BUDGET s"
start=$(date +%s)
timeout --signal=INT 330 "$PYTHON" -m experiments.bench.vision_gpu "$OUT" --device "$DEVICE" --size "$SIZE" \
  --steps "$STEPS" --levels 1 --data_root "${VISION_DATA_ROOT:-data}" --timeout_s 120 --budget_s "$BUDGET" \
  ${THREADS:+--threads "$THREADS"} || echo "== vision_gpu ended with exit $?: vision_gpu.json holds the configs that finished"
echo "== done in $(( $(date +%s) - start )) s; wrote $(ls "$OUT")"
