# Sentinel: `make demo` runs the daemon end to end; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo demo-cluster test lint check-migrations clean help

help:
	@echo "make demo   - private broker + simulated pump fleet + daemon on SQLite; Ctrl-C stops"
	@echo "make demo-cluster - three daemons share a fleet over NATS + PostgreSQL; one is killed"
	@echo "make test   - install what is needed and run the whole test suite"
	@echo "make lint   - ruff, and strict mypy on the package, simulators, benchmarks and tests"
	@echo "make clean  - remove the venv and demo state"

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is installed only when the venv has none: a bare requirement pulls a multi-GB
# CUDA build, and a Jetson's NVIDIA build must never be replaced.
$(STAMP): pyproject.toml | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,onnx]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m simulators.demo

demo-cluster: install
	$(PY) -m simulators.demo_cluster

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check sentinel simulators tests migrations benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) demo-state demo-cluster-state sentinel-state .pytest_cache .mypy_cache .ruff_cache
