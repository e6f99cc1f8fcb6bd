"""agents/features.py: velocity windows, history upkeep, time of day in JST, no leakage."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from agents.enrich import enrich_order
from agents.features import (
    HISTORY_MAX,
    add_to_history,
    failures_before,
    history_before,
    order_features,
    time_features,
    velocity,
)
from streams.records import Merchant, Order
from tests.unit.conftest import make_order

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
MIN = 60_000


def order(amount: int = 5_000, when: datetime = NOW, oid: str = "o-9") -> Order:
    return make_order(amount, "DEFERRED", order_id=oid, merchant_id="m1", when=when)


def test_velocity_counts_earlier_orders_in_each_window():
    history = [
        (NOW_MS - 5 * MIN, 1_000, "a"),
        (NOW_MS - 30 * MIN, 2_000, "b"),
        (NOW_MS - 120 * MIN, 3_000, "c"),
        (NOW_MS - 3 * 1440 * MIN, 4_000, "d"),
        (NOW_MS - 8 * 1440 * MIN, 5_000, "e"),  # beyond 7 days
    ]
    v = velocity(history, NOW_MS)
    assert [v[f"velocity_count_{w}"] for w in ("10m", "1h", "24h", "7d")] == [1, 2, 3, 4]
    assert v["velocity_amount_1h"] == math.log1p(3_000)
    assert v["velocity_amount_7d"] == math.log1p(10_000)


def test_velocity_ignores_orders_after_the_order_being_scored():
    later = [(NOW_MS + MIN, 9_999, "future")]
    assert velocity(later, NOW_MS)["velocity_count_7d"] == 0


def test_history_keeps_each_order_once_and_forgets_after_seven_days():
    h = add_to_history([], "a", NOW_MS - 8 * 1440 * MIN, 100)
    h = add_to_history(h, "b", NOW_MS, 200)
    assert [oid for *_, oid in h] == ["b"]  # "a" fell out of the longest window
    assert add_to_history(h, "b", NOW_MS, 200) == h  # a redelivered order is not counted twice
    assert history_before(h, "b") == []  # ... nor counted as its own earlier order


def test_history_is_bounded():
    h: list = []
    for i in range(HISTORY_MAX + 50):
        h = add_to_history(h, f"o{i}", NOW_MS + i, 10)
    assert len(h) == HISTORY_MAX
    assert h[-1][2] == f"o{HISTORY_MAX + 49}"


def test_time_of_day_is_japan_time():
    midnight_jst = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)  # Sunday 00:00 in Tokyo
    t = time_features(midnight_jst)
    assert t["night"] == 1.0 and t["weekend"] == 1.0
    assert math.isclose(t["hour_cos"], 1.0) and math.isclose(t["hour_sin"], 0.0, abs_tol=1e-9)
    noon_jst = time_features(datetime(2026, 11, 20, 3, 0, tzinfo=UTC))  # Friday 12:00 JST
    assert noon_jst["night"] == 0.0 and noon_jst["weekend"] == 0.0
    assert math.isclose(noon_jst["hour_cos"], -1.0)


def test_order_features_are_bounded_names_with_one_hot_categories():
    m = Merchant("m1", "テスト商店", "ELECTRONICS", "HIGH_RISK", NOW, "ACTIVE")
    identity = {"identity_id": "i1", "new": True, "orders": 1, "first_seen_ms": NOW_MS}
    attributes = {"phone_kind": "mobile", "email_domain_class": "free", "ship_to_other": True}
    x = order_features(enrich_order(order(), {"m1": m}, identity, attributes))
    for key in ("category=ELECTRONICS", "tier=HIGH_RISK", "method=DEFERRED", "phone=mobile"):
        assert x[key] == 1.0
    assert x["identity_new"] == 1.0 and x["ship_to_other"] == 1.0
    assert x["merchant_unknown"] == 0.0
    assert all(isinstance(v, float) for v in x.values())
    unknown = order_features(enrich_order(order(), {}, identity, attributes))
    assert unknown["category=UNKNOWN"] == 1.0 and unknown["merchant_unknown"] == 1.0


def test_amount_against_the_identitys_past_orders():
    past = [(NOW_MS - 60 * MIN, 5_000, "a")]
    same = order_features(enrich_order(order(5_000), {}), past)
    big = order_features(enrich_order(order(50_000), {}), past)
    assert same["amount_vs_past"] == 0.0
    assert big["amount_vs_past"] > 2


@given(
    st.lists(st.tuples(st.integers(1, 20 * 1440), st.integers(1, 100_000)), min_size=0, max_size=30)
)
def test_orders_after_the_scored_one_never_change_its_features(offsets):
    """No leakage: what happens after an order cannot reach the features it was scored with."""
    past = [(NOW_MS - 1 * MIN, 700, "p")]
    future = [(NOW_MS + m * MIN, a, f"f{i}") for i, (m, a) in enumerate(offsets)]
    base = order_features(enrich_order(order(), {}), past)
    assert order_features(enrich_order(order(), {}), past + future) == base


def test_a_missing_identity_is_treated_as_new():
    x = order_features(enrich_order(order(when=NOW - timedelta(hours=1)), {}))
    assert x["identity_new"] == 1.0


def test_failed_card_authorisations_count_in_the_hour_up_to_the_order():
    times = [NOW_MS - 2 * 3_600_000, NOW_MS - 3_600_000, NOW_MS - 60_000, NOW_MS, NOW_MS + 1]
    assert failures_before(times, NOW_MS) == 2  # (now - 1 h, now]: not the later one
    x = order_features(enrich_order(order(), {}), (), device_failures=12)
    assert x["device_failed_auths_1h"] == math.log1p(12)
    assert order_features(enrich_order(order(), {}))["device_failed_auths_1h"] == 0.0


def test_ticket_farming_shows_as_purchases_just_over_the_campaign_minimum():
    from agents.features import campaign_features

    now = 1_790_000_000_000
    hour = 3_600_000
    history = [
        (now - 1 * hour, 520, "o1"),
        (now - 2 * hour, 540, "o2"),
        (now - 3 * hour, 499, "o3"),  # under the minimum: earns nothing, not farming
        (now - 4 * hour, 3_000, "o4"),
        (now - 30 * hour, 510, "o5"),  # older than a day
    ]
    assert campaign_features(history, now, 550) == {
        "near_ticket_min": 1.0,
        "near_ticket_min_24h": math.log1p(2),
    }
    assert campaign_features([], now, 600)["near_ticket_min"] == 0.0
    assert campaign_features([], now, 500)["near_ticket_min"] == 1.0
