# Quarry's two set-up commands: `make demo` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: demo test lint typecheck unit install clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,samples,mlp]'
	touch $(STAMP)

install: $(STAMP)

# The main job as far as it goes so far: a market with a planted alpha, Alpha158 and its
# label, LightGBM trained on it (tracked in MLflow under runs/home), and a TopK-Dropout
# backtest of its test-period scores with a report.
demo: export QUARRY_HOME ?= $(CURDIR)/runs/home
demo: $(STAMP)
	rm -rf $(DEMO_DIR)/store
	$(BIN)/quarry data generate --store $(DEMO_DIR)/store --instruments 300 --days 1500 --seed 7 --alpha-ic 0.05
	$(BIN)/quarry data summary --store $(DEMO_DIR)/store
	$(BIN)/quarry features compute --store $(DEMO_DIR)/store --set alpha158 \
		--label 'Ref($$close, -2)/Ref($$close, -1) - 1' --out $(DEMO_DIR)/features.parquet
	$(BIN)/quarry train --features $(DEMO_DIR)/features.parquet --model lightgbm \
		--train 2015-01-02:2018-06-29 --valid 2018-07-09:2019-06-28 --test 2019-07-08:2020-09-30 \
		--out $(DEMO_DIR)/lightgbm
	$(BIN)/quarry backtest --store $(DEMO_DIR)/store --signal $(DEMO_DIR)/lightgbm/predictions.parquet \
		--topk 50 --n-drop 5 --out $(DEMO_DIR)/backtest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/bench_store.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
