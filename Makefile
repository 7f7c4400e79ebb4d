# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/reidc: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0        # the CPU build; any other spec pulls CUDA wheels
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/reidc

setup: $(BIN)/reidc

demo: setup
	$(BIN)/reidc demo

test: setup
	$(BIN)/pytest -q

bench: setup
	$(BIN)/pytest -q -m bench --benchmark-enable -p no:cacheprovider tests/test_bench.py

clean:
	rm -rf $(VENV) build demo .pytest_cache
