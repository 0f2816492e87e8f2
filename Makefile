# Fresh machine to results in one command: `make run` / `make test`.
# The venv is created on first use; installs re-run only when pyproject.toml or constraints.txt
# change. Every install is constrained to the tested versions (constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.confprune-installed
ARGS ?= experiment=mnist
PYTEST_ARGS ?=
# Where torch comes from. Empty: pip's configured index (PyPI's Linux torch is the CUDA build;
# this machine's index serves the CPU wheel). CPU-only elsewhere:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PIP_INSTALL := $(PY) -m pip install --quiet -c constraints.txt

.PHONY: install run test lint bench reproduce constraints clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and on its own, so that TORCH_INDEX applies to torch only (its dependencies then
# come, pinned, with the next step from the usual index); then the package in editable mode with
# every extra (pipeline, tracking, segmentation, channel) and the dev tools.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PIP_INSTALL) torch==2.13.0 $(if $(TORCH_INDEX),--no-deps --index-url $(TORCH_INDEX))
	$(PIP_INSTALL) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m confprune.run $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_ltt.py

# Regenerate the published numbers and diff them against the committed ones (exit 0 only when
# every number matches). QUICK=1: the headline runs only (the Quick tour's first row and the
# smoke run; minutes); without: also every table of experiments/results (experiments/all.sh).
QUICK ?=
reproduce: $(STAMP)
	$(PY) experiments/reproduce.py $(if $(QUICK),--quick)

# Re-pin after a deliberate upgrade of the venv: the header comment stays, the pins become the
# venv's (minus confprune itself; torch without its local build tag, e.g. +cpu).
constraints: $(STAMP)
	{ grep '^#' constraints.txt; $(PY) -m pip freeze --all --exclude-editable \
	  | grep -v '^#' | grep -iv '^confprune\|^-e \|^pip==' | sed 's/^torch==\([0-9.]*\)+.*/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache
