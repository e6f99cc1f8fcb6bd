# Shinsa — the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup system-deps demo test unit integration lint format bench stack-up stack-down clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## Debian packages the local stack needs (Java and Maven for Kafka, Redis); installs as root.
system-deps:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "please install:$$missing (sudo apt-get install -y$$missing)"; exit 1; fi; \
	fi

setup: system-deps $(STAMP)

## Stack up, a worker, simulated traffic, then decisions and KPIs.
demo: setup
	$(BIN)/shinsa demo

## Lint, unit tests, then end-to-end tests on the real local Kafka and Redis.
test: setup lint
	$(BIN)/shinsa stack up
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: setup
	$(BIN)/shinsa stack up
	$(BIN)/pytest -q tests/integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Benchmarks (numbers, not tests): the pipeline vs a Faust forwarder vs a plain aiokafka
## passthrough; identity resolutions per second; identity resolution quality (P/R/F1).
bench: setup
	$(BIN)/shinsa stack up
	$(BIN)/python -m tests.bench.bench_pipeline
	$(BIN)/python -m tests.bench.bench_identity
	$(BIN)/python -m tests.bench.eval_identity

stack-up: setup
	$(BIN)/shinsa stack up

stack-down: $(STAMP)
	$(BIN)/shinsa stack down

clean:
	-$(BIN)/shinsa stack down
	rm -rf .shinsa $(VENV)
