# lmlab: two commands on a fresh machine (README):
#   make quickstart   set up .venv (torch==2.13.0 CPU first) and run `lmlab quickstart`
#   make test         set up .venv with the test extras (+ Debian Chromium for the browser test) and run the tests
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Real datasets are read through the local-mirror variable; point it at your mirror.
export LMLAB_DATA_DIR ?= $(abspath $(CURDIR)/../shared/data)

.PHONY: quickstart test setup setup-dev browser lint clean reliability

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned: the CPU build on local disk; an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.core: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core pyproject.toml
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $@

setup: $(VENV)/.core
setup-dev: $(VENV)/.dev browser

# Headless Chromium from Debian for the web UI test (no browser download at test time).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

quickstart: setup
	$(BIN)/lmlab quickstart

test: setup-dev
	$(BIN)/python -m pytest

# docs/reliability.md's figures: bad-input corpus, kill harness (KILLS kills), 64-client load test
KILLS ?= 20
reliability: setup-dev
	$(BIN)/python tests/reliability/figures.py kills=$(KILLS)

lint: setup-dev
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) runs test-artifacts .pytest_cache
