# conveyor — `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help demo test lint typecheck unit bench docs dist clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,postgres,web]'
	touch $(STAMP)

demo: $(STAMP)  ## run a worker and sample jobs on a fresh SQLite file, showing the whole lifecycle
	$(BIN)/conveyor demo

test: $(STAMP) lint  ## lint, type-check, then run every test (starts a throwaway PostgreSQL)
	scripts/run-tests

lint: $(STAMP)  ## ruff and mypy (strict)
	$(BIN)/ruff check src tests bench docs_src
	$(BIN)/mypy

unit: $(STAMP)  ## the fast tests only (no PostgreSQL, no subprocesses)
	$(BIN)/pytest tests/unit -q

BENCHSTAMP := $(VENV)/.bench-installed
$(BENCHSTAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,postgres,web,bench]'
	touch $(BENCHSTAMP)

bench: $(BENCHSTAMP)  ## benchmarks beside hand-written loops; rewrites docs/benchmarks.md's tables and plot
	scripts/run-bench

DOCSTAMP := $(VENV)/.docs-installed
$(DOCSTAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,postgres,web,docs]'
	touch $(DOCSTAMP)

docs: $(DOCSTAMP)  ## build the documentation site into site/ (offline; links checked)
	scripts/build-docs

dist: $(STAMP)  ## build the wheel and the sdist into dist/
	$(BIN)/python -m build --no-isolation --outdir dist .

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) site dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
