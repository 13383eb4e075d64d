#!/usr/bin/env bash
# Seeds and controls as independent SLURM jobs: one array task per seed trains its IMP main line
# (levels 0..L, no controls); when all have succeeded, one array task per seed trains its controls
# at imp.branch_levels (one job per run dir: `ltc imp` locks it). Extra flags go to every `ltc imp`.
#
#   SEEDS="0 1 2 3 4" examples/launch/slurm_independent_jobs.sh
#   # afterwards: ltc report --run_dir runs/mnist1d_imp-*
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p logs

export CONFIG=${CONFIG:-configs/mnist1d_imp.yaml}
export SEEDS=${SEEDS:-"0 1 2"}
export BRANCHES=${BRANCHES:-"random_reinit random_prune shuffle"}
n_seeds=$(wc -w <<< "$SEEDS")
task=examples/launch/slurm_imp_task.sbatch

main=$(PHASE=main sbatch --parsable --export=ALL --array=0-$((n_seeds - 1)) "$task" "$@")
controls=$(PHASE=control sbatch --parsable --export=ALL --dependency=afterok:"$main" \
  --array=0-$((n_seeds - 1)) "$task" "$@")
echo "main lines: job $main; controls: job $controls (starts when $main has succeeded)"
