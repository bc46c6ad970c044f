# Rebal: `make run` and `make test` set everything up on a fresh machine and go.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := python3.11
export UV_LINK_MODE := copy
VENV := .venv
REBAL := $(VENV)/bin/rebal

.PHONY: help setup sysdeps run plan test lint typecheck bench clean

help:
	@echo "make run    - set up and run the whole system (NATS, Postgres, services, demo bot); Ctrl-C stops"
	@echo "make plan   - set up and plan the bundled examples with the rebal CLI"
	@echo "make test   - set up and run lint, type checks and the tests"
	@echo "make bench  - run the benchmarks in bench/ (prints figures)"

# uv comes from PyPI into the user's Python when missing; the venv is synced from the committed lock.
$(VENV)/.synced: uv.lock pyproject.toml $(wildcard apps/*/pyproject.toml) $(wildcard libs/*/pyproject.toml) $(wildcard services/*/pyproject.toml)
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check "uv>=0.5"
	$(UV) sync --frozen --all-packages --group dev
	@touch $@

setup: $(VENV)/.synced

# Debian packages the tests drive for real: Chromium (the dashboard's browser test) and Prometheus
# (promtool and a real server evaluating every dashboard and alert expression). A no-op once present.
SYSDEPS := chromium prometheus
sysdeps:
	@if ! command -v chromium >/dev/null || ! command -v promtool >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			--no-install-recommends $(SYSDEPS) >/dev/null; \
	fi

# NATS, Postgres, the five services and the demo bot, state in var/; Ctrl-C stops them all.
run: setup
	$(VENV)/bin/python -m rebal_devstack run

plan: setup
	$(REBAL) plan --real examples/real.json --target examples/target.json \
		--prices examples/prices.json --markets examples/markets.json

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check apps libs services tests bench
	$(VENV)/bin/lint-imports

typecheck: setup
	$(VENV)/bin/mypy

test: sysdeps lint typecheck
	$(VENV)/bin/pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# The optional `bench` group adds PyPortfolioOpt and skfolio for bench/optimizer.py's comparison. It lives
# in its own environment: skfolio pulls in `cvxpy-base`, which shares the `cvxpy` package's files, so
# syncing it in and out of .venv would leave .venv without cvxpy.
BENCH_VENV := .venv-bench
bench:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check "uv>=0.5"
	UV_PROJECT_ENVIRONMENT=$(BENCH_VENV) $(UV) sync --frozen --all-packages --group dev --group bench
	$(BENCH_VENV)/bin/python bench/plan.py
	$(BENCH_VENV)/bin/python bench/optimizer.py
	$(BENCH_VENV)/bin/python bench/pipeline.py
	$(BENCH_VENV)/bin/python bench/executor.py
	$(BENCH_VENV)/bin/python bench/funds.py
	$(BENCH_VENV)/bin/python bench/history.py
	$(BENCH_VENV)/bin/python bench/strategy_stats.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
