"""Stage 1: raw bytes → a typed, domain-valid event, or a `Rejection` bound for the DLQ.

Schema checks live in the codec (streams/codec.py); this adds what Avro types cannot say:
positive yen amounts, a supported currency, sane items and timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from agents import reasons
from streams.codec import CodecError, SchemaRegistry
from streams.records import (
    RECORD_TYPES,
    WALLET_KINDS,
    Account,
    Merchant,
    Order,
    Payment,
    record_from_datum,
)

T = TypeVar("T")

# Clocks drift and producers buffer; anything further ahead than this is a producer bug.
MAX_CLOCK_SKEW = timedelta(hours=1)
EARLIEST_EVENT = datetime.fromisoformat("2000-01-01T00:00:00+00:00")


@dataclass(slots=True, frozen=True)
class Rejection:
    """Why an event goes to the DLQ: a bounded reason code and a PII-free detail."""

    reason: str
    detail: str


def decode_event(
    registry: SchemaRegistry, name: str, raw: bytes | None, max_bytes: int
) -> Any | Rejection:
    """Decode `raw` as the schema `name` into its record type."""
    if raw is None:
        return Rejection("undecodable", "empty message (tombstone) on an event topic")
    try:
        datum = registry.decode(name, raw, max_bytes)
    except CodecError as exc:
        return Rejection(exc.reason, exc.detail)
    return record_from_datum(RECORD_TYPES[name], datum)


def check_order(order: Order, now: datetime) -> Rejection | None:
    """Domain rules of an order; None when it may be screened."""
    if not order.order_id or not order.merchant_id:
        return Rejection(reasons.EMPTY_ID, "order_id and merchant_id must be non-empty")
    if order.amount <= 0:
        return Rejection(reasons.AMOUNT_NOT_POSITIVE, f"amount must be > 0 yen, got {order.amount}")
    if order.currency != "JPY":
        return Rejection(reasons.UNSUPPORTED_CURRENCY, "only JPY is screened")
    for i, item in enumerate(order.items):
        if item.quantity <= 0 or item.unit_price < 0:
            return Rejection(reasons.INVALID_ITEM, f"items[{i}]: quantity > 0 and price >= 0")
    return check_event_time(order.event_time, now)


CHANNELS = {
    "CHARGE": ("BANK_ACCOUNT", "ATM", "CONVENIENCE_STORE", "CARD", "SHOP_REGISTER"),
    "WITHDRAW": ("BANK", "ATM"),
}


def check_payment(payment: Payment, now: datetime) -> Rejection | None:
    if not payment.payment_id:
        return Rejection(reasons.EMPTY_ID, "payment_id must be non-empty")
    if payment.amount <= 0:
        return Rejection(
            reasons.AMOUNT_NOT_POSITIVE, f"amount must be > 0 yen, got {payment.amount}"
        )
    return check_wallet_payment(payment) or check_event_time(payment.event_time, now)


def check_wallet_payment(payment: Payment) -> Rejection | None:
    """What screening a wallet payment needs: its account, a transfer's counterparty, a
    channel that fits the kind."""
    kind = payment.kind
    if kind not in WALLET_KINDS:
        return None
    if not payment.account_id:
        return Rejection(reasons.MISSING_ACCOUNT, f"a {kind} payment needs account_id")
    if kind == "TRANSFER":
        if not payment.counterparty_account_id:
            return Rejection(
                reasons.MISSING_COUNTERPARTY, "a TRANSFER needs counterparty_account_id"
            )
        if payment.counterparty_account_id == payment.account_id:
            return Rejection(reasons.INVALID_COUNTERPARTY, "a TRANSFER to its own account")
    allowed = CHANNELS.get(kind)
    if payment.channel is not None and (allowed is None or payment.channel not in allowed):
        fits = ", ".join(allowed) if allowed else "none"
        return Rejection(
            reasons.INVALID_CHANNEL, f"channel {payment.channel} does not fit {kind} ({fits})"
        )
    return None


def check_account(account: Account, now: datetime) -> Rejection | None:
    if not account.account_id:
        return Rejection(reasons.EMPTY_ID, "account_id must be non-empty")
    if account.kind == "KYC_VERIFIED" and (account.kyc_level is None or account.person is None):
        return Rejection(reasons.KYC_INCOMPLETE, "KYC_VERIFIED needs kyc_level and person")
    if account.kind == "LIMITS_CHANGED" and (
        account.daily_limit is None or account.daily_limit < 0
    ):
        return Rejection(reasons.INVALID_LIMIT, "LIMITS_CHANGED needs daily_limit >= 0 yen")
    return check_event_time(account.event_time, now)


def check_event_time(event_time: datetime, now: datetime) -> Rejection | None:
    if event_time < EARLIEST_EVENT or event_time > now + MAX_CLOCK_SKEW:
        return Rejection(
            reasons.EVENT_TIME_OUT_OF_RANGE,
            f"event_time must be after 2000 and at most {MAX_CLOCK_SKEW} ahead of the worker clock",
        )
    return None


def check_any(record: Any, now: datetime) -> Rejection | None:
    """Domain rules for any event type (orders and payments have more)."""
    if isinstance(record, Order):
        return check_order(record, now)
    if isinstance(record, Payment):
        return check_payment(record, now)
    if isinstance(record, Account):
        return check_account(record, now)
    if isinstance(record, Merchant):
        return check_event_time(record.updated_at, now)
    return check_event_time(record.event_time, now)
