# EvidenceOS (Python). `make run` and `make test` work on a fresh machine: each creates .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= ./data
LISTEN ?= 127.0.0.1:50051
TESTS ?=
PYTEST_ARGS ?=
LINT_PATHS := $(wildcard evidenceos tests ops scripts)

.PHONY: dev run test lint fmt proto proto-check bench torture clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

dev: $(STAMP)

run: $(STAMP)
	$(BIN)/evidenceosd --data-dir $(DATA_DIR) --listen $(LISTEN)

test: $(STAMP)
	$(BIN)/python -m pytest $(if $(TESTS),-k "$(TESTS)") $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy $(LINT_PATHS)
	$(BIN)/lint-imports
	$(BIN)/python scripts/gen_proto.py --check

fmt: $(STAMP)
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

proto-check: $(STAMP)
	$(BIN)/python scripts/gen_proto.py --check

bench: $(STAMP)
	$(BIN)/python -m ops.bench.run

torture: $(STAMP)
	EVIDENCEOS_KILL_LOOP_KILLS=$(or $(KILLS),1000) $(BIN)/python -m pytest -p no:cacheprovider -q -s --timeout=0 tests/process/test_kill_loop.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
