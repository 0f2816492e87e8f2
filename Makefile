# Fresh machine to results in one command: `make run` / `make test`.
# The venv is created on first use; installs re-run only when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.confprune-installed
ARGS ?= experiment=mnist
PYTEST_ARGS ?=

.PHONY: install run test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: the CPU build is the one this machine's index serves; an
# unpinned `torch` would pull several GB of CUDA wheels.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
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

clean:
	rm -rf $(VENV) .pytest_cache
