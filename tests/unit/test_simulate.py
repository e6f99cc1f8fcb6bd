"""streams/tools/simulate.py: a seeded, realistic and producible event stream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.validate import check_order
from streams.clients import prepare
from streams.codec import CodecError
from streams.records import WALLET_KINDS, Order, record_from_datum
from streams.tools.simulate import PATTERNS, SimConfig, SimEvent, Simulator
from streams.tools.simulate_wallet import WALLET_PATTERNS

END = datetime(2026, 11, 1, tzinfo=UTC)


def simulate(**kw) -> list[SimEvent]:
    return list(Simulator(SimConfig(**{"end": END, **kw})).events())


def fingerprint(events: list[SimEvent]) -> list[tuple]:
    return [(e.topic, e.value, e.time, e.fraud_pattern) for e in events]


def fails_prepare(registry, e: SimEvent) -> bool:
    try:
        prepare(registry, e.topic, e.value)
    except CodecError:
        return True
    return False


@pytest.fixture(scope="module")
def big() -> list[SimEvent]:
    return simulate(orders=3000, seed=7, fraud_rate=0.05)


@pytest.fixture(scope="module")
def orders(big) -> list[SimEvent]:
    return [e for e in big if e.topic == "orders"]


def test_same_seed_and_end_give_the_same_events():
    assert fingerprint(simulate(orders=200, seed=3)) == fingerprint(simulate(orders=200, seed=3))


def test_different_seed_gives_different_events():
    assert fingerprint(simulate(orders=200, seed=3)) != fingerprint(simulate(orders=200, seed=4))


def test_exactly_the_requested_number_of_orders(orders):
    assert len(orders) == 3000
    assert len({e.value["order_id"] for e in orders}) == 3000


def test_fraud_share_is_near_fraud_rate(orders):
    share = sum(e.fraud_pattern is not None for e in orders) / len(orders)
    assert abs(share - 0.05) <= 0.03


def test_no_fraud_when_fraud_rate_is_zero():
    assert all(e.fraud_pattern is None for e in simulate(orders=300, seed=3, fraud_rate=0.0))


def test_every_named_pattern_appears(orders):
    assert {e.fraud_pattern for e in orders} - {None} == set(PATTERNS)


def test_merchants_come_first(big):
    topics = [e.topic for e in big]
    assert topics[:40] == ["merchants"] * 40 and "merchants" not in topics[40:]


def test_events_after_merchants_are_in_event_time_order(big):
    times = [e.time for e in big[40:]]
    assert times == sorted(times)


def test_every_valid_event_can_be_produced(registry):
    events = simulate(orders=150, seed=11)
    topics = {"merchants", "orders", "payments", "accounts", "logins", "outcomes"}
    assert {e.topic for e in events} == topics
    assert [e for e in events if e.raw is not None or fails_prepare(registry, e)] == []


def test_a_wallet_payer_has_a_verified_account_before_paying():
    events = simulate(orders=300, seed=11)
    first_pay: dict[str, datetime] = {}
    for e in events:
        if e.topic == "payments" and e.value["kind"] == "PAY":
            first_pay.setdefault(e.value["account_id"], e.time)
    verified = {
        e.value["account_id"]: e.time
        for e in events
        if e.topic == "accounts" and e.value["kind"] == "KYC_VERIFIED"
    }
    assert first_pay and set(first_pay) <= set(verified)
    assert all(verified[a] < t for a, t in first_pay.items())


def test_invalid_rate_breaks_some_events(registry):
    events = simulate(orders=200, seed=11, invalid_rate=0.05)
    broken = [e for e in events if e.raw is not None or fails_prepare(registry, e)]
    assert 0 < len(broken) < len(events) // 5


def test_no_outcome_is_known_after_end(big):
    assert max(e.time for e in big if e.topic == "outcomes") <= END


def test_outcomes_come_after_their_order(big):
    placed: dict[str, datetime] = {}
    for e in big:
        if e.topic == "orders":
            placed[e.value["order_id"]] = e.time
        elif e.topic == "outcomes":
            assert placed.get(e.value["order_id"], END) < e.time


def test_simulated_orders_are_not_in_the_future_of_end(registry):
    # seed 5 has identity_variation orders that used to land up to ~46 h after `end`
    events = simulate(orders=1000, seed=5)
    assert max(e.time for e in events) <= END
    orders = [e for e in events if e.topic == "orders"]
    records = [record_from_datum(Order, registry.from_json("Order", e.value)) for e in orders]
    assert [o.order_id for o in records if check_order(o, END) is not None] == []


def test_every_order_id_in_payments_refers_to_an_emitted_order():
    events = simulate(orders=3, seed=50, fraud_rate=0.5, merchants=5)
    placed = {e.value["order_id"] for e in events if e.topic == "orders"}
    assert {e.value["order_id"] for e in events if e.topic == "payments"} - {None} <= placed


def test_wallet_traffic_has_its_patterns_labels_and_leaves_the_orders_as_they_were():
    plain = simulate(orders=300, seed=5)
    both = simulate(orders=300, seed=5, wallet_payments=1500, wallet_fraud_rate=0.1)
    orders = [e.value for e in plain if e.topic == "orders"]
    assert [e.value for e in both if e.topic == "orders"] == orders  # its own random stream
    wallet = [e for e in both if e.topic == "payments" and e.value["kind"] in WALLET_KINDS]
    assert len(wallet) >= 1500
    assert {e.fraud_pattern for e in wallet} >= {None, *WALLET_PATTERNS}
    kinds = {e.value["kind"] for e in wallet}
    assert kinds == set(WALLET_KINDS)
    assert all(e.value["counterparty_account_id"] for e in wallet if e.value["kind"] == "TRANSFER")
    labels = {
        e.value["order_id"]: e.value["kind"]
        for e in both
        if e.topic == "outcomes" and e.value.get("subject") == "PAYMENT"
    }
    frauds = [e for e in wallet if e.fraud_pattern]
    assert all(
        labels.get(e.value["payment_id"]) in ("FRAUD_CONFIRMED", "CHARGEBACK")
        for e in frauds
        if e.time < END - timedelta(days=10)
    )
    assert "LEGIT_CONFIRMED" in labels.values()
    # every payer and receiver has an account opened and verified before it pays
    verified = {
        e.value["account_id"]: e.time
        for e in both
        if e.topic == "accounts" and e.value["kind"] == "KYC_VERIFIED"
    }
    for e in wallet:
        assert verified[e.value["account_id"]] < e.time


def test_campaign_traffic_farms_tickets_skips_logins_and_hits_the_cap():
    events = simulate(orders=3000, seed=7, fraud_rate=0.05, campaign=True)
    orders = [e for e in events if e.topic == "orders"]
    farmed = [e for e in orders if e.fraud_pattern == "ticket_farming"]
    assert farmed and all(
        500 <= e.value["amount"] < 560 and e.value["payment_method"] == "CARD" for e in farmed
    )
    people = {
        f"{p.email_user}@{p.email_domain}": p.person_id
        for p in Simulator(SimConfig(end=END, seed=7, orders=3000)).people
    }

    def buyers_never_logged_in(stream: list[SimEvent]) -> int:
        logged_in = {e.value["account_id"] for e in stream if e.topic == "logins"}
        bought = {
            people[e.value["buyer"]["email"]]
            for e in stream
            if e.topic == "orders" and not e.fraud_pattern and e.value["buyer"]["email"] in people
        }
        return len(bought - logged_in)

    assert buyers_never_logged_in(events) > 0  # members who never log in
    assert buyers_never_logged_in(simulate(orders=3000, seed=7, fraud_rate=0.05)) == 0
    per_day: dict[tuple[str, str], int] = {}
    for e in orders:
        if e.value["payment_method"] == "CARD" and not e.fraud_pattern:
            key = (e.value["buyer"]["email"], e.value["event_time"][:10])
            per_day[key] = per_day.get(key, 0) + 1
    assert max(per_day.values()) >= 4  # heavy users: a fourth card purchase in a day
    plain = simulate(orders=300, seed=5)
    assert simulate(orders=300, seed=5, campaign=False) == plain  # off: the seed's events
