"""Stage 1 of the hot path, per order: decode + validate, external attributes, identity keys.

Pure functions of one consumed message (agents/screen.py runs them over a batch): a valid order
becomes an `Accepted` (its identity keys for the graph, its external attributes, no PII kept);
anything else becomes a dead letter with the reason and where it came from. Each call catches
its own errors: a bug costs the one message (dead-lettered as a processing error), never the
rest of the batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents import reasons
from agents.attributes import order_attributes
from agents.identity import Identity, Lookup, person_keys
from agents.validate import Rejection, check_order, decode_event
from streams.codec import SchemaRegistry
from streams.delivery import Outgoing
from streams.dlq import dead_letter
from streams.metrics import EVENTS_IN, IDENTITIES_CREATED, IDENTITY_MERGES, SATURATED_KEY_HITS
from streams.records import Order
from streams.txloop import Received

log = logging.getLogger(__name__)

ORDERS_IN = EVENTS_IN.labels("orders")


@dataclass(slots=True)
class Accepted:
    """A valid order, on its way to identity resolution and screening."""

    message: Received
    order: Order
    attributes: dict[str, Any] | None = None  # filled with the identity keys


def accept_order(
    message: Received, now: datetime, registry: SchemaRegistry, max_bytes: int, dlq: str
) -> Accepted | Outgoing:
    """A consumed order message → Accepted, or its dead letter."""
    ORDERS_IN.inc()
    try:
        order = decode_event(registry, "Order", message.value, max_bytes)
        if not isinstance(order, Rejection):
            order = check_order(order, now) or order
        if not isinstance(order, Rejection):
            return Accepted(message, order)
    except Exception as exc:  # a bug must not lose the rest of the batch
        log.exception(
            "intake failed at %s[%d]@%d", message.topic, message.partition, message.offset
        )
        order = Rejection(reasons.PROCESSING_ERROR, type(exc).__name__)
    return dead_letter(dlq, message, "orders", order.reason, order.detail)


def identity_lookup(
    accepted: Accepted, secret: bytes, dead_letters: list[Outgoing], dlq: str
) -> Lookup[Accepted] | None:
    """The order's keys for the identity graph and its external attributes (None, its dead
    letter appended, if computing them failed)."""
    order, message = accepted.order, accepted.message
    try:
        accepted.attributes = order_attributes(order)
        keys = person_keys(order.buyer, secret)
        return Lookup(keys, int(order.event_time.timestamp() * 1000), order.order_id, accepted)
    except Exception as exc:  # a bug must not lose the rest of the batch
        log.exception(
            "identity keys failed at %s[%d]@%d", message.topic, message.partition, message.offset
        )
        detail = f"identity keys: {type(exc).__name__}"
        dead_letters.append(dead_letter(dlq, message, "orders", reasons.PROCESSING_ERROR, detail))
        return None


def identity_view(identity: Identity) -> dict[str, Any]:
    """The identity as the screening stages read it (ids and counts, no PII)."""
    return {
        "identity_id": identity.identity_id,
        "new": identity.new,
        "merged": identity.merged,
        "first_seen_ms": identity.first_seen_ms,
        "orders": identity.orders,
        "names": identity.names,
        "addresses": identity.addresses,
        "phones": identity.phones,
        "emails": identity.emails,
        "new_variation": identity.new_variation,
        "saturated_keys": identity.saturated_keys,
    }


def record_identity_metrics(identity: Identity) -> None:
    if identity.new:
        IDENTITIES_CREATED.inc()
    if identity.merged:
        IDENTITY_MERGES.inc(identity.merged)
    if identity.saturated_keys:
        SATURATED_KEY_HITS.inc(identity.saturated_keys)
