# `make test` and `make bench` each build .venv from nothing, install what they need, run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# This machine serves these two releases from local disk; pyproject.toml declares ranges.
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH) -e '.[dev]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH) -e '.[bench]'
	touch $@

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check mixgen tests benchmarks

test: lint
	$(BIN)/python -m pytest -q -n 2 --durations=10

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/clip_retrieval.py --jobs 2 --out bench_out

clean:
	rm -rf $(VENV)
