# The two commands a new user needs: `make run` and `make test`. `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT := $(or $(APPLIANCE_PORT),8000)
HOST := $(or $(APPLIANCE_HOST),127.0.0.1)
MANAGE := $(BIN)/python manage.py

.DEFAULT_GOAL := help
.PHONY: help run test lint format typecheck check-migrations openapi migrate admin clean

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

migrate: $(VENV)/.installed ## Create or upgrade the database
	$(MANAGE) migrate --noinput -v0

admin: migrate ## Create the first admin (generated password, once) if there is no user yet
	$(MANAGE) bootstrap_admin

run: admin ## Serve the appliance on http://127.0.0.1:8000 (APPLIANCE_PORT to change)
	@echo "Serving on http://$(HOST):$(PORT)  (API docs: http://$(HOST):$(PORT)/api/v1/docs)"
	$(BIN)/uvicorn appliance.asgi:application --host $(HOST) --port $(PORT) --no-server-header

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

openapi: $(VENV)/.installed ## Rewrite the committed OpenAPI snapshot (docs/openapi.json)
	$(BIN)/python -m appliance.api.openapi

test: lint typecheck check-migrations ## Lint, type-check, check migrations and run the whole suite
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean: ## Remove the virtualenv and local state (database, artifacts, credentials)
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
