# Sourced by the accelerator scripts (gpu_check.sh, gpu_effectiveness.sh) from the repository root:
# the Python to use ($PYTHON, else the venv's), nothing to do where torch sees no CUDA device (exit 0),
# the GPU named, and the offline environment of the bundled models and data.
PY=${PYTHON:-.venv/bin/python}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "$(basename "$0"): torch sees no CUDA device on this machine; nothing to run"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
export CBP_FED_CACHE="${CBP_FED_CACHE:-$PWD/.state/cache}"
