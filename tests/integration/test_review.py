"""The review loop and the audit trail on the real broker and Redis: `shinsa review list` shows
the orders decided REVIEW (buyer masked), `review resolve` publishes a verdict the worker's
learner learns from, and `shinsa explain` prints a decision's trace."""

from __future__ import annotations

import copy
import subprocess
import unicodedata

import orjson
import pytest

from streams.clients import prepare
from streams.settings import Settings
from tests.conftest import run_cli
from tests.integration.conftest import Worker, collect, produce, simulated
from tests.integration.test_model import wait_for_metric

pytestmark = pytest.mark.integration

HIGH_AMOUNT = 150_000  # above the review limit (100,000 yen), below the decline limit


def shinsa(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return run_cli(settings, *args)


def high_amount_orders(orders: list, merchants: dict[str, dict], n: int) -> list[dict]:
    """Copies of simulated orders of active merchants at 150,000 yen, paid by card (a deferred
    payment that large would be declined by the deferred cap instead of reviewed)."""
    out = []
    bases = [o for o in orders if merchants[o.value["merchant_id"]]["status"] == "ACTIVE"]
    for i, base in enumerate(bases[:n]):
        value = copy.deepcopy(base.value)
        amount = HIGH_AMOUNT + 1000 * i
        value |= {"order_id": f"o-high-{i}", "amount": amount, "payment_method": "CARD"}
        value["items"] = [
            {"sku": "sku-high", "category": "misc", "unit_price": amount, "quantity": 1}
        ]
        out.append(value)
    return out


def pii_of(order: dict) -> list[str]:
    buyer = order["buyer"]
    digits = "".join(c for c in unicodedata.normalize("NFKC", buyer["phone"]) if c.isdigit())
    return [buyer["name"], buyer["name_kana"], buyer["email"], buyer["phone"], digits]


def review_list(settings: Settings) -> list[dict]:
    result = shinsa(settings, "review", "list", "--json", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def test_review_list_resolve_and_explain(env, worker: Worker, registry):
    events = simulated(60, seed=31, fraud_rate=0.0)
    merchants = {e.value["merchant_id"]: e.value for e in events if e.topic == "merchants"}
    orders = [e for e in events if e.topic == "orders"]
    high = high_amount_orders(orders, merchants, 4)
    by_id = {o["order_id"]: o for o in [*(e.value for e in orders), *high]}

    worker.start()
    send = [prepare(registry, "merchants", m) for m in merchants.values()]
    produce(env, [(p.topic, p.key, p.value) for p in send])
    # every merchant known first: an unknown merchant is itself a reason to review
    wait_for_metric(worker, "shinsa_merchants_known", len(merchants))
    send = [prepare(registry, "orders", o) for o in by_id.values()]
    produce(env, [(p.topic, p.key, p.value) for p in send])
    decided = {
        d["order_id"]: d
        for d in (
            registry.decode("Decision", m.value())
            for m in collect(env, "decisions", len(by_id), worker=worker)
        )
    }
    reviewed = {oid for oid, d in decided.items() if d["decision"] == "REVIEW"}
    for order in high:
        assert decided[order["order_id"]]["decision"] == "REVIEW"
        assert "AMOUNT_OVER_REVIEW_LIMIT" in decided[order["order_id"]]["reasons"]

    # the queue is exactly the REVIEW decisions, oldest first, with the buyer masked
    rows = review_list(env)
    assert {r["order_id"] for r in rows} == reviewed
    assert [r["decided_at"] for r in rows] == sorted(r["decided_at"] for r in rows)
    for r in rows:
        order = by_id[r["order_id"]]
        assert r["order_found"] and r["amount"] == order["amount"]
        assert r["phone"] == "***-" + pii_of(order)[-1][-4:]
        local, _, domain = unicodedata.normalize("NFKC", order["buyer"]["email"]).rpartition("@")
        assert r["email"] == f"{local[0]}***@{domain.lower()}"
    table = shinsa(env, "review", "list")
    assert table.returncode == 0, table.stderr
    assert f"{len(reviewed)} orders awaiting review" in table.stdout
    for oid in reviewed:
        assert oid in table.stdout
        assert not [p for p in pii_of(by_id[oid]) if p and p in table.stdout + str(rows)]

    # a verdict: published, learned by the worker's learner, and the order leaves the queue
    target = rows[0]["order_id"]
    done = shinsa(env, "review", "resolve", target, "--verdict", "fraud", "--note", "card stolen")
    assert done.returncode == 0, done.stderr
    assert f"published FRAUD_CONFIRMED (source REVIEWER) for order {target}" in done.stdout
    assert f"to {env.topic('outcomes')} (partition " in done.stdout
    wait_for_metric(worker, 'shinsa_labels_total{result="learned"}', 1, timeout=30)
    assert {r["order_id"] for r in review_list(env)} == reviewed - {target}
    # a second verdict corrects the first: said so, and the learner corrects the model
    again = shinsa(env, "review", "resolve", target, "--verdict", "legit")
    assert again.returncode == 0, again.stderr
    assert "already had the verdict FRAUD_CONFIRMED" in again.stderr
    wait_for_metric(worker, 'shinsa_labels_total{result="corrected"}', 1, timeout=30)

    # refused: an order decided automatically (without --force), an unknown order
    approved = next(oid for oid, d in decided.items() if d["decision"] == "APPROVE")
    refused = shinsa(env, "review", "resolve", approved, "--verdict", "legit")
    assert refused.returncode == 1 and "decided APPROVE, not REVIEW" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    unknown = shinsa(env, "review", "resolve", "o-never-seen", "--verdict", "fraud")
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert "'o-never-seen' is unknown" in unknown.stderr

    # the decision's trace: policy version, reasons with their meaning, thresholds, features
    explained = high[1]["order_id"]
    decision = decided[explained]
    shown = shinsa(env, "explain", explained)
    assert shown.returncode == 0, shown.stderr
    for text in (
        decision["policy_version"],
        "AMOUNT_OVER_REVIEW_LIMIT",
        "Order amount is above the policy's review limit.",
        "review_amount",
        "100,000",
        f"{HIGH_AMOUNT + 1000:,}",
        "velocity_count_1h",
    ):
        assert text in shown.stdout, text
    trace = orjson.loads(shinsa(env, "explain", explained, "--json").stdout)
    assert trace["order_id"] == explained and trace["decision"] == "REVIEW"
    assert trace["policy_version"] == decision["policy_version"]
    assert trace["reasons"] == decision["reasons"]
    assert not [p for p in pii_of(by_id[explained]) if p in str(trace)]
    missing = shinsa(env, "explain", "o-never-seen")
    assert missing.returncode == 1 and "no decision trace" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert worker.errors() == []
