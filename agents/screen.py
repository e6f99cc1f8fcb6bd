"""orders → validate → enrich → decide → decisions (bad input → dlq).

All stages share the order's key, so they are function calls inside one agent (no Kafka hop).
`screen_order` is the pure composition; `screen_orders` is the agent: it takes batches, sends
one decision per valid order and one dead letter per invalid one, and awaits every send of a
batch before the batch is acknowledged, so a crash never commits an unsent result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

from agents import reasons
from agents.decide import Policy, decide_order
from agents.enrich import enrich_order
from agents.merchants import merchant_by_id, merchants_loaded
from agents.validate import Rejection, check_order, decode_event
from streams.app import app, registry, settings
from streams.codec import SchemaRegistry
from streams.delivery import Outgoing, send_all
from streams.dlq import dead_letter
from streams.metrics import DECIDED_AMOUNT, DECISIONS, EVENTS_IN, LATENCY
from streams.records import Merchant
from streams.topics import decisions_topic, dlq_topic, orders_topic

log = logging.getLogger(__name__)

DEFAULT_POLICY = Policy()


def screen_order(
    raw: bytes | None,
    *,
    ingest_ms: float,
    now: datetime,
    merchants: Mapping[str, Merchant],
    policy: Policy,
    registry: SchemaRegistry,
    max_bytes: int,
) -> dict[str, Any] | Rejection:
    """One order message → a Decision datum, or the Rejection that sends it to the DLQ."""
    order = decode_event(registry, "Order", raw, max_bytes)
    if isinstance(order, Rejection):
        return order
    rejection = check_order(order, now)
    if rejection is not None:
        return rejection
    enriched = enrich_order(order, merchants)
    verdict = decide_order(enriched, policy)
    now_ms = now.timestamp() * 1000
    return {
        "order_id": order.order_id,
        "merchant_id": order.merchant_id,
        "identity_id": None,
        "decision": verdict.decision,
        "score": verdict.score,
        "reasons": list(verdict.reasons),
        "policy_version": policy.version,
        "model_version": None,
        "amount": order.amount,
        "merchant_category": enriched.merchant_category,
        "event_time": order.event_time,
        "decided_at": now,
        "latency_event_ms": now_ms - order.event_time.timestamp() * 1000,
        "latency_ingest_ms": now_ms - ingest_ms,
    }


@cache
def decision_series(decision: str, category: str) -> tuple[Any, Any]:
    """Bound label children, looked up once per (decision, category): `labels()` costs µs."""
    return DECISIONS.labels(decision, category), DECIDED_AMOUNT.labels(decision, category)


LATENCY_EVENT = LATENCY.labels("event")
LATENCY_INGEST = LATENCY.labels("ingest")


def record_decision_metrics(decision: Mapping[str, Any]) -> None:
    count, amount = decision_series(decision["decision"], decision["merchant_category"])
    count.inc()
    amount.inc(decision["amount"])
    LATENCY_EVENT.observe(max(decision["latency_event_ms"], 0.0) / 1000)
    LATENCY_INGEST.observe(max(decision["latency_ingest_ms"], 0.0) / 1000)


@app.agent(orders_topic)
async def screen_orders(stream: Any) -> None:
    await merchants_loaded.wait()
    policy = DEFAULT_POLICY
    decisions = decisions_topic.get_topic_name()
    dead_letters = dlq_topic.get_topic_name()
    async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
        outgoing: list[Outgoing] = []
        now = datetime.now(UTC)
        for event in events:
            msg = event.message
            EVENTS_IN.labels("orders").inc()
            try:
                result = screen_order(
                    msg.value,
                    ingest_ms=msg.timestamp * 1000,
                    now=now,
                    merchants=merchant_by_id,
                    policy=policy,
                    registry=registry,
                    max_bytes=settings.max_event_bytes,
                )
            except Exception as exc:  # a bug must not lose the rest of the batch
                log.exception("screening failed at %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                result = Rejection(reasons.PROCESSING_ERROR, type(exc).__name__)
            if isinstance(result, Rejection):
                outgoing.append(
                    dead_letter(dead_letters, msg, "orders", result.reason, result.detail)
                )
                continue
            value = registry.encode("Decision", result)
            outgoing.append(Outgoing(decisions, result["order_id"].encode(), value))
            record_decision_metrics(result)
        await send_all(app.producer, outgoing)
