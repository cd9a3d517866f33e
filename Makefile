PYTHON ?= python3

.PHONY: install test lint demo base bench

install:
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[dev]"

test:
	$(PYTHON) -m ruff check lslo tests benchmarks
	$(PYTHON) -m pytest tests
