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
from typing import Any

import orjson
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from agents.state import (
    Account,
    AccountStore,
    Snapshot,
    SnapshotStore,
    empty_account,
    redis_client,
)
from agents.validate import Rejection, decode_event
from streams.app import app, registry, settings
from streams.delivery import Outgoing, send_all
from streams.topics import account_events_topic, outcomes_topic, payments_topic

log = logging.getLogger(__name__)

SETTLEMENTS = Counter(
    "shinsa_settlements_total",
    "Repayments and outcomes applied to identities' exposure, or unknown orders.",
    ["event", "result"],
)
OUTSTANDING = Gauge(
    "shinsa_exposure_outstanding_yen",
    "Outstanding deferred balance (yen) of all identities (every worker reports the total).",
)
HELD = Gauge(
    "shinsa_identities_held", "Identities held for an unpaid order (all; the same in every worker)."
)
SETTLEMENT_EVENTS = ("repaid", "unpaid", "written_off", "approved")
for _event in SETTLEMENT_EVENTS:  # at 0 from the start, so rate() counts the first ones
    for _result in ("applied", "unknown_order"):
        SETTLEMENTS.labels(_event, _result)

OUTCOME_EVENTS = {
    "PAID": "repaid",
    "UNPAID": "unpaid",
    "FRAUD_CONFIRMED": "written_off",
    "CHARGEBACK": "written_off",
    "CANCELLED": "written_off",  # a cancelled order is owed by nobody: closed like a write-off
}


# ------------------------------------------------------------------ pure account logic


def outstanding(account: Account) -> int:
    return sum(account["open"].values())


def is_held(account: Account) -> bool:
    return bool(account["unpaid"])


def apply_event(account: Account, event: str, order_id: str, amount: int) -> Account:
    """The account after one event on one of its orders."""
    open_orders = dict(account["open"])
    history = dict(account.get("history") or empty_account()["history"])
    was_open, was_unpaid = order_id in open_orders, order_id in account["unpaid"]
    unpaid = [o for o in account["unpaid"] if o != order_id]
    if event == "approved":
        open_orders[order_id] = amount
    elif event == "unpaid":
        unpaid.append(order_id)
        if was_open and not was_unpaid:
            history["unpaid"] += 1
    elif event in ("repaid", "written_off"):
        open_orders.pop(order_id, None)
        if event == "repaid" and was_open:  # late: repaid after it was reported unpaid
            history["late" if was_unpaid else "on_time"] += 1
    else:
        raise ValueError(f"unknown account event {event!r}")
    return {"open": open_orders, "unpaid": unpaid, "history": history}


def settlement_of(topic: str, value: bytes | None) -> tuple[str, str] | None:
    """(order id, event) a payment or outcome means for exposure, or None."""
    if topic == "payments":
        payment = decode_event(registry, "Payment", value, settings.max_event_bytes)
        if isinstance(payment, Rejection) or payment.kind != "REPAYMENT":
            return None
        if payment.status != "SUCCEEDED" or not payment.order_id:
            return None
        return payment.order_id, "repaid"
    outcome = decode_event(registry, "Outcome", value, settings.max_event_bytes)
    if isinstance(outcome, Rejection) or outcome.subject != "ORDER":
        return None  # a wallet payment's outcome labels the model; it settles no deferred order
    if outcome.kind == "LEGIT_CONFIRMED" and outcome.source == "REVIEWER":
        return outcome.order_id, "approved"  # applies to a DEFERRED order held for review
    event = OUTCOME_EVENTS.get(outcome.kind)
    return (outcome.order_id, event) if event else None


def account_event(snapshot: Snapshot, order_id: str, event: str) -> dict[str, Any] | None:
    """The account-events message for a settlement, from the order's snapshot."""
    if event == "approved" and (
        snapshot.decision != "REVIEW" or snapshot.payment_method != "DEFERRED"
    ):
        return None  # only a reviewed deferred order becomes a debt on the reviewer's word
    return {"order_id": order_id, "event": event, "amount": snapshot.amount}


# ------------------------------------------------------------------ the agents

settlement_sources = app.topic(
    payments_topic.get_topic_name(),
    outcomes_topic.get_topic_name(),
    key_type=bytes,
    value_type=bytes,
)


@app.agent(settlement_sources)
async def route_settlements(stream: Any) -> None:
    """payments + outcomes → the identity of each order they settle → account-events."""
    store = SnapshotStore(
        redis_client(settings), settings.identity_namespace, settings.snapshot_ttl_days * 86400
    )
    target = account_events_topic.get_topic_name()
    payments = payments_topic.get_topic_name()
    async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
        found = []
        for event in events:
            msg = event.message
            try:
                settlement = settlement_of(
                    "payments" if msg.topic == payments else "outcomes", msg.value
                )
            except Exception:  # a bug must not lose the batch; ingest.py dead-letters bad input
                log.exception("settlement failed: %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                continue
            if settlement is not None:
                found.append(settlement)
        snapshots = await store.load([order_id for order_id, _ in found])
        outgoing = []
        for (order_id, kind), snapshot in zip(found, snapshots, strict=True):
            message = account_event(snapshot, order_id, kind) if snapshot else None
            if snapshot is None or not snapshot.identity_id:
                SETTLEMENTS.labels(kind, "unknown_order").inc()
            elif message is not None:
                key = snapshot.identity_id.encode()
                outgoing.append(Outgoing(target, key, orjson.dumps(message)))
        await send_all(app.producer, outgoing)


@app.agent(account_events_topic)
async def apply_settlements(stream: Any) -> None:
    """account-events (keyed by identity) → the identity's account (agents/state.py)."""
    accounts = AccountStore(redis_client(settings), settings.identity_namespace)
    async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
        applied = []
        for event in events:
            msg = event.message
            try:
                data = orjson.loads(msg.value)
                applied.append(
                    (msg.key.decode(), data["event"], data["order_id"], int(data["amount"]))
                )
            except Exception:
                where = (msg.topic, msg.partition, msg.offset)
                log.exception("account event failed at %s[%d]@%d", *where)
        await accounts.apply(applied)
        for _, kind, _, _ in applied:
            SETTLEMENTS.labels(kind, "applied").inc()


@app.timer(interval=5.0)
async def measure_exposure() -> None:
    """Totals over every account (the same in every worker: dashboards take the max), two
    numbers the account scripts keep. A gauge is a report: while Redis is away it keeps its
    last value, and the worker keeps screening."""
    client = redis_client(settings)
    try:
        total, held = await AccountStore(client, settings.identity_namespace).totals()
    except (RedisError, OSError) as exc:
        log.warning("exposure totals not measured this time: %s", type(exc).__name__)
        return
    finally:
        await client.aclose()
    OUTSTANDING.set(total)
    HELD.set(held)
