# Two commands for a fresh machine with only Python and make:
#   make demo   runs the demo (the local server is started when AIMLAPI_API_KEY is unset)
#   make test   runs ruff, mypy and the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test lint typecheck pytest bench bench-cli soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the project's metadata changes.
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/aiml-bge demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_throughput.py

bench-cli: $(STAMP)
	$(BIN)/python benchmarks/bench_cli.py

soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --texts 20000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# infinity-emb 0.0.78 (torch's CPU build, all-MiniLM-L6-v2) in a venv of its own under .venv,
# started on 127.0.0.1 for tests/realservers/test_infinity_live.py, then stopped.
INFINITY_VENV ?= $(VENV)/infinity
.PHONY: test-infinity
test-infinity: $(STAMP)
	INFINITY_VENV=$(INFINITY_VENV) TEST_PYTHON=$(BIN)/python PYTHON=$(PYTHON) scripts/test_infinity.sh
