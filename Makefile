# Custodia — `make run` serves the API on 127.0.0.1:8000, `make test` runs the whole suite.
# Both create .venv with the machine's python3 and install the project on first use.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.custodia-installed
HOST ?= 127.0.0.1
PORT ?= 8000
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet

.PHONY: help install run test lint format bench clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "Custodia needs Python >= 3.11 (found: $$($(PYTHON) --version))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependencies changed (the project itself is installed editable).
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install --upgrade pip
	$(PIP) install -c constraints.txt -e '.[dev]'
	@touch $@

install: $(STAMP) ## create .venv and install the project (skipped when nothing changed)

run: $(STAMP) ## migrate the embedded database, create dev keys, serve on $(HOST):$(PORT)
	$(BIN)/custodia keys init --if-missing
	$(BIN)/custodia db upgrade
	$(BIN)/custodia serve --host $(HOST) --port $(PORT)

test: $(STAMP) ## the whole suite: SQLite, and PostgreSQL when one answers
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff (lint + format check) and mypy strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

BENCHES ?= screening onboarding audit_trail transfers monitoring aml_rules asgi_servers

bench: $(STAMP) ## the benchmarks (never part of `make test`); BENCHES="onboarding" runs one
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; done
	@echo "results: bench/results/"

clean: ## remove caches (keeps .venv and var/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/results
