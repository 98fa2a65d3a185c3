# `make test` and `make bench` each build .venv from nothing, install what they need, run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# This machine serves these two releases from local disk; pyproject.toml declares ranges.
TORCH  := torch==2.14.1 torchvision==0.29.1

# open_clip_train needs webdataset<=0.2.86 (in .venv); mixgen.wds is also tested on the
# 1.x line, in a venv that adds only webdataset 1.x on top of .venv's packages.
WDS1   := .venv-wds1

.PHONY: test test-fast bench lint clean

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
	$(BIN)/ruff check mixgen mixgen_bench tests benchmarks

$(WDS1)/.installed: $(VENV)/.installed-dev
	rm -rf $(WDS1) && $(PYTHON) -m venv $(WDS1)
	echo "import site; site.addsitedir('$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
		> "$$($(WDS1)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/base-venv.pth"
	$(WDS1)/bin/python -m pip install -q --no-deps 'webdataset>=1,<2'
	touch $@

test: lint $(WDS1)/.installed
	$(BIN)/python -m pytest -q -n 2 --durations=10
	$(WDS1)/bin/python -m pytest -q tests/test_wds.py -p no:cacheprovider

# the fast tier: everything but training, the notebook, torchrun and spawned ranks
test-fast: lint
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

# The harness's main use: fine-tune its pretrained base (cached after the first run) on 128
# digit scenes, MixGen's default against none, 5 seeds, each arm's budget chosen on
# validation data (a ladder from 96 to at most 768 epochs).
BENCH := --data digits --pretrain-data shapes --sizes 128 --lr 5e-4 --epochs 96 \
	--max-epochs 768 --eval-points 16 --image-size 32 --seeds 0,1,2,3,4

bench: $(VENV)/.installed-bench
	$(BIN)/mixgen-clip-retrieval $(BENCH) --jobs 2 --out bench_out

clean:
	rm -rf $(VENV) $(WDS1)
