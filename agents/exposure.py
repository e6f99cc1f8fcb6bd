"""Credit exposure (支払い能力): each identity's outstanding deferred-payment balance.

An identity's account (agents/state.py, in Redis) holds the approved DEFERRED orders not
yet paid (order id → yen) and the orders reported unpaid.

    screen_batch (screen.py) ─── APPROVE, DEFERRED ──────────────────> open the order
    payments (REPAYMENT), outcomes ──> route_settlements ──> account-events (keyed by identity)
                                           (order → identity: its snapshot in Redis)
    account-events ──> apply_settlements ──> the identity's account

Events on an order: `repaid` (a REPAYMENT payment, or a PAID outcome) closes it and lifts its
hold; `unpaid` (an UNPAID outcome) holds the identity until that order is repaid; `written_off`
(FRAUD_CONFIRMED or CHARGEBACK: not the buyer's debt) closes it; `approved` (a reviewer's
LEGIT_CONFIRMED verdict on a DEFERRED order held for review) opens it. The policy's
exposure_limit and the hold are checked when the identity's next order is decided
(agents/decide.py). Settlements for orders never screened (or whose snapshot expired) are
counted as `unknown_order`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import orjson
from redis.exceptions import RedisError

from agents.credit import OUTCOME_EVENTS
from agents.state import AccountStore, Snapshot, SnapshotStore, redis_client
from agents.validate import Rejection, decode_event
from streams.app import Runtime
from streams.codec import SchemaRegistry
from streams.delivery import Outgoing, send_all
from streams.metrics import CREDIT_BANDS, CREDIT_OUTSTANDING, HELD, OUTSTANDING, SETTLEMENTS
from streams.settings import Settings

log = logging.getLogger(__name__)

SETTLEMENT_EVENTS = ("repaid", "unpaid", "written_off", "approved")
for _event in SETTLEMENT_EVENTS:  # at 0 from the start, so rate() counts the first ones
    for _result in ("applied", "unknown_order"):
        SETTLEMENTS.labels(_event, _result)


def settlement_of(
    topic: str, value: bytes | None, registry: SchemaRegistry, max_bytes: int
) -> tuple[str, str, int] | None:
    """(order id, event, event ms) a payment or outcome means for exposure, or None."""
    if topic == "payments":
        payment = decode_event(registry, "Payment", value, max_bytes)
        if isinstance(payment, Rejection) or payment.kind != "REPAYMENT":
            return None
        if payment.status != "SUCCEEDED" or not payment.order_id:
            return None
        return payment.order_id, "repaid", to_ms(payment.event_time)
    outcome = decode_event(registry, "Outcome", value, max_bytes)
    if isinstance(outcome, Rejection) or outcome.subject != "ORDER":
        return None  # a wallet payment's outcome labels the model; it settles no deferred order
    at_ms = to_ms(outcome.event_time)
    if outcome.kind == "LEGIT_CONFIRMED" and outcome.source == "REVIEWER":
        return outcome.order_id, "approved", at_ms  # a DEFERRED order held for review
    event = OUTCOME_EVENTS.get(outcome.kind)
    return (outcome.order_id, event, at_ms) if event else None


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def account_event(
    snapshot: Snapshot, order_id: str, event: str, at_ms: int = 0
) -> dict[str, Any] | None:
    """The account-events message for a settlement, from the order's snapshot: a repayment
    carries the hours from the order to it (the credit features' days to pay)."""
    if event == "approved" and (
        snapshot.decision != "REVIEW" or snapshot.payment_method != "DEFERRED"
    ):
        return None  # only a reviewed deferred order becomes a debt on the reviewer's word
    hours = (at_ms - snapshot.event_ms) // 3_600_000 if event == "repaid" and at_ms else 0
    return {"order_id": order_id, "event": event, "amount": snapshot.amount, "hours": max(0, hours)}


# ------------------------------------------------------------------ the agents


def register(rt: Runtime) -> None:
    """Route settlements to identities, apply them to accounts, and report the totals, in this
    worker's app."""

    async def route(stream: Any) -> None:
        await route_settlements(rt, stream)

    async def apply(stream: Any) -> None:
        await apply_settlements(rt.settings, stream)

    async def measure() -> None:
        await measure_exposure(rt.settings)

    rt.app.agent(rt.topics.settlement_sources, name="agents.exposure.route_settlements")(route)
    rt.app.agent(rt.topics.account_events, name="agents.exposure.apply_settlements")(apply)
    rt.app.timer(interval=5.0, name="agents.exposure.measure_exposure")(measure)


async def route_settlements(rt: Runtime, stream: Any) -> None:
    """payments + outcomes → the identity of each order they settle → account-events."""
    settings = rt.settings
    store = SnapshotStore(
        redis_client(settings), settings.identity_namespace, settings.snapshot_ttl_days * 86400
    )
    target = rt.topics.account_events.get_topic_name()
    payments = rt.topics.payments.get_topic_name()
    async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
        found = []
        for event in events:
            msg = event.message
            try:
                topic = "payments" if msg.topic == payments else "outcomes"
                settlement = settlement_of(topic, msg.value, rt.registry, settings.max_event_bytes)
            except Exception:  # a bug must not lose the batch; ingest.py dead-letters bad input
                log.exception("settlement failed: %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                continue
            if settlement is not None:
                found.append(settlement)
        snapshots = await store.load([order_id for order_id, _, _ in found])
        outgoing = []
        for (order_id, kind, at_ms), snapshot in zip(found, snapshots, strict=True):
            message = account_event(snapshot, order_id, kind, at_ms) if snapshot else None
            if snapshot is None or not snapshot.identity_id:
                SETTLEMENTS.labels(kind, "unknown_order").inc()
            elif message is not None:
                key = snapshot.identity_id.encode()
                outgoing.append(Outgoing(target, key, orjson.dumps(message)))
        await send_all(rt.app.producer, outgoing)


async def apply_settlements(settings: Settings, stream: Any) -> None:
    """account-events (keyed by identity) → the identity's account (agents/state.py)."""
    accounts = AccountStore(redis_client(settings), settings.identity_namespace)
    async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
        applied = []
        for event in events:
            msg = event.message
            try:
                data = orjson.loads(msg.value)
                applied.append(
                    (
                        msg.key.decode(),
                        data["event"],
                        data["order_id"],
                        int(data["amount"]),
                        int(data.get("hours", 0)),  # messages written before had none
                    )
                )
            except Exception:
                where = (msg.topic, msg.partition, msg.offset)
                log.exception("account event failed at %s[%d]@%d", *where)
        await accounts.apply(applied)
        for _, kind, _, _, _ in applied:
            SETTLEMENTS.labels(kind, "applied").inc()


async def measure_exposure(settings: Settings) -> None:
    """Totals over every account (the same in every worker: dashboards take the max), two
    numbers the account scripts keep. A gauge is a report: while Redis is away it keeps its
    last value, and the worker keeps screening."""
    client = redis_client(settings)
    try:
        store = AccountStore(client, settings.identity_namespace)
        total, held = await store.totals()
        bands = await store.band_totals()
    except (RedisError, OSError) as exc:
        log.warning("exposure totals not measured this time: %s", type(exc).__name__)
        return
    finally:
        await client.aclose()
    OUTSTANDING.set(total)
    HELD.set(held)
    for band in CREDIT_BANDS:
        CREDIT_OUTSTANDING.labels(band).set(bands.get(band, 0))
