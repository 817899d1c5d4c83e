# The two commands of the README: `make demo` and `make test`. Both do all set-up on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install jars test test-fast lint demo broker-stop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Resolve Apache Kafka's jars through Maven into ~/.cache/hub/kafka/<version> (once).
jars: install
	$(BIN)/hub broker fetch

lint: install
	$(BIN)/ruff check hub connectors tests
	$(BIN)/lint-imports

test: jars
	$(BIN)/ruff check hub connectors tests
	$(BIN)/lint-imports
	$(BIN)/pytest -q --durations=25

test-fast: install
	$(BIN)/pytest -q -m 'not kafka'

# `make demo DEMO_ARGS=--no-serve` stops after the report (CI); `DEMO_ARGS="--size 40"` is quicker.
demo: jars
	$(BIN)/hub demo $(DEMO_ARGS)

broker-stop: install
	$(BIN)/hub broker stop

clean:
	rm -rf $(VENV) build *.egg-info
