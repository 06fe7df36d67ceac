# Developer entry points. `make help` lists them; `make test` is what CI runs (.ci/run).

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
FVC := $(BIN)/fvc
STAMP := $(VENV)/.installed-pyproject
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv up down status test lint demo clean chart bench-quality

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(STAMP) ## create .venv and install fvc with its dev extras (again only when pyproject.toml changes)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

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

chart: venv ## chart and image checks alone: helm lint/template/schema validation, template tests, hadolint
	scripts/chart-check

bench-quality: venv ## clustering quality vs classic methods (LFW + synthetic); writes docs/quality.md
	$(BIN)/python benchmarks/quality.py

lint: venv ## ruff over every Python folder
	$(BIN)/ruff check app agents schemas tests benchmarks

demo: venv ## the whole pipeline: local Kafka + Redis, a worker, a synthetic scene, scored events
	$(FVC) demo

clean: ## stop the stack, remove its state folder and caches (keeps .venv)
	-test -x $(FVC) && $(FVC) local down
	rm -rf .fvc .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
