"""agents/policy.py: policy files validated with line numbers, merged per merchant, lists with
their precedence; `shinsa policy` refuses bad files clearly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.decide import ModelOpinion, Signals, decide_order
from agents.enrich import enrich_order
from agents.policy import (
    DEFAULT_POLICY_SET,
    PolicyError,
    list_hash,
    load_policy_yaml,
    match_lists,
    order_list_keys,
    policy_from_json,
)
from streams.records import Merchant, Order
from tests.conftest import run_cli
from tests.unit.conftest import make_order

SECRET = b"k"
PHONE_HASH = list_hash(SECRET, "phone", "090-1234-5678")

GOOD = f"""
name: spring
default:
  review_score: 0.4
  velocity_caps: {{count_1h: 3}}
merchants:
  m0001:
    allowed_methods: [CARD]
    review_score: 0.3
block:
  - {{kind: phone, hash: {PHONE_HASH}, overridable: false, note: ring}}
  - {{kind: identity, value: i13}}
allow:
  - {{kind: identity, value: i7}}
"""


def order(method: str = "DEFERRED", amount: int = 5_000, phone: str | None = None) -> Order:
    return make_order(amount, method, when=datetime(2026, 11, 20, tzinfo=UTC), phone=phone)


def decide(o: Order, identity: str = "i1", signals: Signals | None = None, text: str = GOOD):
    policies = load_policy_yaml(text)
    m = Merchant("m0001", "店", "FOOD", "STANDARD", datetime(2026, 1, 1, tzinfo=UTC), "ACTIVE")
    hits = match_lists(policies, order_list_keys(o, identity, SECRET))
    base = signals or Signals()
    enriched = enrich_order(o, {"m0001": m}, {"identity_id": identity, "orders": 2})
    return decide_order(
        enriched,
        policies.for_merchant(o.merchant_id),
        None,
        Signals(base.velocity, base.outstanding, base.held, hits),
    )


def test_merchant_overrides_lay_over_the_default_field_by_field():
    p = load_policy_yaml(GOOD)
    assert p.default.review_score == 0.4 and p.default.velocity_caps == {"count_1h": 3}
    m = p.for_merchant("m0001")
    assert (m.review_score, m.allowed_methods) == (0.3, ("CARD",))
    assert m.velocity_caps == {"count_1h": 3}  # inherited
    assert p.for_merchant("m9999") is p.default
    assert p.version.startswith("spring-") and p.version != DEFAULT_POLICY_SET.version


def test_the_published_form_round_trips_to_the_same_version():
    p = load_policy_yaml(GOOD)
    assert policy_from_json(p.canonical()).version == p.version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\ndefault:\n  review_score: 1.5\n", ":3: default.review_score: Input should be"),
        (
            "name: x\nmerchants:\n  m1:\n    exposure_limt: 5\n",
            ":4: merchants.m1.exposure_limt: unknown",
        ),
        ("name: x\ndefault:\n  allowed_methods: [BITCOIN]\n", ":3: default.allowed_methods.0"),
        (
            "name: x\nblock:\n  - kind: phone\n    hash: 090-1234-5678\n",
            ":3: block.0: Value error, a phone entry takes `hash:`",
        ),
        ("name: x\ndefault:\n  review_score: 0.9\n  decline_score: 0.5\n", ":2: default: Value"),
        ("name: bad name!\n", ":1: name: String should match"),
        ("default: {}\n", ": name: Field required"),
        ("name: x\ndefault: [1, 2\n", ":3: not valid YAML"),
    ],
)
def test_an_invalid_file_names_the_line_and_the_field(text, expected):
    with pytest.raises(PolicyError) as caught:
        load_policy_yaml(text, "p.yaml")
    assert expected in str(caught.value)


def test_thresholds_are_checked_after_merging_with_the_default():
    text = "name: x\ndefault: {decline_score: 0.6}\nmerchants:\n  m1: {review_score: 0.7}\n"
    with pytest.raises(PolicyError, match=r"merchant m1: review_score 0\.7 is above"):
        load_policy_yaml(text)


def test_lists_hold_keyed_hashes_of_normalized_values():
    assert list_hash(SECRET, "phone", "０９０（１２３４）５６７８") == PHONE_HASH
    assert list_hash(SECRET, "phone", "090-1234-5678") != list_hash(
        b"other", "phone", "090-1234-5678"
    )
    assert list_hash(SECRET, "email", "A.B+x@GMAIL.com") == list_hash(
        SECRET, "email", "ab@gmail.com"
    )
    assert list_hash(SECRET, "phone", "not a phone") is None


def test_precedence_hard_block_beats_allow_beats_soft_block_beats_score():
    hard = decide(order(method="CARD", phone="090-1234-5678"), identity="i7")
    assert hard.decision == "DECLINE" and hard.reasons[0] == "BLOCK_LISTED_HARD"
    allowed = decide(order(method="DEFERRED", amount=600_000), identity="i7")  # over every limit
    assert (allowed.decision, allowed.reasons) == ("APPROVE", ("ALLOW_LISTED",))
    assert "AMOUNT_OVER_DECLINE_LIMIT" in allowed.fired  # kept for the trace
    soft = decide(order(method="CARD"), identity="i13")
    assert soft.decision == "DECLINE" and "BLOCK_LISTED" in soft.reasons


def test_limits_of_the_merchant_policy():
    assert decide(order(method="DEFERRED")).reasons[0] == "METHOD_NOT_ALLOWED"
    fast = Signals(velocity={"velocity_count_1h": 4.0})
    assert decide(order(method="CARD"), signals=fast).reasons[0] == "VELOCITY_OVER_CAP"
    assert decide(order(method="CARD")).decision == "APPROVE"


def test_exposure_and_the_unpaid_hold():
    text = "name: x\ndefault: {exposure_limit: 50000}\n"
    ok = decide(order(amount=20_000), signals=Signals(outstanding=30_000), text=text)
    assert ok.decision == "APPROVE"
    over = decide(order(amount=20_001), signals=Signals(outstanding=30_000), text=text)
    assert (over.decision, over.reasons[0]) == ("DECLINE", "EXPOSURE_OVER_LIMIT")
    card = decide(order("CARD", 20_001), signals=Signals(outstanding=30_000), text=text)
    assert card.decision == "APPROVE"  # exposure counts deferred payment only
    held = decide(order("CARD", 1_000), signals=Signals(held=True), text=text)
    assert (held.decision, held.reasons[0]) == ("DECLINE", "IDENTITY_HELD_UNPAID")


def test_policy_apply_refuses_an_invalid_file_without_a_traceback(tmp_path):
    bad = tmp_path / "policy.yaml"
    bad.write_text("name: x\nmerchants:\n  m1:\n    review_score: 2\n", encoding="utf-8")
    result = run_cli(None, "policy", "apply", str(bad), "--dry-run")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{bad}:4: merchants.m1.review_score" in result.stderr
    missing = run_cli(None, "policy", "apply", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_a_redelivered_order_is_not_counted_against_its_own_exposure():
    from agents.credit import apply_event, empty_account
    from agents.model import ModelState
    from agents.screen import screen_order

    o = order(amount=60_000)
    m = Merchant("m0001", "店", "FOOD", "STANDARD", datetime(2026, 1, 1, tzinfo=UTC), "ACTIVE")
    policies = load_policy_yaml("name: x\ndefault: {exposure_limit: 100000, deferred_cap: 90000}\n")

    def decide_with(account):
        return screen_order(
            o,
            identity={"identity_id": "i1", "orders": 2},
            attributes={},
            ingest_ms=0.0,
            now=datetime(2026, 11, 20, tzinfo=UTC),
            merchants={"m0001": m},
            policies=policies,
            history=[],
            account=account,
            model=ModelState(),
            warm=False,
            secret=SECRET,
        ).decision["decision"]

    first = decide_with(empty_account())
    assert first == "APPROVE"
    opened = apply_event(empty_account(), "approved", o.order_id, o.amount)
    assert decide_with(opened) == first  # the same order, delivered again after a crash
    other = apply_event(empty_account(), "approved", "o-other", 60_000)
    assert decide_with(other) == "DECLINE"  # another open order does count


# ---------------------------------------------------------------- dynamic credit limits

LIMITS = {
    "first_order": 20_000,
    "base": 30_000,
    "per_on_time": 10_000,
    "per_late": -20_000,
    "per_unpaid": -50_000,
    "max": 300_000,
}


def test_a_credit_limit_grows_with_on_time_repayments_and_shrinks_with_late_and_unpaid():
    from agents.decide import credit_limit_of

    assert credit_limit_of(LIMITS, {}) == 20_000  # a first order
    assert credit_limit_of(LIMITS, {"on_time": 1}) == 40_000
    assert credit_limit_of(LIMITS, {"on_time": 3}) == 60_000
    assert credit_limit_of(LIMITS, {"on_time": 1, "late": 1}) == 20_000
    assert credit_limit_of(LIMITS, {"on_time": 2, "unpaid": 1}) == 0  # never below 0
    assert credit_limit_of(LIMITS, {"on_time": 100}) == 300_000  # nor above max


def test_the_repayment_history_follows_the_account_events():
    from agents.credit import apply_event, empty_account

    account = apply_event(empty_account(), "approved", "o1", 10_000)
    account = apply_event(account, "repaid", "o1", 10_000, hours=72)
    assert account["history"] == {
        "on_time": 1,
        "late": 0,
        "unpaid": 0,
        "pay_hours": 72,
        "repaid_yen": 10_000,
    }
    account = apply_event(account, "approved", "o2", 5_000)
    account = apply_event(account, "unpaid", "o2", 5_000)
    account = apply_event(account, "unpaid", "o2", 5_000)  # reported twice: counted once
    account = apply_event(account, "repaid", "o2", 5_000, hours=900)
    assert account["history"] == {
        "on_time": 1,
        "late": 1,
        "unpaid": 1,
        "pay_hours": 972,
        "repaid_yen": 15_000,
    }
    account = apply_event(account, "repaid", "o2", 5_000, hours=5)  # again: no longer open
    assert account["history"]["pay_hours"] == 972
    before = dict(account["history"])
    account = apply_event(account, "repaid", "o9", 10_000, hours=3)  # an order it never had
    assert account["history"] == before


def test_credit_limit_in_a_policy_replaces_the_exposure_limit_and_a_merchant_can_change_it():
    from agents.decide import Signals, decide_order

    policies = load_policy_yaml(
        "name: credit\n"
        "default:\n"
        "  deferred_cap: 200000\n"
        "  credit_limit: {first_order: 20000, base: 30000, per_on_time: 10000}\n"
        "merchants:\n"
        "  m0002:\n"
        "    credit_limit: {first_order: 50000}\n"
    )
    policy = policies.for_merchant("m0001")
    assert policy.credit_limit["per_unpaid"] == -50_000  # the model's defaults fill the rest
    m = Merchant("m0001", "店", "FOOD", "STANDARD", datetime(2026, 1, 1, tzinfo=UTC), "ACTIVE")
    enriched = enrich_order(order(amount=25_000), {"m0001": m})
    opinion = ModelOpinion(0.05, "cold", False, ())

    def verdict(policy, history):
        return decide_order(enriched, policy, opinion, Signals(repayments=history))

    refused = verdict(policy, {})
    assert (refused.decision, refused.reasons[0]) == ("DECLINE", "CREDIT_LIMIT")
    assert verdict(policy, {"on_time": 1}).decision == "APPROVE"  # 25,000 ≤ 40,000
    assert verdict(policies.for_merchant("m0002"), {}).decision == "APPROVE"
