"""Policies, credit exposure and holds on the real broker and Redis, with real workers."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from itertools import count
from typing import Any

import pytest
import redis

from agents.policy import DEFAULT_POLICY_SET, load_policy_yaml
from streams.clients import prepare
from streams.tools import policy_admin
from tests.integration.conftest import Worker, collect, produce, simulated

pytestmark = pytest.mark.integration

STRICT = """
name: card-only
default:
  allowed_methods: [CARD]
"""
CANDIDATE = """
name: candidate
default:
  review_score: 0.01
"""
CREDIT = """
name: credit
default:
  exposure_limit: 50000
"""
DYNAMIC = """
name: dynamic
default:
  credit_limit: {first_order: 20000, base: 30000, per_on_time: 10000, per_late: -20000,
                 per_unpaid: -5000}
"""


def send(registry, topic: str, value: dict[str, Any]) -> tuple:
    p = prepare(registry, topic, value)
    return (p.topic, p.key, p.value)


def test_a_policy_applied_while_orders_flow_takes_effect_without_restart(env, registry, worker):
    events = simulated(3000, seed=31)
    merchants = [send(registry, e.topic, e.value) for e in events if e.topic == "merchants"]
    orders = [e.value for e in events if e.topic == "orders"]
    worker.start()
    produce(env, merchants + [send(registry, "orders", o) for o in orders[:1500]])
    collect(env, "decisions", 300, worker=worker)  # mid-stream
    strict = load_policy_yaml(STRICT)
    policy_admin.publish(env, "active", strict)
    policy_admin.publish(env, "shadow", load_policy_yaml(CANDIDATE))
    produce(env, [send(registry, "orders", o) for o in orders[1500:]])
    msgs = collect(env, "decisions", len(orders), timeout=180, worker=worker)
    decisions = [registry.decode("Decision", m.value()) for m in msgs]

    decided = Counter(d["order_id"] for d in decisions)
    assert set(decided) == {o["order_id"] for o in orders} and max(decided.values()) == 1
    versions = Counter(d["policy_version"] for d in decisions)
    assert set(versions) == {DEFAULT_POLICY_SET.version, strict.version}
    assert versions[strict.version] >= 1500, "every order produced after the switch"
    for d in decisions:
        if d["policy_version"] == strict.version:
            method = next(o for o in orders if o["order_id"] == d["order_id"])["payment_method"]
            if method != "CARD":
                assert (d["decision"], d["reasons"][0]) == ("DECLINE", "METHOD_NOT_ALLOWED")
    # per partition, the switch happens once: no decision with the old policy after the new one
    seen_new: set[int] = set()
    for m, d in zip(msgs, decisions, strict=True):
        if d["policy_version"] == strict.version:
            seen_new.add(m.partition())
        else:
            assert m.partition() not in seen_new, "the old policy came back"
    # the shadow candidate ran beside it: traces carry its decision, only the active one emitted
    shadow_version = load_policy_yaml(CANDIDATE).version
    report = policy_admin.shadow_report(env, registry, shadow_version)
    assert sum(report.values()) >= 1000
    assert any(active != shadow for active, shadow in report), "the candidate disagrees somewhere"
    assert worker.errors() == []


class Person:
    """One simulated buyer placing orders of our choosing, now."""

    def __init__(self, registry, seed: int) -> None:
        events = simulated(40, seed=seed)
        self.registry = registry
        self.merchants = [
            send(registry, e.topic, e.value) for e in events if e.topic == "merchants"
        ]
        self.template = next(e.value for e in events if e.topic == "orders")
        self.ids = count(1)

    def order(
        self, amount: int, method: str = "DEFERRED", buyer: dict | None = None
    ) -> tuple[str, tuple]:
        """An order now; `buyer` writes the person another way (a spelling variation)."""
        order_id = f"{self.template['order_id']}-x{next(self.ids)}"
        value = {
            **self.template,
            "order_id": order_id,
            "amount": amount,
            "payment_method": method,
            "event_time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "items": [{"sku": "sku-1", "category": "x", "unit_price": amount, "quantity": 1}],
            "shipping": None,
        }
        if buyer is not None:
            value["buyer"] = buyer
        return order_id, send(self.registry, "orders", value)

    def repayment(self, order_id: str, amount: int) -> tuple:
        return send(
            self.registry,
            "payments",
            {
                "payment_id": f"pay-{order_id}",
                "order_id": order_id,
                "event_time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "kind": "REPAYMENT",
                "amount": amount,
            },
        )

    def outcome(self, order_id: str, kind: str) -> tuple:
        return send(
            self.registry,
            "outcomes",
            {
                "order_id": order_id,
                "event_time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "kind": kind,
                "source": "COLLECTIONS",
                "note": None,
            },
        )


def decide_one(env, registry, worker, decided: list, message: tuple) -> dict[str, Any]:
    """Send one order and wait for its decision (decisions of all partitions come back)."""
    produce(env, [message])
    msgs = collect(env, "decisions", len(decided) + 1, worker=worker)
    decided[:] = [registry.decode("Decision", m.value()) for m in msgs]
    return next(d for d in decided if d["order_id"].encode() == message[1])


def wait_metric(worker: Worker, name: str, at_least: float, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while worker.metrics().get(name, 0.0) < at_least:
        assert time.monotonic() < deadline, f"{name} never reached {at_least}"
        time.sleep(0.3)


def test_exposure_across_approve_repay_approve(env, registry, worker):
    person = Person(registry, seed=32)
    policy_admin.publish(env, "active", load_policy_yaml(CREDIT))
    produce(env, person.merchants)
    worker.start()
    worker.wait_for("deciding with policy credit-")
    decided: list = []
    first_id, first = person.order(30_000)
    assert decide_one(env, registry, worker, decided, first)["decision"] == "APPROVE"
    _, second = person.order(30_000)  # 30,000 outstanding + 30,000 > 50,000
    refused = decide_one(env, registry, worker, decided, second)
    assert (refused["decision"], refused["reasons"][0]) == ("DECLINE", "EXPOSURE_OVER_LIMIT")
    _, by_card = person.order(30_000, "CARD")  # exposure is deferred payment only
    assert decide_one(env, registry, worker, decided, by_card)["decision"] == "APPROVE"
    produce(env, [person.repayment(first_id, 30_000)])
    wait_metric(worker, 'shinsa_settlements_total{event="repaid",result="applied"}', 1)
    _, third = person.order(30_000)
    assert decide_one(env, registry, worker, decided, third)["decision"] == "APPROVE"
    assert len({d["identity_id"] for d in decided}) == 1
    assert worker.errors() == []


def test_an_unpaid_outcome_holds_the_identity_until_repaid(env, registry, worker):
    person = Person(registry, seed=33)
    produce(env, person.merchants)
    worker.start()
    decided: list = []
    first_id, first = person.order(8_000)
    assert decide_one(env, registry, worker, decided, first)["decision"] == "APPROVE"
    produce(env, [person.outcome(first_id, "UNPAID")])
    wait_metric(worker, 'shinsa_settlements_total{event="unpaid",result="applied"}', 1)
    _, second = person.order(2_000, "CARD")
    held = decide_one(env, registry, worker, decided, second)
    assert (held["decision"], held["reasons"][0]) == ("DECLINE", "IDENTITY_HELD_UNPAID")
    assert worker.metrics()["shinsa_identities_held"] in (0.0, 1.0)  # measured every 15 s
    produce(env, [person.repayment(first_id, 8_000)])
    wait_metric(worker, 'shinsa_settlements_total{event="repaid",result="applied"}', 1)
    _, third = person.order(2_000, "CARD")
    assert decide_one(env, registry, worker, decided, third)["decision"] == "APPROVE"
    assert worker.errors() == []


def test_spelling_variations_share_one_account_once_linked(env, registry, worker):
    """Two variations of one buyer each take a deferred order, apart (separate identities);
    a third order links them: the merge moves the absorbed identity's account and history into
    the survivor's, in the graph's script, so that order already sees the combined balance,
    and a repayment of the absorbed identity's order still reaches it."""
    person = Person(registry, seed=34)
    policy_admin.publish(env, "active", load_policy_yaml(CREDIT))  # exposure limit 50,000
    produce(env, person.merchants)
    worker.start()
    worker.wait_for("deciding with policy credit-")
    buyer = person.template["buyer"]
    phone_only = {**buyer, "email": None, "birth_date": None, "name_kana": None}
    elsewhere = {**buyer["address"], "street": "大手町9-9-9", "building": None}
    mail_only = {
        **buyer,
        "name": "別名 義",
        "name_kana": None,
        "phone": None,
        "birth_date": None,
        "address": elsewhere,
    }
    linked = {**buyer, "birth_date": None, "name_kana": None}

    def order_of(who: dict, amount: int) -> tuple[str, tuple]:
        return person.order(amount, buyer=who)

    decided: list = []
    first_id, first = order_of(phone_only, 30_000)
    a = decide_one(env, registry, worker, decided, first)
    _, second = order_of(mail_only, 30_000)
    b = decide_one(env, registry, worker, decided, second)
    assert (a["decision"], b["decision"]) == ("APPROVE", "APPROVE")
    assert a["identity_id"] != b["identity_id"], "two identities before the link"
    _, third = order_of(linked, 1_000)
    both = decide_one(env, registry, worker, decided, third)
    assert (both["decision"], both["reasons"][0]) == ("DECLINE", "EXPOSURE_OVER_LIMIT")
    survivor = both["identity_id"]
    absorbed = ({a["identity_id"], b["identity_id"]} - {survivor}).pop()
    client = redis.Redis.from_url(env.redis_url)
    ns = env.identity_namespace
    account = client.hgetall(f"{ns}:acct:{survivor}")
    fields = sorted(k.decode() for k in account)
    # both open orders, each with the credit band it was approved in, moved with the merge
    assert fields == sorted(f"{kind}:{d['order_id']}" for d in (a, b) for kind in ("b", "o"))
    assert not client.exists(f"{ns}:acct:{absorbed}") and not client.exists(f"{ns}:vel:{absorbed}")
    assert client.zcard(f"{ns}:vel:{survivor}") == 3  # both histories and the third order
    produce(env, [person.repayment(first_id, 30_000)])  # routed to the identity it had then
    wait_metric(worker, 'shinsa_settlements_total{event="repaid",result="applied"}', 1)
    _, fourth = order_of(linked, 15_000)  # 30,000 outstanding + 15,000 ≤ 50,000
    assert decide_one(env, registry, worker, decided, fourth)["decision"] == "APPROVE"
    assert worker.errors() == []


def test_a_credit_limit_grows_with_on_time_repayment_and_shrinks_with_a_late_one(
    env, registry, worker
):
    person = Person(registry, seed=35)
    policy_admin.publish(env, "active", load_policy_yaml(DYNAMIC))
    produce(env, person.merchants)
    worker.start()
    worker.wait_for("deciding with policy dynamic-")
    decided: list = []

    def decide(amount: int) -> tuple[str, dict[str, Any]]:
        order_id, message = person.order(amount)
        return order_id, decide_one(env, registry, worker, decided, message)

    _, first = decide(25_000)  # a first order: the first-order limit, 20,000
    assert (first["decision"], first["reasons"][0]) == ("DECLINE", "CREDIT_LIMIT")
    small_id, small = decide(15_000)
    assert small["decision"] == "APPROVE"
    produce(env, [person.repayment(small_id, 15_000)])  # on time: 30,000 + 10,000
    wait_metric(worker, 'shinsa_settlements_total{event="repaid",result="applied"}', 1)
    bigger_id, bigger = decide(35_000)
    assert bigger["decision"] == "APPROVE"
    produce(env, [person.outcome(bigger_id, "UNPAID")])
    wait_metric(worker, 'shinsa_settlements_total{event="unpaid",result="applied"}', 1)
    produce(env, [person.repayment(bigger_id, 35_000)])  # late: 40,000 - 20,000 - 5,000
    wait_metric(worker, 'shinsa_settlements_total{event="repaid",result="applied"}', 2)
    _, after = decide(16_000)
    assert (after["decision"], after["reasons"][0]) == ("DECLINE", "CREDIT_LIMIT")
    _, within = decide(15_000)
    assert within["decision"] == "APPROVE"
    assert worker.errors() == []
