# Two commands: `make demo` (the main job on the built-in default) and `make test` (the test suite).
# Both create .venv if missing and install the CPU build of torch first, then zooprobe itself.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.zooprobe-installed
TORCH_VERSION ?= 2.13.0
# pytest-xdist workers of `make test` (2 on 2 cores: 477 s against 762 s serial, docs/performance.md; 0 runs serially)
TEST_WORKERS ?= 2

.PHONY: demo test lint bench-zoo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/zooprobe demo

test: $(STAMP)
	$(PY) -m ruff check src tests
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n $(TEST_WORKERS)

lint: $(STAMP)
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

bench-zoo: $(STAMP)
	$(VENV)/bin/zooprobe zoo bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
