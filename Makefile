# Quarry's two set-up commands: `make demo` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: demo test lint typecheck unit coverage install browser clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,samples,mlp,ray,stream,text]'
	touch $(STAMP)

install: $(STAMP)

# The dashboard's browser tests drive Debian's chromium through Playwright (which is never
# let download a browser of its own): installed here when the machine lacks it.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
$(CHROMIUM):
	@echo "installing Debian's chromium for the browser tests"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium

browser: $(CHROMIUM)

# The main job: a market with a planted alpha (made once, so that a second run finds every
# step in the cache), then the Alpha158 + LightGBM workflow: features, training tracked in
# MLflow under runs/home, signal analysis, a TopK-Dropout backtest with its report, and the
# promotion gate. Prints the results table and the report's path.
demo: export QUARRY_HOME ?= $(CURDIR)/runs/home
demo: $(STAMP)
	test -d $(DEMO_DIR)/store/bars || $(BIN)/quarry data generate --store $(DEMO_DIR)/store \
		--instruments 300 --days 1500 --seed 7 --alpha-ic 0.05
	$(BIN)/quarry run examples/workflows/alpha158_lightgbm.yaml --store $(DEMO_DIR)/store \
		--out $(DEMO_DIR)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Test files spread over TEST_WORKERS processes (a file's tests stay together, so that its
# module fixtures are made once); TEST_WORKERS=0 runs them all in this process. A worker that
# dies is not replaced: the run ends naming the test it died in (replacing it hangs
# pytest-xdist 3.8's file-by-file scheduling for good). Files go out in collection order
# (tests/conftest.py puts the README's walk-through, minutes long, first), not by test count.
# Two, not three: with three (tried 2026-12-03) the README's walk-through, the longest test,
# ran 1,134 s against 948 s with two, the whole run gained only 3 min, and timing-bound tests
# (the Ray adoption, the backup schedule) failed under the load.
TEST_WORKERS ?= 2

# Two workers on two cores: an OpenMP thread (LightGBM's) that spins while it waits for work
# takes the core the other worker needs; sleeping instead made two trainings side by side 25%
# faster here (27 s against 34 s) and one alone no slower.
PYTEST := OMP_WAIT_POLICY=PASSIVE QUARRY_CHROMIUM=$(CHROMIUM) QUARRY_REQUIRE_BROWSER=1 \
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile \
	--no-loadscope-reorder --max-worker-restart 0

unit: $(STAMP) $(CHROMIUM)
	$(PYTEST) --durations=25

# The suite under coverage, held to the floor in pyproject.toml. Not part of `make test`: from
# a fresh clone, where numba compiles every kernel and its compiler (Python) runs under the
# tracer, the suite took 17 min against 7 here, past the 20-minute budget on a slow day; with
# numba's cache warm it takes about as long as `make test` (7 min 25 s, 89% on 2026-12-03).
coverage: $(STAMP) $(CHROMIUM)
	$(PYTEST) --cov --cov-report=term

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/bench_store.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
