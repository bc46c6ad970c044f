# Rebal: `make run` and `make test` set everything up on a fresh machine and go.
SHELL := /bin/bash
PYTHON ?= python3
# uv: the one on PATH when there is one, else a private copy in .tools/uv (see below).
TOOLS := .tools
UV ?= $(or $(shell command -v uv 2>/dev/null),$(TOOLS)/uv/bin/uv)
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := python3.11
export UV_LINK_MODE := copy
VENV := .venv
REBAL := $(VENV)/bin/rebal
LOCKED := uv.lock pyproject.toml $(wildcard apps/*/pyproject.toml) $(wildcard libs/*/pyproject.toml) \
	$(wildcard services/*/pyproject.toml)

.PHONY: help setup sysdeps run plan backtest-table test lint typecheck bench clean

help:
	@echo "make run    - set up and run the whole system (NATS, Postgres, services, demo bot); Ctrl-C stops"
	@echo "make plan   - set up and plan the bundled examples with the rebal CLI"
	@echo "make test   - set up and run lint, type checks and the tests"
	@echo "make bench  - run the benchmarks in bench/ (prints figures)"
	@echo "make backtest-table - compare six rebalancing policies on the bundled history (README's table)"

# uv, when it is not on PATH, goes into a venv of its own under the git-ignored .tools/: a system Python
# marked "externally managed" (PEP 668: Debian 12, Ubuntu 24.04) refuses `pip install` and is never
# touched. Without ensurepip (Debian's python3-venv not installed) the venv is made bare and the
# system's pip installs into it (`pip --python`), which PEP 668 allows.
$(TOOLS)/uv/bin/uv:
	@echo "uv is not on PATH: installing it into $(TOOLS)/uv"
	@rm -rf $(TOOLS)/uv
	@if $(PYTHON) -m venv $(TOOLS)/uv >/dev/null 2>&1; then \
		$(TOOLS)/uv/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"; \
	else \
		rm -rf $(TOOLS)/uv && $(PYTHON) -m venv --without-pip $(TOOLS)/uv && \
		$(PYTHON) -m pip --python $(TOOLS)/uv/bin/python install --quiet --disable-pip-version-check "uv>=0.5"; \
	fi || { echo "could not install uv into $(TOOLS)/uv: install uv (https://docs.astral.sh/uv/) or python3-venv" >&2; exit 1; }

# The venv is synced from the committed lock. `make run` needs only the runtime dependencies; the checks
# and tests add the development group (pytest, mypy, Playwright, ...). Each has its stamp; the runtime
# sync is inexact (it leaves the development packages alone) and the runtime set is a subset of the
# development one, so switching between the two never removes what the other installed.
$(VENV)/.synced-runtime: $(LOCKED) | $(UV)
	$(UV) sync --frozen --all-packages --no-dev --inexact
	@touch $@

$(VENV)/.synced-dev: $(LOCKED) | $(UV)
	$(UV) sync --frozen --all-packages --group dev
	@touch $@

setup: $(VENV)/.synced-dev

# Debian packages the tests drive for real: Chromium (the dashboard's browser test), Prometheus
# (promtool and a real server evaluating every dashboard and alert expression) and Alertmanager (Rebal's
# alerts routed to a webhook). A no-op once present.
SYSDEPS := chromium prometheus prometheus-alertmanager
sysdeps:
	@if ! command -v chromium >/dev/null || ! command -v promtool >/dev/null \
		|| ! command -v prometheus-alertmanager >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			--no-install-recommends $(SYSDEPS) >/dev/null; \
	fi

# NATS, Postgres, the five services and the demo bot, state in var/; Ctrl-C stops them all.
run: $(VENV)/.synced-runtime
	$(VENV)/bin/python -m rebal_devstack run

plan: $(VENV)/.synced-runtime
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

# README's policy table: six policies replayed over the bundled generated history with monthly deposits
# (docs/backtest.md, "Which policy wins").
BACKTEST := examples/backtest
backtest-table: $(VENV)/.synced-runtime
	$(REBAL) backtest --prices $(BACKTEST)/history.csv --target $(BACKTEST)/target.json --initial 100000 \
		--markets $(BACKTEST)/markets.json --flows $(BACKTEST)/flows.csv \
		$(foreach p,monthly quarterly band-5pt band-20pct band-cooldown band-buy-only,--policy $(BACKTEST)/$(p).toml)

# The optional `bench` group adds PyPortfolioOpt and skfolio for bench/optimizer.py's comparison, bt and
# vectorbt for bench/backtest.py's. It lives
# in its own environment: skfolio pulls in `cvxpy-base`, which shares the `cvxpy` package's files, so
# syncing it in and out of .venv would leave .venv without cvxpy.
BENCH_VENV := .venv-bench
bench: | $(UV)
	UV_PROJECT_ENVIRONMENT=$(BENCH_VENV) $(UV) sync --frozen --all-packages --group dev --group bench
	$(BENCH_VENV)/bin/python bench/plan.py
	$(BENCH_VENV)/bin/python bench/cli.py
	$(BENCH_VENV)/bin/python bench/cli_start.py
	$(BENCH_VENV)/bin/python bench/optimizer.py
	$(BENCH_VENV)/bin/python bench/pipeline.py
	$(BENCH_VENV)/bin/python bench/executor.py
	$(BENCH_VENV)/bin/python bench/funds.py
	$(BENCH_VENV)/bin/python bench/history.py
	$(BENCH_VENV)/bin/python bench/api_load.py
	$(BENCH_VENV)/bin/python bench/strategy_stats.py
	$(BENCH_VENV)/bin/python bench/policy.py
	$(BENCH_VENV)/bin/python bench/autopilot.py
	$(BENCH_VENV)/bin/python bench/where.py
	$(BENCH_VENV)/bin/python bench/backtest.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
