# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARM_PACKAGES := gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user

.PHONY: setup setup-arm demo test bench layers gpu-check clean

$(BIN)/reidc: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0        # the CPU build; any other spec pulls CUDA wheels
	$(BIN)/pip install -q -e '.[compile,dev]'
	$(BIN)/pip install -q --no-deps fastreid==1.4.0 torchreid==0.2.5   # tests' reference model code (pins name torch 1.13)
	touch $(BIN)/reidc

setup: $(BIN)/reidc

# The arm tier: the aarch64 GNU toolchain and qemu-user (Debian packages), TVM's aarch64 runtime
# (PyPI wheels) and reidc's C++ runner built against it, and an arm64 Python with TVM for an
# emulated RPC device (both cached in ~/.cache/reidc).
setup-arm: setup
	@command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-g++ >/dev/null || \
	  $(SUDO) apt-get install -y -qq $(ARM_PACKAGES) >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(ARM_PACKAGES) >/dev/null; }
	$(BIN)/reidc runner -o build/arm-runner
	$(BIN)/reidc qemu-server --setup-only      # an emulated ARM device for the RPC tuning tests

demo: setup
	$(BIN)/reidc demo

test: setup-arm
	$(BIN)/pytest -q

# Imports go downward only, no cycles (README "Layers"; the contracts are in pyproject.toml).
layers: setup
	$(BIN)/lint-imports --no-cache

bench: setup
	$(BIN)/pytest -q -m bench --benchmark-enable -p no:cacheprovider tests/test_bench.py

# On a machine with an NVIDIA GPU (nothing installed by make: see tests/gpu_check.sh and README).
gpu-check:
	bash tests/gpu_check.sh

clean:
	rm -rf $(VENV) build demo .pytest_cache
