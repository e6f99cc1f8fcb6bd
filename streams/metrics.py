"""The catalogue of Shinsa's Prometheus metrics (`shinsa_*`), served by every worker.

Labels are bounded: topic names, reason codes, decisions and merchant categories come from
fixed sets; no order, buyer, identity or merchant id is ever a label.
"""

from __future__ import annotations

import socket

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_IN = Counter(
    "shinsa_events_in_total", "Events read from an input topic, valid or not.", ["topic"]
)
DLQ = Counter(
    "shinsa_dlq_total",
    "Events sent to the dead-letter topic, by source and reason.",
    ["topic", "reason"],
)
DECISIONS = Counter(
    "shinsa_decisions_total", "Decisions emitted.", ["decision", "merchant_category"]
)
DECIDED_AMOUNT = Counter(
    "shinsa_decided_amount_yen_total",
    "Order amount (yen) of emitted decisions: GMV by outcome.",
    ["decision", "merchant_category"],
)
LATENCY = Histogram(
    "shinsa_decision_latency_seconds",
    "Decision time minus the order's event time (source=event) or Kafka timestamp (source=ingest).",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MERCHANTS_KNOWN = Gauge("shinsa_merchants_known", "Merchants in this worker's merchant view.")
WORKER_UP = Gauge("shinsa_worker_up", "1 while the worker's agents run.")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_metrics(port: int) -> int:
    """Serve /metrics on `port` (0: a free one, so several workers share a host); returns it."""
    port = port or free_port()
    start_http_server(port, addr="127.0.0.1")
    return port
