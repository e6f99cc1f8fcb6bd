# Shinsa — the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup system-deps demo test unit integration lint format bench chaos model-quality \
	stack-up stack-down \
	clean monitoring

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## Debian packages the local stack needs (Java and Maven for Kafka, Redis; Prometheus and
## Alertmanager with promtool/amtool for monitoring and its tests); installs as root. Debian's
## packages may start their own services (ports 9090/9093): the tests use free ports regardless.
system-deps:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
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

## Benchmarks (numbers, not tests): the pipeline vs a Faust forwarder and plain aiokafka and
## confluent-kafka passthroughs, then its latency at 200/s, 1,000/s and 80 % of capacity;
## identity resolutions per second; identity resolution quality (P/R/F1); model speed.
bench: setup
	$(BIN)/shinsa stack up
	$(BIN)/python -m tests.bench.bench_pipeline
	$(BIN)/python -m tests.bench.bench_identity
	$(BIN)/python -m tests.bench.eval_identity
	$(BIN)/python -m tests.bench.bench_model
	$(BIN)/python -m tests.bench.bench_segments
	$(BIN)/python -m tests.bench.bench_draw

## Model quality (numbers, not a test; ~15 min): a card export of the public benchmark's design
## (1.8M transactions, 6 months), the online model with a 7-day label delay beside batch models.
model-quality: setup
	mkdir -p .shinsa/bench
	$(BIN)/python -m tests.bench.card_data .shinsa/bench/card.csv
	$(BIN)/shinsa eval .shinsa/bench/card.csv --label TX_FRAUD --time TX_DATETIME \
		--amount TX_AMOUNT --entity CUSTOMER --entity TERMINAL --ignore TX_ID \
		--pattern TX_SCENARIO --delay 7d > .shinsa/bench/card-eval.json

## Chaos (numbers, not a test): 50,000 orders at 1,000/s while the worker is SIGKILLed 5 times,
## Redis and the broker restarted once; counts missing, duplicated and changed decisions.
chaos: setup
	$(BIN)/shinsa stack up
	$(BIN)/python -m tests.bench.chaos

## Regenerate the Grafana dashboards from monitoring/dashboards.py and check the Prometheus
## configuration and rules (what tests/unit/test_monitoring_config.py checks too).
monitoring: setup
	$(BIN)/python -m monitoring.dashboards
	promtool check config monitoring/prometheus/prometheus.yml
	promtool check rules monitoring/prometheus/rules/*.yml

stack-up: setup
	$(BIN)/shinsa stack up

stack-down: $(STAMP)
	$(BIN)/shinsa stack down

clean:
	-$(BIN)/shinsa stack down
	rm -rf .shinsa $(VENV)
