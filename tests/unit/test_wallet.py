"""Wallet screening without a broker: features from event time only, the rules a wallet fraud
team relies on (mule fan-in, takeover, cash-out, self-transfers, split bills, KYC and daily
limits), and the batch core (each payment sees the batch's earlier ones; a poison payment costs
only itself)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents import reasons
from agents.decide import ModelOpinion
from agents.model import ModelState
from agents.policy import DEFAULT_POLICY_SET, PolicyError, load_policy_yaml
from agents.screen import Outputs
from agents.wallet import PaymentCandidate, PaymentRules, screen_payments
from agents.wallet_features import (
    HOUR,
    MINUTE,
    AccountFacts,
    Incoming,
    LoginSeen,
    PastPayment,
    WalletContext,
    money_out_today,
    payment_features,
)
from agents.wallet_rules import PaymentPolicy, PaymentSignals, decide_payment
from streams.codec import CodecError
from streams.dlq import REASON
from streams.records import Payment
from streams.txloop import Received

NOW = datetime(2026, 10, 1, 4, 0, tzinfo=UTC)
T = int(NOW.timestamp() * 1000)
BASIC = AccountFacts(True, "i1", "BASIC", T - 400 * 24 * HOUR)


def payment(kind: str = "TRANSFER", amount: int = 5000, **kw) -> Payment:
    fields = {
        "payment_id": "p-1",
        "event_time": NOW,
        "kind": kind,
        "amount": amount,
        "account_id": "a-1",
        "counterparty_account_id": "a-2" if kind == "TRANSFER" else None,
    } | kw
    return Payment(**fields)


def decide(p: Payment, ctx: WalletContext, model: ModelOpinion | None = None, **policy):
    x = payment_features(p, ctx, T)
    signals = PaymentSignals(
        payer_status=ctx.payer.status,
        counterparty_status=ctx.counterparty.status if ctx.counterparty else None,
        payer_kyc=ctx.payer.kyc,
        payer_known=ctx.payer.known,
        daily_limit=ctx.payer.daily_limit,
        money_out_today=money_out_today(ctx.payer_history, T),
    )
    return decide_payment(p, x, signals, PaymentPolicy(**policy), model)


# ---------------------------------------------------------------- features


def test_only_entries_before_the_payment_count_and_never_the_payment_itself():
    history = [
        PastPayment(T - 30 * MINUTE, "TRANSFER", 1000, "a-9", "p-0"),
        PastPayment(T, "TRANSFER", 1000, "a-9", "p-same-ms"),  # not before: later for us
        PastPayment(T + MINUTE, "TRANSFER", 1000, "a-9", "p-later"),
        PastPayment(T - MINUTE, "TRANSFER", 5000, "a-2", "p-1"),  # its own first attempt
    ]
    x = payment_features(payment(), WalletContext(BASIC, BASIC, history), T)
    assert x["pay_count_1h"] == 1
    assert x["first_transfer_to_counterparty"] == 1  # a-2 only in its own entry
    assert x["fan_out_1h"] == 1


def test_fan_in_counts_distinct_senders_in_the_window():
    incoming = [
        Incoming(T - 10 * MINUTE, "s1", 5000, "x1"),
        Incoming(T - 9 * MINUTE, "s1", 5000, "x2"),  # the same sender twice
        Incoming(T - 2 * HOUR, "s2", 5000, "x3"),
        Incoming(T - 25 * HOUR, "s3", 5000, "x4"),  # older than a day
    ]
    ctx = WalletContext(BASIC, AccountFacts(True, "i9", "NONE"), counterparty_incoming=incoming)
    x = payment_features(payment(), ctx, T)
    assert (x["counterparty_fan_in_1h"], x["counterparty_fan_in_24h"]) == (1, 2)


def test_a_new_device_is_one_first_used_in_the_hour_on_an_account_that_had_another():
    old, new = "d-old", "d-new"
    logins = [LoginSeen(T - 10 * MINUTE, new, True, "l2")]
    seasoned = WalletContext(
        BASIC, BASIC, logins=logins, devices={old: T - 90 * 24 * HOUR, new: T - 10 * MINUTE}
    )
    first_ever = WalletContext(BASIC, BASIC, logins=logins, devices={new: T - 10 * MINUTE})
    known = WalletContext(
        BASIC, BASIC, logins=logins, devices={old: T - 90 * 24 * HOUR, new: T - 5 * 24 * HOUR}
    )
    assert payment_features(payment(), seasoned, T)["new_device_login_1h"] == 1
    assert payment_features(payment(), first_ever, T)["new_device_login_1h"] == 0
    assert payment_features(payment(), known, T)["new_device_login_1h"] == 0


def test_cash_out_after_a_charge_and_a_split_bill():
    charge = [PastPayment(T - 5 * MINUTE, "CHARGE", 50_000, "", "c1")]
    out = payment("WITHDRAW", 48_000, channel="ATM")
    assert (
        payment_features(out, WalletContext(BASIC, None, charge), T)["cash_out_after_charge"] == 1
    )
    later = [PastPayment(T - 2 * HOUR, "CHARGE", 50_000, "", "c1")]
    assert payment_features(out, WalletContext(BASIC, None, later), T)["cash_out_after_charge"] == 0
    friend_paid = [PastPayment(T - HOUR, "PAY", 9_000, "", "dinner")]
    ctx = WalletContext(BASIC, AccountFacts(True, "i2", "BASIC"), counterparty_history=friend_paid)
    assert payment_features(payment(amount=3_000), ctx, T)["split_bill_like"] == 1
    assert payment_features(payment(amount=12_000), ctx, T)["split_bill_like"] == 0


# ---------------------------------------------------------------- rules


def test_a_transfer_into_a_mule_is_declined_once_fan_in_builds_up():
    incoming = [Incoming(T - i * MINUTE, f"s{i}", 5000, f"x{i}") for i in range(1, 6)]
    mule = AccountFacts(True, "i-mule", "NONE", T - 2 * 24 * HOUR)
    four = WalletContext(BASIC, mule, counterparty_incoming=incoming[:4])
    five = WalletContext(BASIC, mule, counterparty_incoming=incoming)
    assert decide(payment(), four).decision == "APPROVE"
    verdict = decide(payment(), five)
    assert verdict.decision == "DECLINE" and verdict.reasons[0] == reasons.COUNTERPARTY_FAN_IN


def test_a_self_transfer_is_approved_however_large_and_busy():
    incoming = [Incoming(T - i * MINUTE, f"s{i}", 5000, f"x{i}") for i in range(1, 8)]
    mine = AccountFacts(True, "i1", "FULL")
    ctx = WalletContext(AccountFacts(True, "i1", "FULL"), mine, counterparty_incoming=incoming)
    verdict = decide(payment(amount=300_000), ctx)
    assert verdict.decision == "APPROVE"
    assert reasons.SELF_TRANSFER in verdict.reasons
    stranger = WalletContext(AccountFacts(True, "i1", "FULL"), AccountFacts(True, "i7", "FULL"))
    assert reasons.FIRST_TRANSFER_LARGE in decide(payment(amount=300_000), stranger).reasons


def test_takeover_signals_review_money_leaving_but_give_way_to_a_warm_model():
    logins = [LoginSeen(T - 10 * MINUTE, "d-new", True, "l2")]
    devices = {"d-old": T - 90 * 24 * HOUR, "d-new": T - 10 * MINUTE}
    ctx = WalletContext(BASIC, BASIC, logins=logins, devices=devices)
    cold = decide(payment(), ctx, ModelOpinion(0.01, "logreg-v0", False))
    assert cold.decision == "REVIEW" and cold.reasons[0] == reasons.NEW_DEVICE_BEFORE_CASH_OUT
    assert decide(payment("PAY", 5000, merchant_id="m1"), ctx).decision == "APPROVE"
    warm = decide(payment(), ctx, ModelOpinion(0.02, "logreg-v9", True))
    assert warm.decision == "APPROVE" and warm.reasons[-1] == reasons.SCORE_MODEL


def test_kyc_and_daily_limits_and_frozen_accounts():
    unverified = WalletContext(AccountFacts(True, "i1", "NONE"), BASIC)
    assert decide(payment(amount=10_001), unverified).reasons[0] == reasons.KYC_LIMIT_EXCEEDED
    assert decide(payment(amount=10_000), unverified).decision == "APPROVE"
    earlier = [PastPayment(T - HOUR, "WITHDRAW", 40_000, "", "w1")]
    limited = WalletContext(AccountFacts(True, "i1", "FULL", daily_limit=50_000), BASIC, earlier)
    assert decide(payment(amount=10_001), limited).reasons[0] == reasons.DAILY_LIMIT_EXCEEDED
    frozen = WalletContext(BASIC, AccountFacts(True, "i2", "BASIC", status="FROZEN"))
    assert decide(payment(), frozen).reasons[0] == reasons.ACCOUNT_FROZEN


def test_the_policy_file_sets_payment_thresholds_and_limits_by_line():
    policy = load_policy_yaml(
        "name: w\npayments:\n  kinds: {TRANSFER: {review_score: 0.25}}\n"
        "  kyc_limits: {NONE: {TRANSFER: 0}}\n  fan_in_24h: 3\n"
    ).payments
    assert policy.thresholds("TRANSFER") == (0.25, 0.9)
    assert policy.kyc_limits["NONE"]["TRANSFER"] == 0
    assert policy.kyc_limits["NONE"]["PAY"] == 50_000  # the rest of the level kept
    assert policy.fan_in_24h == 3
    with pytest.raises(PolicyError, match=r"policy:3: payments\.kyc_limits\.BASIC\.CARD_AUTH"):
        load_policy_yaml("name: w\npayments:\n  kyc_limits: {BASIC: {CARD_AUTH: 1}}\n")


# ---------------------------------------------------------------- the batch core


class FailsFor:
    def __init__(self, registry, payment_id: str) -> None:
        self.registry, self.payment_id = registry, payment_id

    def encode(self, name, datum):
        if name == "DecisionTrace" and datum["order_id"] == self.payment_id:
            raise CodecError("wrong_type", "a bug in the trace")
        return self.registry.encode(name, datum)


def batch(payments: list[Payment]) -> list[PaymentCandidate]:
    return [
        PaymentCandidate(Received("t.payments", 0, i, b"k", b"v", T), p, T + i * 1000)
        for i, p in enumerate(payments)
    ]


def test_each_payment_sees_the_batch_before_it_and_a_poison_one_costs_only_itself(registry):
    senders = [payment(payment_id=f"p{i}", account_id=f"s{i}") for i in range(7)]
    contexts = [WalletContext(BASIC, AccountFacts(True, "i-m", "NONE")) for _ in senders]
    out = Outputs(FailsFor(registry, "p2"), "t.decisions", "t.traces", "t.dlq")  # type: ignore[arg-type]
    rules = PaymentRules(NOW + timedelta(seconds=10), DEFAULT_POLICY_SET, ModelState(), False)
    sent, changes, recorded = screen_payments(batch(senders), contexts, rules, out)
    dead = [o for o in sent if o.topic == "t.dlq"]
    assert len(dead) == 1 and dict(dead[0].headers)[REASON] == b"processing_error"
    decisions = [registry.decode("Decision", o.value) for o in sent if o.topic == "t.decisions"]
    assert [d["payment_id"] for d in decisions] == ["p0", "p1", "p3", "p4", "p5", "p6"]
    assert all(d["subject"] == "PAYMENT" and d["order_id"] == d["payment_id"] for d in decisions)
    # p2 moved no money: p6 is the first with five earlier senders (p0, p1, p3, p4, p5)
    verdicts = {d["payment_id"]: d["decision"] for d in decisions}
    assert verdicts == {
        "p0": "APPROVE",
        "p1": "APPROVE",
        "p3": "APPROVE",
        "p4": "APPROVE",
        "p5": "APPROVE",
        "p6": "DECLINE",
    }
    assert [r for r, _ in changes.snapshots] == [f"pay:p{i}" for i in (0, 1, 3, 4, 5, 6)]
    assert [p.payment_id for p, _ in recorded] == ["p0", "p1", "p3", "p4", "p5", "p6"]


def test_the_model_is_warm_for_payments_only_once_it_learned_payments():
    import pickle

    model = ModelState()
    order_x = {"amount_log": 8.0, "category=FOOD": 1.0}
    for i in range(40):
        model.learn(order_x, int(i % 4 == 0), None)
    assert model.warm(20, 5) and not model.warm_for_payments(20, 5)
    pay_x = payment_features(payment(), WalletContext(BASIC, BASIC), T)
    for i in range(40):
        model.learn(pay_x, int(i % 4 == 0), None)
    assert model.warm_for_payments(20, 5) and model.payment_labels == 40
    # each payment kind has its own estimator; orders keep theirs
    assert set(model.payment_estimators) == {"TRANSFER"}
    assert model.estimator_for(pay_x) is model.payment_estimators["TRANSFER"]
    assert model.estimator_for(order_x) is model.estimator
    withdraw_x = payment_features(payment("WITHDRAW", 5000), WalletContext(BASIC), T)
    assert model.score(withdraw_x) == pytest.approx(0.5)  # a kind not learned yet: no opinion
    # a checkpoint written before payments were counted, or had estimators, loads with none
    state = pickle.loads(pickle.dumps(model))
    for name in ("payment_labels", "payment_positives", "payment_estimators"):
        del state.__dict__[name]
    old = pickle.loads(pickle.dumps(state))
    assert old.payment_labels == 0 and old.payment_estimators == {}
    assert old.score(order_x) == model.score(order_x)


def test_a_payer_no_account_event_told_of_gets_the_policy_s_unknown_account_limits(registry):
    p = payment("WITHDRAW", 20_000, channel="ATM")
    unknown = WalletContext(AccountFacts())

    def decided(document: str) -> dict:
        policies = load_policy_yaml(document)
        rules = PaymentRules(NOW, policies, ModelState(), False)
        out = Outputs(registry, "t.decisions", "t.traces", "t.dlq")
        sent, _, _ = screen_payments(batch([p]), [unknown], rules, out)
        return registry.decode("Decision", sent[0].value)

    strict = decided("name: w\n")
    assert strict["decision"] == "DECLINE" and strict["reasons"][0] == reasons.KYC_LIMIT_EXCEEDED
    lenient = decided("name: w\npayments: {unknown_account_kyc: BASIC}\n")
    assert lenient["decision"] == "APPROVE" and reasons.ACCOUNT_UNKNOWN in lenient["reasons"]


def test_a_merchant_s_own_wallet_rules_apply_to_payments_at_that_merchant(registry):
    policies = load_policy_yaml(
        "name: w\npayments:\n  kyc_limits: {BASIC: {PAY: 50000}}\nmerchants:\n"
        "  m-strict: {payments: {kyc_limits: {BASIC: {PAY: 1000}}}}\n"
    )
    assert policies.payments_for("m-strict").kyc_limits["BASIC"]["PAY"] == 1000
    assert policies.payments_for("m-strict").kyc_limits["BASIC"]["TRANSFER"] == 100_000
    assert policies.payments_for("m-other").kyc_limits["BASIC"]["PAY"] == 50_000
    rules = PaymentRules(NOW, policies, ModelState(), False)
    out = Outputs(registry, "t.decisions", "t.traces", "t.dlq")
    at_strict = payment("PAY", 5000, merchant_id="m-strict", payment_id="p-s")
    elsewhere = payment("PAY", 5000, merchant_id="m-other", payment_id="p-o")
    sent, _, _ = screen_payments(
        batch([at_strict, elsewhere]), [WalletContext(BASIC), WalletContext(BASIC)], rules, out
    )
    decided = [registry.decode("Decision", o.value) for o in sent if o.topic == "t.decisions"]
    traces = [registry.decode("DecisionTrace", o.value) for o in sent if o.topic == "t.traces"]
    assert [d["decision"] for d in decided] == ["DECLINE", "APPROVE"]
    assert [t["merchant_override"] for t in traces] == [True, False]
    with pytest.raises(PolicyError, match=r"merchant m-x payments PAY: review_score 0\.95"):
        load_policy_yaml(
            "name: w\nmerchants:\n  m-x: {payments: {kinds: {PAY: {review_score: 0.95}}}}\n"
        )


def test_a_retried_batch_does_not_count_its_first_attempt_twice(registry):
    """The first attempt wrote its history entries, then the worker died before the Kafka
    commit: the retry reads them back from Redis and must see each payment once."""
    transfers = [
        payment(payment_id=f"p{i}", counterparty_account_id=f"r{i}", amount=1000) for i in range(5)
    ]
    cands = batch(transfers)
    first_attempt = [
        PastPayment(c.at_ms, "TRANSFER", 1000, f"r{i}", c.payment.payment_id)
        for i, c in enumerate(cands)
    ]
    retry = [WalletContext(BASIC, BASIC, payer_history=first_attempt) for _ in cands]
    fresh = [WalletContext(BASIC, BASIC) for _ in cands]
    policies = load_policy_yaml("name: w\npayments: {velocity_caps: {TRANSFER: {count_1h: 2}}}\n")
    rules = PaymentRules(NOW + timedelta(seconds=10), policies, ModelState(), False)
    out = Outputs(registry, "t.decisions", "t.traces", "t.dlq")

    def verdicts(contexts):
        sent, _, _ = screen_payments(cands, contexts, rules, out)
        decided = [registry.decode("Decision", o.value) for o in sent if o.topic == "t.decisions"]
        return [d["decision"] for d in decided]

    assert verdicts(fresh) == ["APPROVE"] * 3 + ["REVIEW"] * 2  # the 4th has 3 before it
    assert verdicts(retry) == verdicts(fresh)
