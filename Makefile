# Two commands on a fresh clone: `make demo` (set up, then the console on the demo workspace)
# and `make test` (set up, then the whole test suite). Everything installs from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup bytecode demo demo-headless test lint bench torture clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

# An editable install has no bytecode until the first import writes it, and with
# PYTHONDONTWRITEBYTECODE=1 it never does: every start then compiles each module (0.2 s of the
# console's cold start). compileall writes it either way, and only for what changed.
bytecode: setup
	$(BIN)/python -m compileall -q engine ewg_tui

demo: setup bytecode
	$(BIN)/ewg demo

demo-headless: setup
	$(BIN)/ewg demo --headless

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/engine_throughput.py
	$(BIN)/python bench/console_latency.py

torture: setup
	$(BIN)/python bench/torture.py

clean:
	rm -rf $(VENV) demo-workspace .pytest_cache
