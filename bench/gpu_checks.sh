#!/usr/bin/env bash
# One GPU check of the three reference recipes, meant for one H200 (or H100) in under 5 minutes:
# synthetic data in each recipe's real file formats, default-mode torch.compile (no max-autotune),
# per recipe the step time, the steps that fit the budget, the scored time or size and peak memory,
# next to the reference's published figure. Needs only python3 with torch and numpy ($PYTHON chooses another).
#
#   bash bench/gpu_checks.sh [OUT_DIR]          # on the GPU machine, from the repository root
#   bash bench/gpu_checks.sh --tiny             # on a CPU: the tiny profiles, to check this script
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--tiny" ]]; then
    exec "${PYTHON:-python3}" bench/gpu_recipes.py --tiny --allow-cpu --timeout 300
fi
out="${1:-${OUT:-.}}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# At most 150 s for one step of one recipe and 280 s for everything: a recipe that runs out says so
# in its row instead of holding up the others.
"${PYTHON:-python3}" bench/gpu_recipes.py --timeout 150 --deadline 280 --json "$out/gpu_recipes.json" | tee "$out/gpu_recipes.txt"
