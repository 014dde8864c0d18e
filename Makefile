# rotabot developer entry points. `make test` is the one command CI (.ci/run) runs.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
export VENV

.PHONY: help venv services lint test run bench soak clean

help:
	@echo "make venv      create $(VENV) and install rotabot[dev] (again only when pyproject.toml changes)"
	@echo "make services  make sure PostgreSQL, Redis, Chromium and OpenBao binaries are installed"
	@echo "make lint      ruff check + mypy + lint-imports (the layer contracts)"
	@echo "make test      venv + services + lint + the whole pytest suite"
	@echo "make run       start the local sandbox (rotabot sandbox)"
	@echo "make bench     run the benchmarks"
	@echo "make soak      the reliability suite's long runs (SOAK_ROUNDS crash/fault rounds, default 20)"

venv:
	@scripts/ensure-venv.sh

services: venv
	@scripts/ensure-services.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Lint and tests both run even when one fails, so one run shows every problem; any failure
# (including pytest's exit 5, "no tests collected") makes the target fail.
test: venv services
	@lint=0; \
	echo "+ ruff check ."; $(BIN)/ruff check . || lint=1; \
	echo "+ mypy"; $(BIN)/mypy || lint=1; \
	echo "+ lint-imports"; $(BIN)/lint-imports || lint=1; \
	echo "+ pytest -q"; $(BIN)/pytest -q; tests=$$?; \
	if [ $$lint -ne 0 ]; then echo "make test: ruff, mypy or lint-imports failed (see above)" >&2; fi; \
	if [ $$tests -ne 0 ]; then echo "make test: pytest exited with $$tests" >&2; fi; \
	[ $$lint -eq 0 ] && [ $$tests -eq 0 ]

run: venv
	$(BIN)/rotabot sandbox

# The reliability suite with many rounds (replica races, kill -9 cycles, fault cycles).
SOAK_ROUNDS ?= 20
soak: venv services
	ROTABOT_SOAK_ROUNDS=$(SOAK_ROUNDS) $(BIN)/pytest -q tests/reliability --timeout 3600

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build
