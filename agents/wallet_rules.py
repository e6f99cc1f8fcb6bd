"""Wallet screening, the decision: policy limits and cold-start rules over a payment's features
(pure). The scale and precedence are the orders' (agents/decide.py): each rule that fires adds
a reason and a score, the highest score decides against the kind's thresholds; once the online
model is warm, the pattern heuristics give way to it and the limits stay.

| rule                        | fires when                                              | score |
|-----------------------------|---------------------------------------------------------|-------|
| ACCOUNT_FROZEN              | the payer (or a transfer's receiver) is frozen or closed | 1.00  |
| KYC_LIMIT_EXCEEDED          | amount > the limit of the payer's KYC level for the kind | 0.95  |
| DAILY_LIMIT_EXCEEDED        | transfers + withdrawals today (JST) > the account's limit | 0.95 |
| COUNTERPARTY_FAN_IN         | the receiver got money from ≥ fan_in_24h senders in 24 h | 0.95  |
| PAYMENT_VELOCITY_OVER_CAP   | more payments of the kind (or yen) than a velocity cap   | 0.60  |
| NEW_DEVICE_BEFORE_CASH_OUT  | transfer / withdraw within 1 h of a new-device login     | 0.60  |
| FAILED_LOGINS_BEFORE        | ≥ failed_logins_review failed logins in the hour before  | 0.60  |
| CASH_OUT_AFTER_CHARGE       | transfer / withdraw ≥ half the yen charged ≤ 30 min before | 0.60 |
| FIRST_TRANSFER_LARGE        | first transfer to a receiver ≥ first_transfer_review_amount | 0.60 |
| ACCOUNT_UNKNOWN             | no account event seen for the payer                      | 0.30  |
| SELF_TRANSFER               | two accounts of one identity: no counterparty rule fires | 0.00  |
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property

from agents import reasons
from agents.decide import APPROVE, DECLINE, REVIEW, ModelOpinion, Verdict
from streams.records import Payment

PAYMENT_KINDS = ("CHARGE", "PAY", "TRANSFER", "WITHDRAW")
KYC_LEVELS = ("NONE", "BASIC", "FULL")

PAYMENT_RULE_SCORES = {
    reasons.ACCOUNT_FROZEN: 1.0,
    reasons.KYC_LIMIT_EXCEEDED: 0.95,
    reasons.DAILY_LIMIT_EXCEEDED: 0.95,
    reasons.COUNTERPARTY_FAN_IN: 0.95,
    reasons.PAYMENT_VELOCITY_OVER_CAP: 0.6,
    reasons.NEW_DEVICE_BEFORE_CASH_OUT: 0.6,
    reasons.FAILED_LOGINS_BEFORE: 0.6,
    reasons.CASH_OUT_AFTER_CHARGE: 0.6,
    reasons.FIRST_TRANSFER_LARGE: 0.6,
    reasons.ACCOUNT_UNKNOWN: 0.3,
    reasons.SELF_TRANSFER: 0.0,
}
# Pattern heuristics a warm model replaces (it learns them, and their weight, from outcomes).
PAYMENT_HEURISTICS = frozenset(
    {
        reasons.NEW_DEVICE_BEFORE_CASH_OUT,
        reasons.FAILED_LOGINS_BEFORE,
        reasons.CASH_OUT_AFTER_CHARGE,
        reasons.FIRST_TRANSFER_LARGE,
        reasons.ACCOUNT_UNKNOWN,
    }
)


def default_kyc_limits() -> dict[str, dict[str, int]]:
    """Yen per payment by KYC level and kind (a kind left out has no limit at that level)."""
    return {
        "NONE": {"TRANSFER": 10_000, "WITHDRAW": 0, "CHARGE": 50_000, "PAY": 50_000},
        "BASIC": {"TRANSFER": 100_000, "WITHDRAW": 100_000, "CHARGE": 300_000},
        "FULL": {"TRANSFER": 1_000_000, "WITHDRAW": 1_000_000},
    }


@dataclass(frozen=True)
class PaymentPolicy:
    """Thresholds and limits for wallet payments (the policy file's `payments:` section)."""

    name: str = "default"
    review_score: float = 0.5
    decline_score: float = 0.9
    kinds: dict[str, dict[str, float]] = field(default_factory=dict)  # per-kind thresholds
    kyc_limits: dict[str, dict[str, int]] = field(default_factory=default_kyc_limits)
    velocity_caps: dict[str, dict[str, int]] = field(default_factory=dict)
    fan_in_24h: int = 5
    failed_logins_review: int = 3
    first_transfer_review_amount: int = 100_000
    unknown_account_kyc: str = "NONE"  # the limits of a payer no account event told us of

    @cached_property
    def version(self) -> str:
        body = json.dumps(asdict(self), sort_keys=True).encode()
        return f"{self.name}-{hashlib.sha256(body).hexdigest()[:8]}"

    def thresholds(self, kind: str) -> tuple[float, float]:
        own = self.kinds.get(kind, {})
        return own.get("review_score", self.review_score), own.get(
            "decline_score", self.decline_score
        )


@dataclass(frozen=True, slots=True)
class PaymentSignals:
    """State beyond the features that the limits look at."""

    payer_status: str = "ACTIVE"
    counterparty_status: str | None = None
    payer_kyc: str = "NONE"
    payer_known: bool = True
    daily_limit: int | None = None
    money_out_today: int = 0  # yen transferred / withdrawn earlier on the JST day


def velocity_over(features: Mapping[str, float], caps: Mapping[str, int]) -> bool:
    values = {
        "count_1h": features.get("pay_count_1h", 0.0),
        "count_24h": features.get("pay_count_24h", 0.0),
        "amount_24h": math.expm1(features.get("pay_amount_24h_log", 0.0)),
    }
    return any(values.get(name, 0.0) > cap + 1e-6 for name, cap in caps.items())


def payment_rules(
    payment: Payment, features: Mapping[str, float], signals: PaymentSignals, policy: PaymentPolicy
) -> list[str]:
    """Codes of the rules that fire for this payment."""
    kind, amount = payment.kind, payment.amount
    fired: list[str] = []
    if signals.payer_status != "ACTIVE" or signals.counterparty_status not in (None, "ACTIVE"):
        fired.append(reasons.ACCOUNT_FROZEN)
    limit = policy.kyc_limits.get(signals.payer_kyc, {}).get(kind)
    if limit is not None and amount > limit:
        fired.append(reasons.KYC_LIMIT_EXCEEDED)
    if (
        kind in ("TRANSFER", "WITHDRAW")
        and signals.daily_limit is not None
        and signals.money_out_today + amount > signals.daily_limit
    ):
        fired.append(reasons.DAILY_LIMIT_EXCEEDED)
    caps = policy.velocity_caps.get(kind)
    if caps and velocity_over(features, caps):
        fired.append(reasons.PAYMENT_VELOCITY_OVER_CAP)
    if not signals.payer_known:
        fired.append(reasons.ACCOUNT_UNKNOWN)
    if kind in ("TRANSFER", "WITHDRAW"):
        if features.get("new_device_login_1h"):
            fired.append(reasons.NEW_DEVICE_BEFORE_CASH_OUT)
        if features.get("cash_out_after_charge"):
            fired.append(reasons.CASH_OUT_AFTER_CHARGE)
    if features.get("failed_logins_1h", 0.0) >= policy.failed_logins_review:
        fired.append(reasons.FAILED_LOGINS_BEFORE)
    if kind == "TRANSFER":
        if features.get("self_transfer"):
            fired.append(reasons.SELF_TRANSFER)  # one person's own money: no counterparty rules
        else:
            if features.get("counterparty_fan_in_24h", 0.0) >= policy.fan_in_24h:
                fired.append(reasons.COUNTERPARTY_FAN_IN)
            if (
                features.get("first_transfer_to_counterparty")
                and not features.get("split_bill_like")
                and amount >= policy.first_transfer_review_amount
            ):
                fired.append(reasons.FIRST_TRANSFER_LARGE)
    return fired


def decide_payment(
    payment: Payment,
    features: Mapping[str, float],
    signals: PaymentSignals,
    policy: PaymentPolicy,
    model: ModelOpinion | None = None,
) -> Verdict:
    fired = payment_rules(payment, features, signals, policy)
    review, decline = policy.thresholds(payment.kind)
    if model is not None and model.warm:
        deciding = [code for code in fired if code not in PAYMENT_HEURISTICS]
        limits = max((PAYMENT_RULE_SCORES[code] for code in deciding), default=0.0)
        score = max(model.score, limits)
        explained = [reasons.model_reason(name) for name in model.contributions]
        ordered = sorted(deciding, key=lambda code: -PAYMENT_RULE_SCORES[code])
        ordered = [*explained, *ordered] if model.score >= limits else [*ordered, *explained]
        tail = reasons.SCORE_MODEL
    else:
        score = max((PAYMENT_RULE_SCORES[code] for code in fired), default=0.0)
        ordered = sorted(fired, key=lambda code: -PAYMENT_RULE_SCORES[code])
        tail = reasons.rules_tail(model is not None, model is not None and model.switched_off)
    if score >= decline:
        decision = DECLINE
    elif score >= review:
        decision = REVIEW
    else:
        decision = APPROVE
    return Verdict(decision, round(score, 4), (*ordered, tail), tuple(fired))
