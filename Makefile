# Developer entry points. `make help` lists them; `make test` is what CI runs (.ci/run).
#
# Every environment is installed from uv.lock (exact versions and hashes), never from the open
# ranges in pyproject.toml: `make lock` refreshes the lock, `make lock-check` says if it is current.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
FVC := $(BIN)/fvc
STAMP := $(VENV)/.installed-lock
# uv itself, pinned with its hashes, in a venv of its own (it is not part of what fvc runs on).
UV_VERSION := 0.13.9
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
UV_REQUIREMENTS := scripts/uv-requirements.txt
LATEST := .venv-latest
PYTEST_ARGS ?=
STALE := uv.lock is stale against pyproject.toml (its dependencies changed since the lock was \
made): run 'make lock', then commit uv.lock

.DEFAULT_GOAL := help
.PHONY: help venv lock lock-check up down status test test-latest lint demo clean chart \
	bench-quality

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV): $(UV_REQUIREMENTS)
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes \
		-r $(UV_REQUIREMENTS)
	touch $@

venv: $(STAMP) ## create .venv from uv.lock with the dev extra (hash-checked; refuses a stale lock)

$(STAMP): pyproject.toml uv.lock Makefile $(UV)
	@$(UV) lock --check --offline --quiet 2>/dev/null || { echo "make venv: $(STALE)" >&2; exit 1; }
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --quiet --locked --extra dev --python 3.11 \
		--no-python-downloads
	$(UV) export --quiet --frozen --extra dev --no-emit-project --no-hashes \
		--output-file $(VENV)/locked-requirements.txt
	touch $@

lock: $(UV) ## resolve pyproject.toml's ranges again into uv.lock (and uv's own pin)
	$(UV) lock
	echo "uv==$(UV_VERSION)" | $(UV) pip compile --quiet --generate-hashes \
		--output-file $(UV_REQUIREMENTS) -

lock-check: $(UV) ## is uv.lock current for pyproject.toml, and does .venv hold exactly it?
	@$(UV) lock --check --offline --quiet 2>/dev/null || { echo "make lock-check: $(STALE)" >&2; exit 1; }
	@echo "uv.lock is current for pyproject.toml"
	@if [ -x $(BIN)/python ]; then \
		UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --extra dev --check --quiet --python 3.11 \
		&& echo "$(VENV) holds exactly the locked versions" \
		|| { echo "make lock-check: $(VENV) differs from uv.lock: run make venv" >&2; exit 1; }; \
	fi

up: venv ## start the local Kafka (KRaft) and Redis: fvc local up
	$(FVC) local up

down: venv ## stop them: fvc local down
	$(FVC) local down

status: venv ## say what runs where: fvc local status
	$(FVC) local status

# The stack is stopped afterwards whatever happens (failed tests, a failed `up`, Ctrl-C), and
# make exits with pytest's status. With CI set, a missing service fails tests instead of skipping.
test: venv ## start the stack, run pytest (PYTEST_ARGS=... for a subset), stop the stack
	@status=0; \
	trap '$(FVC) local down' EXIT; trap 'exit 130' INT TERM; \
	if [ -n "$${CI:-}" ]; then export FVC_REQUIRE_SERVICES=1; fi; \
	scripts/chart-check tools >/dev/null || echo "make test: helm unavailable; tests/chart will say why"; \
	$(FVC) local up || status=$$?; \
	if [ $$status -eq 0 ]; then $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; fi; \
	exit $$status

# Not in CI: CI runs the lock. This shows a drift (a new release breaking fvc) before a lock
# refresh brings it in.
test-latest: $(UV) ## unit and contract suites on the newest versions pyproject.toml allows
	@status=0; \
	VIRTUAL_ENV=$(LATEST) $(UV) venv --quiet --allow-existing --python $(PYTHON) $(LATEST) \
	&& VIRTUAL_ENV=$(LATEST) $(UV) pip install --quiet --upgrade --resolution highest -e ".[dev]" \
	|| exit $$?; \
	trap '$(LATEST)/bin/fvc local down' EXIT; trap 'exit 130' INT TERM; \
	$(LATEST)/bin/fvc local up || status=$$?; \
	if [ $$status -eq 0 ]; then \
		$(LATEST)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS) tests/unit tests/contract \
		|| status=$$?; \
	fi; \
	exit $$status

chart: venv ## chart and image checks alone: helm lint/template/schema validation, template tests, hadolint
	scripts/chart-check

bench-quality: venv ## clustering quality vs classic methods (LFW + synthetic); writes docs/quality.md
	$(BIN)/python benchmarks/quality.py

lint: venv ## ruff everywhere, mypy strict on the engine, config and schemas, import contracts
	$(BIN)/ruff check app agents schemas tests benchmarks conftest.py
	$(BIN)/mypy
	$(BIN)/lint-imports

demo: venv ## the whole pipeline: local Kafka + Redis, a worker, a synthetic scene, scored events
	$(FVC) demo

clean: ## stop the stack, remove its state folder and caches (keeps .venv)
	-test -x $(FVC) && $(FVC) local down
	rm -rf $(LATEST) .fvc .pytest_cache .ruff_cache .mypy_cache .hypothesis build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
