# Butlers OAuth. The two commands: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install run test bench fake-google clean

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

## Serve on http://127.0.0.1:8200 with a Celery worker and beat (embedded defaults without DATABASE_URL/REDIS_URL).
run: install
	@bash scripts/run.sh

## The whole suite against real PostgreSQL (TEST_DATABASE_URL) and Redis (TEST_REDIS_URL).
test: install
	@$(BIN)/python tests/check_services.py
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Benchmarks against the project's fake Google; prints figures.
bench: install
	@$(BIN)/python tests/check_services.py
	$(BIN)/python -m tests.bench

## A local fake Google on 127.0.0.1:8300 for trying the consent flow without Google.
fake-google: install
	$(BIN)/python -m tests.fake_google --port 8300

clean:
	rm -rf $(VENV) var staticfiles
