# Butlers OAuth. The two commands: `make run` and `make test`; then `make demo`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# An existing .venv (a directory or a symlink to one) is used as it is.
VENV ?= .venv
BIN := $(VENV)/bin
# Runtime requirements for run/demo (what the image installs); the tests add requirements-test.txt.
STAMP := $(VENV)/.installed-run-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
TEST_STAMP := $(VENV)/.installed-test-$(shell cat requirements.txt requirements-test.txt | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install install-test run demo test bench fake-google clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-run-* && touch $(STAMP)

$(TEST_STAMP): requirements.txt requirements-test.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-test.txt
	@rm -f $(VENV)/.installed-test-* && touch $(TEST_STAMP)

install: $(STAMP)

install-test: $(TEST_STAMP)

## Serve on http://127.0.0.1:8200 with Celery worker(s) and beat, supervised (BUTLERS_PORT to move it).
## Embedded defaults without DATABASE_URL/REDIS_URL. Ctrl-C stops everything.
run: install
	@bash scripts/run.sh

## The app and a fake Google it is pointed at: connect an account by clicking, no Google project.
demo: install
	@bash scripts/run.sh --demo

## The whole suite against real PostgreSQL (TEST_DATABASE_URL) and Redis (TEST_REDIS_URL).
test: install-test
	@$(BIN)/python tests/check_services.py
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Benchmarks against the project's fake Google; prints figures.
bench: install-test
	@$(BIN)/python tests/check_services.py
	$(BIN)/python -m bench

## The fake Google alone, on BUTLERS_PORT + 100 (8300), printing the exports that point the app at it.
fake-google: install
	$(BIN)/python -m tests.fake_google

clean:
	rm -rf $(VENV) var staticfiles
