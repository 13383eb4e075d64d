# Sourced by the prepared GPU scripts, after `set -euo pipefail`: the output folder (OUT, absolute,
# from $1), the repository root as working directory, offline libraries, the project (and
# EXTRA_SITE, a folder of extra pure-Python packages) on PYTHONPATH, and everything printed
# also into OUT/log.txt. PY is the Python to run.
OUT=${1:?usage: $0 OUT_DIR}
cd "$(dirname "$0")/../.."  # the repository root
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled WANDB_SILENT=true PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${EXTRA_SITE:+:$(cd "$EXTRA_SITE" && pwd)}${PYTHONPATH:+:$PYTHONPATH}"
exec > >(tee -a "$OUT/log.txt") 2>&1
