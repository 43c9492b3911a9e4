# Two commands for a newcomer (see README.md):
#   make demo   set everything up, then run the main job on the small built-in default
#   make test   set everything up, then run the test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The stable-audio-tools release whose Oobleck VAE tests/test_import_sat.py runs (test-only).
SAT_VERSION := 0.0.19
# The descript-audio-codec release whose model tests/test_import_dac.py runs (test-only).
DAC_VERSION := 1.0.0
# The encodec release whose EMA codebook tests/test_rvq.py checks the rvq bottleneck against (test-only).
ENCODEC_VERSION := 0.1.1

.PHONY: demo test bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps "stable-audio-tools==$(SAT_VERSION)"
	$(PY) -m pip install --quiet --no-deps "descript-audio-codec==$(DAC_VERSION)"
	$(PY) -m pip install --quiet --no-deps "encodec==$(ENCODEC_VERSION)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lyra demo

# Two worker processes (pytest-xdist): CI has two cores, and most tests use one thread each.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS)

bench: $(STAMP)
	$(PY) -m pytest benchmarks -q

clean:
	rm -rf $(VENV) demo-out .pytest_cache
