#!/usr/bin/env bash
# The effectiveness table at paper-scale budgets on an accelerator: one command, sized for ~8 minutes.
#
#   simulations/gpu_effectiveness.sh                  # -> results/effectiveness-gpu/{table.json,table.md,*.png}
#   simulations/gpu_effectiveness.sh --seeds 0        # extra flags go to simulations/effectiveness.py
#
# The same runner as the CPU table (`python -m simulations.effectiveness`), on CUDA (bf16 where the GPU
# has it): 3 domains x 2 user tasks x {majority, zero-shot, both calibrations, in-context, SDT-only, BBT, CBP in the
# 3-dimensional subspace of the SDT task vectors and, as the ablation, in all r coordinates} x seeds 0-2, every
# searching run evaluated at 1,000 / 2,000 / 4,000 / 8,000 calls, popsize 20, texts up to 256 tokens, 32 train texts per
# call, a longer SDT (on all a small domain has). 8 shots per answer, as on the CPU: the smallest user
# tasks (MMLU marketing, management + ethics, birth-control reviews) keep 80-92 test rows. Needs torch with CUDA and the backbone at hand (`make setup` converts the bundled
# SmolLM2; the runner needs neither Flower nor Ray). The sizes are an estimate for one H200 (not yet
# measured there): the runner is resumable, so a run cut by the timeout continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
source simulations/gpu_env.sh
timeout 470 "$PY" -m simulations.effectiveness --device cuda --out results/effectiveness-gpu \
  --methods majority zero-shot calibrated calibrated-fit icl sdt-only bbt cbp cbp-full --subspace 3 \
  --budgets 1000 2000 4000 8000 --popsize 20 --batch-size 32 --shots 8 --max-tokens 256 \
  --sdt-steps 2000 --sdt-batch 16 --sdt-pool 6000 "$@"
