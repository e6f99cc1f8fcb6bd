"""identified-orders (keyed by identity) → enrich → features → score → decide → decisions.

Orders arrive here validated and resolved by agents/intake.py. All stages from here share the
identity key, so they are function calls inside one agent, and per-identity state is local:
the identity's recent orders (for velocity features) live in the `velocity` Faust table,
changelog-backed and keyed like the topic, so a restarted or rebalanced worker recovers them.
`screen_order` is the pure composition; `screen_orders` is the agent: it takes batches, writes
each order's feature snapshot (for the learner, agents/learn.py) and sends one decision per
order, and awaits all of it before the batch is acknowledged, so a crash never commits an
unsent result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
from redis import asyncio as aioredis

from agents import reasons
from agents.decide import ModelOpinion, Policy, decide_order
from agents.enrich import enrich_order
from agents.features import PastOrder, add_to_history, history_before, order_features
from agents.intake import read_hop_headers
from agents.merchants import merchant_by_id, merchants_loaded
from agents.model import ModelState
from agents.scorer import models_loaded, scorer
from agents.snapshots import SnapshotStore
from agents.validate import Rejection, decode_event
from streams.app import app, registry, settings
from streams.delivery import Outgoing, send_all
from streams.dlq import dead_letter
from streams.metrics import DECIDED_AMOUNT, DECISIONS, LATENCY, MODEL_SCORE, POLICY_INFO
from streams.records import Merchant, Order
from streams.topics import decisions_topic, dlq_topic, identified_orders_topic

log = logging.getLogger(__name__)

DEFAULT_POLICY = Policy()


# identity id → orjson list of the identity's recent orders (agents/features.py PastOrder)
velocity_table = app.Table(
    "velocity",
    default=None,
    key_type=bytes,
    value_type=bytes,
    partitions=settings.partitions,
    use_partitioner=True,  # keyed like identified-orders: the same partition, the same worker
)


@dataclass(slots=True)
class Screened:
    decision: dict[str, Any]  # the Decision datum
    features: dict[str, float]  # exactly what the model scored: the snapshot
    model_score: float


def screen_order(
    order: Order,
    *,
    identity: Mapping[str, Any],
    attributes: Mapping[str, Any],
    ingest_ms: float,
    now: datetime,
    merchants: Mapping[str, Merchant],
    policy: Policy,
    history: Sequence[PastOrder],
    model: ModelState,
    warm: bool,
) -> Screened:
    """One validated, identified order and its identity's earlier orders → its decision."""
    enriched = enrich_order(order, merchants, identity, attributes)
    features = order_features(enriched, history_before(history, order.order_id))
    probability = model.score(features)
    top = tuple(name for name, _ in model.contributions(features)) if warm else ()
    verdict = decide_order(enriched, policy, ModelOpinion(probability, model.name, warm, top))
    now_ms = now.timestamp() * 1000
    decision = {
        "order_id": order.order_id,
        "merchant_id": order.merchant_id,
        "identity_id": identity["identity_id"],
        "decision": verdict.decision,
        "score": verdict.score,
        "reasons": list(verdict.reasons),
        "policy_version": policy.version,
        "model_version": model.name,
        "amount": order.amount,
        "merchant_category": enriched.merchant_category,
        "event_time": order.event_time,
        "decided_at": now,
        "latency_event_ms": now_ms - order.event_time.timestamp() * 1000,
        "latency_ingest_ms": now_ms - ingest_ms,
    }
    return Screened(decision, features, probability)


def snapshot_of(order: Order, screened: Screened) -> dict[str, Any]:
    """What the learner needs when the outcome arrives: features, the score, when."""
    return {
        "x": screened.features,
        "s": screened.model_score,
        "v": screened.decision["model_version"],
        "t": int(order.event_time.timestamp() * 1000),
    }


def remember_order(key: bytes, history: list[PastOrder], order: Order) -> None:
    at_ms = int(order.event_time.timestamp() * 1000)
    velocity_table[key] = orjson.dumps(add_to_history(history, order.order_id, at_ms, order.amount))


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
    await models_loaded.wait()
    policy = DEFAULT_POLICY
    POLICY_INFO.labels(policy.version).set(1)
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
    store = SnapshotStore(client, settings.identity_namespace, settings.snapshot_ttl_days * 86400)
    decisions = decisions_topic.get_topic_name()
    dead_letters = dlq_topic.get_topic_name()
    async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
        outgoing: list[Outgoing] = []
        snapshots: list[tuple[str, dict[str, Any]]] = []
        now = datetime.now(UTC)
        model, warm = scorer.state, scorer.warm  # one model version for the whole batch
        for event in events:
            msg = event.message
            try:
                order = decode_event(registry, "Order", msg.value, None)
                if isinstance(order, Rejection):  # intake validated it: only a bug gets here
                    raise ValueError(f"{order.reason}: {order.detail}")
                identity, attributes, ingest_ms = read_hop_headers(msg.headers)
                key = identity["identity_id"].encode()
                stored = velocity_table.get(key)
                history = [tuple(h) for h in orjson.loads(stored)] if stored else []
                screened = screen_order(
                    order,
                    identity=identity,
                    attributes=attributes,
                    ingest_ms=ingest_ms,
                    now=now,
                    merchants=merchant_by_id,
                    policy=policy,
                    history=history,
                    model=model,
                    warm=warm,
                )
                remember_order(key, history, order)
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
            result = screened.decision
            snapshots.append((order.order_id, snapshot_of(order, screened)))
            outgoing.append(
                Outgoing(
                    decisions, result["order_id"].encode(), registry.encode("Decision", result)
                )
            )
            record_decision_metrics(result)
            MODEL_SCORE.observe(screened.model_score)
        await store.save(snapshots)  # before the decisions: an outcome can only follow them
        await send_all(app.producer, outgoing)
