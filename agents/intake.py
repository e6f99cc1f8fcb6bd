"""orders → validate → external attributes + identity (名寄せ) → identified-orders (re-keyed).

The one Kafka hop of the pipeline: identity resolution needs the whole graph (Redis, shared by
all workers), and what follows needs per-identity state, so the order leaves here keyed by its
identity. The order's bytes travel unchanged; the identity and attributes (no PII) ride in
headers. Bad input → dlq. A Redis outage stalls this stage (logged, counted) without losing or
mis-deciding orders: the batch is not acknowledged until Redis answers.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
from prometheus_client import Counter
from redis import asyncio as aioredis

from agents import reasons
from agents.attributes import order_attributes
from agents.identity import Identity, IdentityGraph, Lookup, person_keys, resolve_overlapped
from agents.normalize import postal_table
from agents.validate import Rejection, check_order, decode_event
from streams.app import app, registry, settings
from streams.delivery import Outgoing, send_all
from streams.dlq import dead_letter
from streams.metrics import EVENTS_IN
from streams.records import Order
from streams.topics import dlq_topic, identified_orders_topic, orders_topic

log = logging.getLogger(__name__)

IDENTITY_HEADER = "shinsa.identity"
ATTRIBUTES_HEADER = "shinsa.attributes"
INGEST_HEADER = "shinsa.ingest_ms"

IDENTITIES_CREATED = Counter("shinsa_identities_created_total", "New identities resolved.")
IDENTITY_MERGES = Counter("shinsa_identity_merges_total", "Identities merged into older ones.")
DEAD_LETTERS = dlq_topic.get_topic_name()
SATURATED_KEY_HITS = Counter(
    "shinsa_identity_saturated_key_hits_total",
    "Match keys skipped because they link too many people (help desks, shared mailboxes).",
)


def accept_order(raw: bytes | None, now: datetime) -> Order | Rejection:
    """Decode and validate one order message."""
    order = decode_event(registry, "Order", raw, settings.max_event_bytes)
    if isinstance(order, Rejection):
        return order
    return check_order(order, now) or order


def hop_headers(identity: Identity, attributes: dict[str, Any], ingest_ms: float) -> list:
    return [
        (IDENTITY_HEADER, orjson.dumps(identity)),
        (ATTRIBUTES_HEADER, orjson.dumps(attributes)),
        (INGEST_HEADER, str(int(ingest_ms)).encode()),
    ]


def read_hop_headers(headers: Any) -> tuple[dict[str, Any], dict[str, Any], float]:
    """The identity, attributes and ingest time an order carries across the hop."""
    h = dict(headers or ())
    return (
        orjson.loads(h[IDENTITY_HEADER]),
        orjson.loads(h[ATTRIBUTES_HEADER]),
        float(h[INGEST_HEADER]),
    )


def record_identity_metrics(identity: Identity) -> None:
    if identity.new:
        IDENTITIES_CREATED.inc()
    if identity.merged:
        IDENTITY_MERGES.inc(identity.merged)
    if identity.saturated_keys:
        SATURATED_KEY_HITS.inc(identity.saturated_keys)


def take_order(
    event: Any, now: datetime, secret: bytes, dead_letters: list[Outgoing]
) -> Lookup[tuple[Any, dict[str, Any]]] | None:
    """An order's keys for the identity graph, or None (its dead letter appended) if rejected."""
    msg = event.message
    EVENTS_IN.labels("orders").inc()
    try:
        order = accept_order(msg.value, now)
        if not isinstance(order, Rejection):
            time_ms = int(order.event_time.timestamp() * 1000)
            keys = person_keys(order.buyer, secret)
            return Lookup(keys, time_ms, order.order_id, (msg, order_attributes(order)))
    except Exception as exc:  # a bug must not lose the rest of the batch
        log.exception("intake failed at %s[%d]@%d", msg.topic, msg.partition, msg.offset)
        order = Rejection(reasons.PROCESSING_ERROR, type(exc).__name__)
    dead_letters.append(dead_letter(DEAD_LETTERS, msg, "orders", order.reason, order.detail))
    return None


@app.agent(orders_topic)
async def resolve_orders(stream: Any) -> None:
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
    graph = IdentityGraph(client, settings.identity_namespace, settings.identity_fanout_limit)
    secret = settings.hash_key.get_secret_value().encode()
    identified = identified_orders_topic.get_topic_name()
    await asyncio.to_thread(postal_table)  # load Japan Post's table now, not in a batch
    async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
        now = datetime.now(UTC)
        outgoing: list[Outgoing] = []

        take = partial(take_order, now=now, secret=secret, dead_letters=outgoing)
        # validating and keying the next chunk overlaps the script call of this one
        done = await resolve_overlapped(graph, events, take, int(now.timestamp() * 1000))
        for msg, _attributes in done.unresolved:
            detail = f"identity: {type(done.error).__name__}"
            outgoing.append(
                dead_letter(DEAD_LETTERS, msg, "orders", reasons.PROCESSING_ERROR, detail)
            )
        for (msg, attributes), identity in done.found:
            record_identity_metrics(identity)
            headers = hop_headers(identity, attributes, msg.timestamp * 1000)
            outgoing.append(Outgoing(identified, identity.identity_id.encode(), msg.value, headers))
        await send_all(app.producer, outgoing)
