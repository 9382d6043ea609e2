SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install lint format test test-unit test-integration demo bench bench-quick airflow stack-up stack-down clean lock pictures

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_.-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint constraints.txt --editable '.[all]'
	@touch $@

install: $(INSTALLED) ## Create .venv and install the project with its pinned dependencies

.env: .env_template
	$(PYTHON) -m cinema.envfile

lint: install ## ruff, mypy, sqlfluff, yamllint, shellcheck, hadolint, pymarkdown
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/sqlfluff lint dbt_project
	$(BIN)/yamllint --strict .
	git ls-files -z -- '*.sh' .ci/run | xargs -0 $(BIN)/shellcheck
	git ls-files -z -- '*Dockerfile*' | xargs -0 --no-run-if-empty $(BIN)/hadolint
	$(BIN)/pymarkdown scan $$(git ls-files -- '*.md')

format: install ## Apply ruff's formatting and autofixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install ## Unit and integration tests on real PostgreSQL, chdb, dbt and Airflow (browser tests: Chromium, or skipped unless CI=true)
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: install ## Unit tests only (no services)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: install ## Integration tests only
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

stack-up: install .env ## Start the embedded stack (two PostgreSQL 18 servers)
	$(BIN)/cinema stack up

stack-down: install .env ## Stop the embedded stack (data is kept)
	$(BIN)/cinema stack down

demo: install .env ## The main job: Airflow drives the whole pipeline once, then prints the marts
	$(BIN)/cinema demo

airflow: install .env ## Airflow's UI on http://127.0.0.1:8080 against the embedded stack
	$(BIN)/cinema airflow

bench: install ## Every stage against its reference, at the issues' sizes (1M and 10M events; about 17 minutes here)
	$(BIN)/python -m bench --full

bench-quick: install ## The same figures at small sizes (about 8 minutes here)
	$(BIN)/python -m bench

pictures: install ## Redraw pictures/ from docker-compose.yaml (Graphviz); REPORT=path/to/index.html also screenshots it
	$(BIN)/python -m scripts.draw_pictures $(if $(REPORT),--report $(REPORT))

lock: install ## Re-resolve constraints.txt from pyproject.toml
	$(BIN)/pip freeze --exclude-editable | sort -f | \
		{ echo "# The whole resolved dependency tree, verified together on Python 3.11 (make lock regenerates it)."; cat; } > constraints.txt

clean: ## Stop the stack and delete .venv, state and build output
	-[ -x $(BIN)/cinema ] && $(BIN)/cinema stack down --purge
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
