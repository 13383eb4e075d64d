#!/usr/bin/env bash
# `ltc imp` under Lightning DDP, started by torchrun: one process per GPU, on one node or several.
#
# One node, 4 GPUs:
#   examples/launch/torchrun_imp.sh
# Two nodes of 4 GPUs: run the same line on every node (MASTER_ADDR = a host name of node 0):
#   NNODES=2 MASTER_ADDR=node0 examples/launch/torchrun_imp.sh
# Extra flags go to `ltc imp`, e.g. `examples/launch/torchrun_imp.sh --imp.levels 8`.
#
# Every rank runs the IMP driver; only global rank 0 writes the run dir and W&B, the others read
# the saved masks and weights from it: with several nodes RUN_DIR must be on a shared file system.
# Each optimiser step takes data.init_args.batch_size examples per process (a global batch of
# batch_size x processes), so divide the recipe's batch size by the process count to keep its
# global batch. Re-running the same line resumes an interrupted level from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."

CONFIG=${CONFIG:-configs/mnist1d_imp.yaml}
RUN_DIR=${RUN_DIR:-runs/imp-ddp}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
NNODES=${NNODES:-1}

if [ "$NNODES" -eq 1 ]; then
  rendezvous=(--standalone)
else
  rendezvous=(--rdzv_backend c10d --rdzv_endpoint "${MASTER_ADDR:?set MASTER_ADDR to node 0}:${MASTER_PORT:-29500}"
              --rdzv_id "${RDZV_ID:-ltc-imp}")
fi

export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
exec torchrun --nnodes "$NNODES" --nproc_per_node "$GPUS_PER_NODE" "${rendezvous[@]}" \
  -m experiments.cli imp --config "$CONFIG" --run_dir "$RUN_DIR" \
  --trainer.accelerator gpu --trainer.devices "$GPUS_PER_NODE" --trainer.num_nodes "$NNODES" \
  --trainer.strategy ddp "$@"
