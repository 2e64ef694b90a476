# The two commands of the README: `make demo` and `make test` (each builds .venv from scratch).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKDIR ?= workdir/demo

.PHONY: venv demo test test-slow bench study lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'

demo: venv
	$(BIN)/python -m experiments.main --config=configs/exact_targets.py --workdir=$(WORKDIR)

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

bench: venv
	$(BIN)/python -m experiments.benchmark

clean:
	rm -rf $(VENV) workdir
