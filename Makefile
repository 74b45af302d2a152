# Every target bootstraps uv with pip when it is missing, then lets uv install
# exactly what uv.lock says.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
PYTEST_ARGS ?=
FUZZ_EXAMPLES ?= 300
FUZZ_PAIRS ?= 300
FUZZ_SEED ?= 11

.PHONY: help install run test fuzz lint format typecheck schemas check bench bench-devices clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --user --quiet uv || python3 -m pip install --quiet uv

install: | $(UV)  ## install the project and its dev tools into .venv (and openapi-typescript, with npm)
	$(UV) sync --frozen --quiet
	@# The OpenAPI test generates TypeScript with the vendor's generator (tests/openapi_ts);
	@# without npm it skips, or fails under KEYAUTOMAT_REQUIRE_SERVICES=1.
	@if command -v npm >/dev/null; then npm ci --prefix tests/openapi_ts --no-audit --no-fund --silent; fi

run: install  ## migrate a SQLite database and serve the API and console with demo data on :8080
	@echo "Starting keyautomat on http://127.0.0.1:8080 (Ctrl+C stops it)."
	@echo "Open http://127.0.0.1:8080/console/ and sign in with consoleUser/consolePassword below."
	@echo "In another terminal, call it with:  uv run keyautomat call GET /automats"
	@$(UV) run --frozen keyautomat serve --demo --host 127.0.0.1 --port 8080

test: install  ## run every test (SQLite always; PostgreSQL/MQTT when reachable)
	$(UV) run --frozen pytest $(PYTEST_ARGS)

fuzz: install  ## the long fuzz run: more cases, random pairs of mutations, SQLite and PostgreSQL
	KEYAUTOMAT_FUZZ_ENGINES=sqlite,postgresql KEYAUTOMAT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	KEYAUTOMAT_FUZZ_MUTATIONS=0 KEYAUTOMAT_FUZZ_PARAMS=0 KEYAUTOMAT_FUZZ_PAIRS=$(FUZZ_PAIRS) KEYAUTOMAT_FUZZ_SEED=$(FUZZ_SEED) \
	$(UV) run --frozen pytest tests/fuzz -s $(PYTEST_ARGS)

lint: install  ## ruff lint and format check
	$(UV) run --frozen ruff check src tests bench migrations
	$(UV) run --frozen ruff format --check src tests bench migrations

format: install  ## apply ruff formatting and safe fixes
	$(UV) run --frozen ruff check --fix src tests bench migrations
	$(UV) run --frozen ruff format src tests bench migrations

typecheck: install  ## mypy in strict mode over src, tests and bench
	$(UV) run --frozen mypy

schemas: install  ## rewrite the device protocol's JSON Schemas (protocol/v1) from its models
	$(UV) run --frozen python -m keyautomat.adapters.device_schemas

check: lint typecheck test  ## everything CI runs

bench: install  ## signed GET throughput versus an unauthenticated route
	$(UV) run --frozen python bench/signed_get.py

bench-devices: install  ## sendPincode latency and a 1,000-automat fleet over Mosquitto
	$(UV) run --frozen python bench/device_latency.py

clean:  ## remove local databases and caches
	rm -rf .pytest_cache .mypy_cache .ruff_cache keyautomat.db* var/ demo-automats/
