"""End to end on the real broker: one decision per valid order, every invalid event in the DLQ."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest

from streams.clients import prepare
from streams.dlq import REASON, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from streams.records import WALLET_KINDS
from tests.conftest import run_cli
from tests.integration.conftest import collect, produce, simulated, simulated_backlog

pytestmark = pytest.mark.integration


def order_json(order_id: str, merchant_id: str = "m0000", amount: int = 4980) -> dict:
    return {
        "order_id": order_id,
        "merchant_id": merchant_id,
        "event_time": datetime.now(UTC).isoformat(),
        "amount": amount,
        "payment_method": "CARD",
        "buyer": {
            "name": "山田 太郎",
            "email": "taro.yamada@example.co.jp",
            "phone": "090-1234-5678",
            "address": {"postal_code": "100-0001", "street": "千代田1-1"},
        },
    }


def invalid_orders(registry) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(topic, key, value, expected DLQ reason) for every kind of bad input."""
    good = prepare(registry, "orders", order_json("o-bad-0")).value
    payment = prepare(
        registry,
        "payments",
        {"payment_id": "pay-x", "event_time": 1790000000000, "kind": "PAY", "amount": 100},
    ).value
    negative = registry.encode(
        "Order", registry.from_json("Order", order_json("o-bad-1")) | {"amount": -5}
    )
    missing = order_json("o-bad-2")
    del missing["buyer"]
    wrong = order_json("o-bad-3") | {"amount": "4980"}
    enum = order_json("o-bad-4") | {"payment_method": "BITCOIN"}
    huge = order_json("o-bad-5")
    huge["buyer"]["name"] = "x" * 70_000
    return [
        ("orders", b"k1", b"\x00\xffnot an event", "undecodable"),
        ("orders", b"k2", payment, "schema_mismatch"),
        ("orders", b"k3", good[:2] + b"\x01" * 8 + good[10:], "unknown_schema"),
        ("orders", b"k4", good[:40], "corrupt_avro"),
        ("orders", b"o-bad-1", negative, "amount_not_positive"),
        ("orders", b"o-bad-2", orjson.dumps(missing), "missing_field"),
        ("orders", b"o-bad-3", orjson.dumps(wrong), "wrong_type"),
        ("orders", b"o-bad-4", orjson.dumps(enum), "unknown_enum_symbol"),
        ("orders", b"o-bad-5", orjson.dumps(huge), "oversized"),
        ("orders", b"k6", b'{"order_id": ', "invalid_json"),
        ("orders", b"k7", None, "undecodable"),
        ("payments", b"k8", orjson.dumps({"payment_id": "p", "kind": "PAY"}), "missing_field"),
        ("logins", b"k9", b"\xc3\x01garbage", "unknown_schema"),
    ]


def test_every_valid_order_one_decision_every_invalid_event_in_dlq(env, worker, registry):
    events = simulated(400)
    valid = [prepare(registry, e.topic, e.value) for e in events]
    order_ids = {e.value["order_id"] for e in events if e.topic == "orders"}
    order_ids.add("o-unknown-merchant")
    valid.append(prepare(registry, "orders", order_json("o-unknown-merchant", "m-nobody")))
    bad = invalid_orders(registry)

    worker.start()
    produce(env, [(p.topic, p.key, p.value) for p in valid])
    sent_bad = produce(env, [(t, k, v) for t, k, v, _ in bad])

    payment_ids = {  # the simulated wallet orders' payments are decided too (subject PAYMENT)
        e.value["payment_id"]
        for e in events
        if e.topic == "payments" and e.value["kind"] in WALLET_KINDS
    }
    assert payment_ids
    decisions = collect(env, "decisions", len(order_ids) + len(payment_ids), worker=worker)
    dead = collect(env, "dlq", len(bad), worker=worker)

    decoded = [registry.decode("Decision", m.value()) for m in decisions]
    decided = Counter((d["subject"], d["order_id"]) for d in decoded)
    expected = {("ORDER", o) for o in order_ids} | {("PAYMENT", p) for p in payment_ids}
    assert set(decided) == expected
    assert set(decided.values()) == {1}
    by_key = {d["order_id"]: m for d, m in zip(decoded, decisions, strict=True)}
    unknown = registry.decode("Decision", by_key["o-unknown-merchant"].value())
    assert "MERCHANT_UNKNOWN" in unknown["reasons"] and unknown["decision"] == "REVIEW"

    letters = {
        (h[SOURCE_TOPIC].decode(), int(h[SOURCE_PARTITION]), int(h[SOURCE_OFFSET])): h[
            REASON
        ].decode()
        for h in (dict(m.headers()) for m in dead)
    }
    for record, (_, _, _, reason) in zip(sent_bad, bad, strict=True):
        assert letters[(record.topic, record.partition, record.offset)] == reason
    assert len(dead) == len(bad)  # nothing else was dead-lettered
    assert worker.errors() == []


def test_decisions_carry_no_pii(env, worker, registry):
    orders, sendable, ids = simulated_backlog(registry, 100, seed=11)
    worker.start()
    produce(env, sendable)
    blob = b"".join(m.value() for m in collect(env, "decisions", len(ids), worker=worker)).decode(
        "utf-8", "replace"
    )
    for e in orders:
        if e.topic == "orders":
            buyer = e.value["buyer"]
            for secret in (
                buyer["name"],
                buyer["email"],
                buyer["phone"],
                buyer["address"]["street"],
            ):
                assert secret not in blob


def test_decisions_cli_prints_json_lines(env, worker, registry):
    _, sendable, ids = simulated_backlog(registry, 50, seed=3)
    worker.start()
    produce(env, sendable)
    collect(env, "decisions", len(ids), worker=worker)
    out = run_cli(env, "decisions", "--json")
    assert out.returncode == 0, out.stderr
    lines = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == len(ids)
    assert {line["decision"] for line in lines} <= {"APPROVE", "REVIEW", "DECLINE"}
