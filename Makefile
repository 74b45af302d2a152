# Every target bootstraps uv with pip when it is missing, then lets uv install
# exactly what uv.lock says into .venv, whose bin/ then holds every command the
# README shows (.venv/bin/keyautomat): nothing needs uv on PATH.
SHELL := /bin/bash
# uv from PATH, else one an earlier checkout put in ~/.local/bin, else our own in .uv/.
UV := $(or $(shell command -v uv 2>/dev/null),$(wildcard $(HOME)/.local/bin/uv),$(CURDIR)/.uv/bin/uv)
# Where `make run` serves; the README's URLs assume the defaults.
HOST ?= 127.0.0.1
PORT ?= 8080
PYTEST_ARGS ?=
# pytest-xdist workers of `make test`: two, one a core of the 2-core machines it is measured
# on (about 6 minutes there against 10 serially; docs/performance/test-suite.md);
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
FUZZ_EXAMPLES ?= 300
FUZZ_PAIRS ?= 300
FUZZ_SEED ?= 11

.PHONY: help install run test fuzz lint format typecheck schemas check bench bench-devices clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Into this folder rather than with --user: pip refuses --user on distributions that
# mark their Python as externally managed (PEP 668; Debian, Ubuntu), not --target.
$(CURDIR)/.uv/bin/uv:
	python3 -m pip install --quiet --disable-pip-version-check --target $(CURDIR)/.uv uv

install: | $(UV)  ## install the project and its dev tools into .venv (and openapi-typescript, with npm)
	$(UV) sync --frozen --quiet
	@# The OpenAPI test generates TypeScript with the vendor's generator (tests/openapi_ts);
	@# without npm it skips, or fails under KEYAUTOMAT_REQUIRE_SERVICES=1.
	@if command -v npm >/dev/null; then npm ci --prefix tests/openapi_ts --no-audit --no-fund --silent; fi

run: install  ## migrate a SQLite database and serve the API and console with demo data on :8080 (PORT=, HOST=)
	@echo "Starting keyautomat on http://$(HOST):$(PORT) (Ctrl+C stops it)."
	@echo "Open http://$(HOST):$(PORT)/console/ and sign in with consoleUser/consolePassword below."
	@echo "In another terminal, in this folder:  .venv/bin/keyautomat call GET /automats"
	@$(UV) run --frozen keyautomat serve --demo --host $(HOST) --port $(PORT)

# PYTHONDONTWRITEBYTECODE emptied: a shell that sets it (this project's CI machine does)
# would make every run compile all of FastAPI, SQLAlchemy and the app again and rewrite
# the asserts of every test module, ~5-15 s of CPU before the first test.
test: install  ## run every test (SQLite always; PostgreSQL/MQTT when reachable; TEST_WORKERS=N)
	PYTHONDONTWRITEBYTECODE= $(UV) run --frozen pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

fuzz: install  ## the long fuzz run: more cases, random pairs of mutations, SQLite and PostgreSQL
	KEYAUTOMAT_FUZZ_ENGINES=sqlite,postgresql KEYAUTOMAT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	KEYAUTOMAT_FUZZ_MUTATIONS=0 KEYAUTOMAT_FUZZ_PARAMS=0 KEYAUTOMAT_FUZZ_PAIRS=$(FUZZ_PAIRS) KEYAUTOMAT_FUZZ_SEED=$(FUZZ_SEED) \
	$(UV) run --frozen pytest tests/fuzz -s $(PYTEST_ARGS)

lint: install  ## ruff lint and format check
	$(UV) run --frozen ruff check src tests bench migrations .ci/fresh-machine-smoke
	$(UV) run --frozen ruff format --check src tests bench migrations .ci/fresh-machine-smoke

format: install  ## apply ruff formatting and safe fixes
	$(UV) run --frozen ruff check --fix src tests bench migrations
	$(UV) run --frozen ruff format src tests bench migrations

typecheck: install  ## mypy in strict mode over src, tests and bench
	$(UV) run --frozen mypy

schemas: install  ## rewrite the device protocol's JSON Schemas (protocol/v1) from its models
	$(UV) run --frozen python -m keyautomat.adapters.device_schemas

check: lint typecheck test  ## everything CI runs

BENCH_ARGS ?=
bench: install  ## every performance target, measured: one table (docs/performance.md; BENCH_ARGS=--runs 1)
	$(UV) run --frozen python bench/table.py $(BENCH_ARGS)

bench-devices: install  ## sendPincode latency and a 1,000-automat fleet over Mosquitto
	$(UV) run --frozen python bench/device_latency.py

clean:  ## remove local databases and caches
	rm -rf .pytest_cache .mypy_cache .ruff_cache keyautomat.db* var/ demo-automats/
