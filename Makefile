# Two commands for a fresh machine with only Python and make:
#   make demo   runs the demo (the local server is started when AIMLAPI_API_KEY is unset)
#   make test   runs ruff, mypy, the whole test suite (on two pytest-xdist workers) and the strict docs build
# CI (.ci/run) runs make test, make release-check, make test-pythons and make test-frameworks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test lint typecheck pytest docs-build docs docs-shots release-check test-pythons bench bench-cli bench-ray bench-infinity soak clean

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
	$(BIN)/ruff check src tests benchmarks scripts noxfile.py
	$(BIN)/ruff format --check src tests benchmarks scripts noxfile.py

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers (pytest-xdist); loadgroup runs the tests of one xdist_group mark on one worker.
pytest: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# Broken links, missing pages and unresolvable API references fail the build (strict: true in
# mkdocs.yml). The site goes to site/ (git-ignored). No --quiet: it hides the warnings that
# strict mode counts. NO_MKDOCS_2_WARNING silences mkdocs-material's banner about MkDocs 2.
docs-build: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test: lint typecheck pytest docs-build

# The manual on http://127.0.0.1:8001, rebuilt on every change. Not 8000: that is where the
# README starts the local server (aiml-bge serve --port 8000). DOCS_ADDR=127.0.0.1:9000 moves it.
DOCS_ADDR ?= 127.0.0.1:8001
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr $(DOCS_ADDR)

# Screenshots of the reference pages (both adapters, Ray, the core clients) from a fresh
# build, with headless Chromium, into docs-shots/ (git-ignored). Needs a Chromium on PATH or in
# $(CHROMIUM); on Debian/Ubuntu: apt-get install chromium-headless-shell.
docs-shots: $(STAMP)
	$(BIN)/python scripts/docs_shots.py

# Build, check and install the wheel into a fresh virtual environment; run the demo and the
# README's quick starts against it.
release-check: $(STAMP)
	$(BIN)/python scripts/release_check.py

# The unit and core tests on CPython 3.10 to 3.13 (see noxfile.py).
test-pythons: $(STAMP)
	$(BIN)/nox --session core_tests

# The adapters' tests on the lowest and the newest allowed langchain-core and llama-index-core
# (the ranges in pyproject.toml; see noxfile.py).
test-frameworks: $(STAMP)
	$(BIN)/nox --session frameworks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_throughput.py
	$(BIN)/python benchmarks/bench_client_cpu.py
	$(BIN)/python benchmarks/bench_cli.py --rerun 20000 --latency 0.2

bench-cli: $(STAMP)
	$(BIN)/python benchmarks/bench_cli.py

bench-ray: $(STAMP)
	$(BIN)/python benchmarks/bench_ray.py

# The default client against real infinity-emb on this machine's CPU, against hand-tuned ones
# (its venv is the one test-infinity builds).
bench-infinity: $(STAMP)
	@test -f $(INFINITY_VENV)/.installed || SETUP_OPTIONAL=0 $(MAKE) test-infinity
	$(BIN)/python benchmarks/bench_infinity.py

soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --texts 20000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .nox site dist build

# infinity-emb 0.0.78 (torch's CPU build, all-MiniLM-L6-v2) in a venv of its own under .venv,
# started on 127.0.0.1 for tests/realservers/test_infinity_live.py, then stopped.
INFINITY_VENV ?= $(VENV)/infinity
.PHONY: test-infinity
test-infinity: $(STAMP)
	INFINITY_VENV=$(INFINITY_VENV) TEST_PYTHON=$(BIN)/python PYTHON=$(PYTHON) scripts/test_infinity.sh
