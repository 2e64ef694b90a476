# The two commands of the README: `make demo` and `make test` (each builds .venv from scratch).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKDIR ?= workdir/demo

.PHONY: venv system-deps demo test test-slow bench study lint clean

# Debian's Chromium renders the demo page headless (tests screenshot it).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	  chromium fonts-dejavu-core >/dev/null; }

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'

demo: venv
	$(BIN)/python -m experiments.main --config=configs/world_demo.py --workdir=$(WORKDIR)
	@echo "open $(WORKDIR)/index.html"

study: venv
	$(BIN)/python -m experiments.main --config=configs/exact_targets.py --workdir=workdir/study

test: venv system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

bench: venv
	$(BIN)/python -m experiments.benchmark

clean:
	rm -rf $(VENV) workdir
