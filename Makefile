# copymark: two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint test-slow test-all bench install chromium clean help

help:
	@echo "make demo       create .venv, install copymark, run 'copymark demo' on built-in data"
	@echo "make test       install if needed, lint (ruff, import-linter), then run the default test tier (not slow, not gpu)"
	@echo "make lint       ruff check, ruff format --check and the import-linter layer contracts"
	@echo "make test-slow  the slow tier (real pretrained victims, full-scale runs)"
	@echo "make bench      run the benchmark scripts in benchmarks/ (JSON on stdout)"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-installs only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip 2>/dev/null || true
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Browser tests use Debian's chromium; install it when missing (root on CI and dev machines).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium for the browser tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	    echo "warning: could not install chromium; browser tests will be skipped"; }

demo: $(STAMP)
	$(VENV)/bin/copymark demo

# Lint (ruff check + format) and the layer contracts (import-linter): a wrong arrow fails the test run.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports

test: lint chromium
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP) chromium
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: $(STAMP) chromium
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

bench: $(STAMP)
	@set -e; for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f; done

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
