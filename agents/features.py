"""Stage 4: the model's features of one order (pure functions, no I/O).

The same code builds features in the stream (agents/screen.py), in the learner's snapshots and
in the backtest (`shinsa eval`), so what the model learns from is exactly what it scored.
Feature names come from fixed sets (enum values of the schemas, fixed window names), so the
feature space and the reason codes built from it stay bounded.

Per-identity velocity is computed from the identity's recent orders, kept as a compact history
in Redis per identity (agents/state.py): counts and amounts of the identity's
*earlier* orders in sliding windows of 10 min, 1 h, 24 h and 7 d before this order's event time.
Failed card authorisations from the order's device (agents/devices.py) catch card testing:
many tiny declined authorisations from one device, then a real order.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from agents.enrich import EnrichedOrder
from agents.entities import EntityState, activity_features

JST = timezone(timedelta(hours=9), "JST")
WINDOWS_MS: dict[str, int] = {
    "10m": 10 * 60_000,
    "1h": 3_600_000,
    "24h": 86_400_000,
    "7d": 7 * 86_400_000,
}
HISTORY_MS = WINDOWS_MS["7d"]
HISTORY_MAX = 256  # orders kept per identity: a burst beyond that saturates the counts anyway

# One past order of an identity: (event time in ms, amount in yen, order id).
PastOrder = tuple[int, int, str]


VELOCITY_NAMES = [
    (f"velocity_count_{name}", f"velocity_amount_{name}", width)
    for name, width in WINDOWS_MS.items()
]


def velocity(history: Sequence[PastOrder], now_ms: int) -> dict[str, float]:
    """Counts and log amounts of earlier orders within each window before `now_ms`."""
    out: dict[str, float] = {}
    for count_name, amount_name, width in VELOCITY_NAMES:
        since, count, total = now_ms - width, 0, 0
        for at, amount, _ in history:
            if since < at <= now_ms:
                count += 1
                total += amount
        out[count_name] = float(count)
        out[amount_name] = math.log1p(total)
    return out


TICKET_MIN_YEN = 500  # the card seed's campaign: one ticket per card purchase of ≥ 500 yen
NEAR_TICKET_MIN_YEN = 600  # "just over" the minimum: what ticket farming buys


def campaign_features(history: Sequence[PastOrder], now_ms: int, amount: int) -> dict[str, float]:
    """Ticket farming (many purchases just over the campaign's 500-yen minimum, split orders):
    whether this order is one, and how many of the identity's orders of the last day were."""
    day = now_ms - WINDOWS_MS["24h"]
    near = sum(1 for at, paid, _ in history if day < at <= now_ms and _near_ticket_min(paid))
    return {
        "near_ticket_min": float(_near_ticket_min(amount)),
        "near_ticket_min_24h": math.log1p(near),
    }


def _near_ticket_min(amount: int) -> bool:
    return TICKET_MIN_YEN <= amount < NEAR_TICKET_MIN_YEN


def add_to_history(
    history: Sequence[PastOrder], order_id: str, at_ms: int, amount: int
) -> list[PastOrder]:
    """The history with this order added (once: a redelivered order is not counted twice),
    orders older than the longest window dropped, and at most HISTORY_MAX kept."""
    if any(oid == order_id for _, _, oid in history):
        return list(history)
    kept = [h for h in history if h[0] > at_ms - HISTORY_MS]
    kept.append((at_ms, amount, order_id))
    kept.sort(key=lambda h: h[0])
    return kept[-HISTORY_MAX:]


def history_before(history: Sequence[PastOrder], order_id: str) -> list[PastOrder]:
    """The orders before this one: on redelivery the order itself is already in the history."""
    return [h for h in history if h[2] != order_id]


def time_features(event_time: datetime) -> dict[str, float]:
    """Hour of day (on a circle, so 23h is near 0h) and weekday, in Japan time."""
    local = event_time.astimezone(JST)
    hour = local.hour + local.minute / 60
    angle = 2 * math.pi * hour / 24
    return {
        "hour_sin": math.sin(angle),
        "hour_cos": math.cos(angle),
        "night": float(local.hour < 6),
        "weekend": float(local.weekday() >= 5),
    }


def _flag(value: object) -> float:
    return 1.0 if value is True else 0.0


def identity_features(identity: Mapping[str, Any], now_ms: int) -> dict[str, float]:
    """What the identity stage knows of the buyer (counts, newness, variation)."""
    if not identity:
        return {"identity_new": 1.0}
    first = identity.get("first_seen_ms") or now_ms
    return {
        "identity_new": _flag(identity.get("new")),
        "identity_age_days": max(0.0, (now_ms - first) / 86_400_000),
        "identity_orders": math.log1p(identity.get("orders", 1)),
        "identity_names": float(identity.get("names", 1)),
        "identity_addresses": float(identity.get("addresses", 1)),
        "identity_phones": float(identity.get("phones", 1)),
        "identity_emails": float(identity.get("emails", 1)),
        "identity_new_variation": _flag(identity.get("new_variation")),
        "identity_merges": float(identity.get("merged", 0)),
    }


def attribute_features(attributes: Mapping[str, Any]) -> dict[str, float]:
    """External attributes (agents/attributes.py) as flags and one-hot values."""
    out = {
        f"phone={attributes.get('phone_kind', 'missing')}": 1.0,
        f"email={attributes.get('email_domain_class', 'missing')}": 1.0,
        "email_plus_tag": _flag(attributes.get("email_plus_tag")),
        "name_in_kana": _flag(attributes.get("name_is_kana_reading")),
        "address_mismatch": _flag(attributes.get("address_matches_postal_code") is False),
        "ship_to_other": _flag(attributes.get("ship_to_other")),
        "ship_name_differs": _flag(attributes.get("ship_name_differs")),
        "ship_prefecture_differs": _flag(attributes.get("ship_prefecture_differs")),
        "ship_phone_differs": _flag(attributes.get("ship_phone_differs")),
    }
    return out


def failures_before(times_ms: Sequence[int], now_ms: int, window_ms: int = 3_600_000) -> int:
    """Failed card authorisations seen in the window before `now_ms` (times sorted)."""
    return bisect_right(times_ms, now_ms) - bisect_right(times_ms, now_ms - window_ms)


def order_features(
    enriched: EnrichedOrder,
    history: Sequence[PastOrder] = (),
    device_failures: int = 0,
    entities: Sequence[tuple[str, EntityState | None]] = (),
) -> dict[str, float]:
    """All features of one order, given the identity's earlier orders, the failed card
    authorisations from the order's device in the hour before it (card testing), and the
    activity of its entities (identity, merchant, device; agents/entities.py) before it.
    Their known risk depends on labels, so it is added where labels are known: the scorer
    (agents/screen.py) and the backtest's replay."""
    order = enriched.order
    now_ms = int(order.event_time.timestamp() * 1000)
    amount = float(order.amount)
    past = [h[1] for h in history if now_ms - HISTORY_MS < h[0] <= now_ms]
    mean_past = sum(past) / len(past) if past else 0.0
    features = {
        "amount_10k": amount / 10_000,
        "amount_log": math.log1p(amount),
        "amount_vs_past": math.log1p(amount) - math.log1p(mean_past) if past else 0.0,
        f"category={enriched.merchant_category}": 1.0,
        f"tier={enriched.merchant_tier}": 1.0,
        f"method={order.payment_method}": 1.0,
        "merchant_unknown": float(enriched.merchant is None),
        "items": float(len(order.items)),
        "device_failed_auths_1h": math.log1p(device_failures),
    }
    features |= time_features(order.event_time)
    features |= identity_features(enriched.identity, now_ms)
    features |= attribute_features(enriched.attributes)
    features |= velocity(history, now_ms)
    features |= campaign_features(history, now_ms, order.amount)
    for kind, state in entities:
        features |= activity_features(kind, state, now_ms, amount)
    return features
