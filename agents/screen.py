"""identified-orders (keyed by identity) → enrich → decide → decisions.

Orders arrive here validated and resolved by agents/intake.py. All stages from here share the
identity key, so they are function calls inside one agent. `screen_order` is the pure
composition; `screen_orders` is the agent: it takes batches, sends one decision per order, and
awaits every send of a batch before the batch is acknowledged, so a crash never commits an
unsent result.
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
from agents.intake import read_hop_headers
from agents.merchants import merchant_by_id, merchants_loaded
from agents.validate import Rejection, decode_event
from streams.app import app, registry, settings
from streams.delivery import Outgoing, send_all
from streams.dlq import dead_letter
from streams.metrics import DECIDED_AMOUNT, DECISIONS, LATENCY
from streams.records import Merchant, Order
from streams.topics import decisions_topic, dlq_topic, identified_orders_topic

log = logging.getLogger(__name__)

DEFAULT_POLICY = Policy()


def screen_order(
    order: Order,
    *,
    identity: Mapping[str, Any],
    attributes: Mapping[str, Any],
    ingest_ms: float,
    now: datetime,
    merchants: Mapping[str, Merchant],
    policy: Policy,
) -> dict[str, Any]:
    """One validated, identified order → its Decision datum."""
    enriched = enrich_order(order, merchants, identity, attributes)
    verdict = decide_order(enriched, policy)
    now_ms = now.timestamp() * 1000
    return {
        "order_id": order.order_id,
        "merchant_id": order.merchant_id,
        "identity_id": identity["identity_id"],
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


@app.agent(identified_orders_topic)
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
            try:
                order = decode_event(registry, "Order", msg.value, None)
                if isinstance(order, Rejection):  # intake validated it: only a bug gets here
                    raise ValueError(f"{order.reason}: {order.detail}")
                identity, attributes, ingest_ms = read_hop_headers(msg.headers)
                result = screen_order(
                    order,
                    identity=identity,
                    attributes=attributes,
                    ingest_ms=ingest_ms,
                    now=now,
                    merchants=merchant_by_id,
                    policy=policy,
                )
            except Exception as exc:  # a bug must not lose the rest of the batch
                log.exception("screening failed at %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                outgoing.append(
                    dead_letter(
                        dead_letters,
                        msg,
                        "identified-orders",
                        reasons.PROCESSING_ERROR,
                        type(exc).__name__,
                    )
                )
                continue
            value = registry.encode("Decision", result)
            outgoing.append(Outgoing(decisions, result["order_id"].encode(), value))
            record_decision_metrics(result)
        await send_all(app.producer, outgoing)
