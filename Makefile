# chatbranch: `make run` serves the demo on an embedded PostgreSQL; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JS_STAMP := tests/js/node_modules/.installed-stamp

.PHONY: install run test lint bench soak clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,local]'
	touch $(STAMP)

install: $(STAMP)

# The AI SDK's own stream parser, used by one test to read our stream as a React app would.
$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd tests/js && npm ci --silent --no-audit --no-fund && touch node_modules/.installed-stamp; \
	else echo "npm not found: the AI SDK stream test will be skipped"; fi

run: install
	$(BIN)/chatbranch run

# Debian's Chromium drives the web console's end-to-end tests (never a browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "chromium not installed: the browser tests will be skipped"

test: install $(JS_STAMP) browser
	$(BIN)/python -m pytest -rs

lint: install
	$(BIN)/ruff check app handlers tools tests bench soak migrations
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

# Mixed load with fault injection for SOAK_SECONDS (default 600), then every invariant checked.
soak: install
	$(BIN)/python -m soak

clean:
	rm -rf $(VENV) .chatbranch .pytest_cache .mypy_cache .ruff_cache
