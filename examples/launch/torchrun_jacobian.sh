#!/usr/bin/env bash
# A residual-stream Jacobian sweep (`ltc jacobian`) split over GPUs: torchrun starts one process
# per GPU; each reads RANK / WORLD_SIZE as its shard I/N of the (context, target t) items and
# LOCAL_RANK as its GPU, computes its share and saves it under the sweep's state/; the last shard
# to finish merges the Grams and covariances and writes the results. No process group is used, so
# the same sweep can also be split across independent jobs with `--shard I/N` (see SLURM below).
#
#   examples/launch/torchrun_jacobian.sh                       # 4 GPUs of one node
#   GPUS=8 examples/launch/torchrun_jacobian.sh --contexts 64  # extra flags go to `ltc jacobian`
#
# As separate SLURM jobs instead (one GPU each, the output directory on a shared file system):
#   for i in 0 1 2 3; do sbatch --gpus=1 --wrap "ltc jacobian --config configs/gpt2_residual_jacobian.yaml \
#     --device cuda --shard $i/4 --out runs/jacobian-gpt2"; done
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
exec torchrun --standalone --nproc_per_node "${GPUS:-4}" -m experiments.cli jacobian \
  --config "${CONFIG:-configs/gpt2_residual_jacobian.yaml}" --device cuda \
  --out "${OUT:-runs/jacobian-gpt2}" "$@"
