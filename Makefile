# Two entry points: `make validate` (the main job) and `make test` (lint, types, tests).
# Each bootstraps a local virtual environment with only Python 3.11+ and pip.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: venv validate validate-full test lint typecheck pytest stress bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache .grimp_cache
