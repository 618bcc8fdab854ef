# Two entry points: `make validate` (the main job) and `make test` (lint, types, tests).
# Each bootstraps a local virtual environment with only Python 3.11+ and pip.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: venv validate validate-full test lint typecheck pytest stress bench clean warmup gpu-ptx gpu-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/mmsb warmup
	touch $(STAMP)

venv: $(STAMP)

validate: $(STAMP)
	$(BIN)/mmsb validate

validate-full: $(STAMP)
	$(BIN)/mmsb validate --full

lint: $(STAMP)
	$(BIN)/ruff check src tests tools examples
	$(BIN)/ruff format --check src tests tools examples
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

stress: $(STAMP)
	$(BIN)/pytest -q -rA -s -m 'slow or stress_throughput or stress_stability or stress_memory'

bench: $(STAMP)
	$(BIN)/python -m mmsb.benchmarks.storage
	$(BIN)/mmsb bench --json bench.json

# compile (or load from numba's cache) every kernel once, so first calls do not pay for it
warmup: $(STAMP)
	$(BIN)/mmsb warmup

# every device kernel to PTX for compute capability 9.0, without a GPU (adds the CUDA 12
# compiler wheels of numba-cuda[cu12] to the venv: about 430 MB)
gpu-ptx: $(STAMP)
	$(BIN)/pip install --quiet 'numba-cuda[cu12]>=0.20'
	$(BIN)/python tools/gpu_ptx.py --cc 9.0

# on a machine with an NVIDIA GPU (under 8 minutes): the device tests without the simulator,
# the race test (100 repetitions) and the benchmark, figures with the card's name
gpu-check: $(STAMP)
	$(BIN)/python tools/gpu_check.py --install --json gpu-check.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache .grimp_cache
