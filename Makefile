# chatbranch: `make run` serves the demo on an embedded PostgreSQL; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/chatbranch run

test: install
	$(BIN)/python -m pytest -rs

lint: install
	$(BIN)/ruff check app handlers tools tests bench migrations
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .chatbranch .pytest_cache .mypy_cache .ruff_cache
