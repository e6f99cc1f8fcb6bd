"""Stage 3: the baseline decision from the default policy (amount and merchant-tier rules).

Each rule that fires adds a reason code and a risk score; the order's score is the highest
of them (a floor that grows with the amount when none fires). The policy's thresholds turn the
score into approve / review / decline. This is the documented fallback the online model and
per-merchant policies build on; the rules:

| rule                        | fires when                                      | score |
|-----------------------------|-------------------------------------------------|-------|
| MERCHANT_SUSPENDED          | the merchant's status is SUSPENDED              | 1.00  |
| AMOUNT_OVER_DECLINE_LIMIT   | amount > decline_amount (500,000 yen)           | 0.95  |
| DEFERRED_OVER_CAP           | DEFERRED and amount > deferred_cap (55,000 yen) | 0.95  |
| AMOUNT_OVER_REVIEW_LIMIT    | amount > review_amount (100,000 yen)            | 0.60  |
| TIER_AMOUNT_OVER_LIMIT      | amount > tier limit (HIGH_RISK 20,000; SMALL 50,000) | 0.60  |
| IDENTITY_MANY_CONTACTS      | the identity used ≥ 3 phones, emails or addresses | 0.60 |
| FIRST_ORDER_SHIPS_ELSEWHERE | first order, to another name in another prefecture | 0.55 |
| MERCHANT_UNKNOWN            | no attributes for the merchant                  | 0.50  |
| (floor)                     | always: 0.4 × amount / review_amount, ≤ 0.4     |       |

Thresholds: score ≥ 0.9 declines, score ≥ 0.5 reviews, otherwise approve.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property

from agents import reasons
from agents.enrich import EnrichedOrder

APPROVE, REVIEW, DECLINE = "APPROVE", "REVIEW", "DECLINE"


@dataclass(frozen=True)
class Policy:
    """Thresholds and limits of a screening policy; amounts in yen."""

    name: str = "default"
    review_score: float = 0.5
    decline_score: float = 0.9
    review_amount: int = 100_000
    decline_amount: int = 500_000
    deferred_cap: int = 55_000
    tier_review_amount: dict[str, int] = field(
        default_factory=lambda: {"HIGH_RISK": 20_000, "SMALL": 50_000}
    )
    identity_contacts_review: int = 3

    @cached_property  # the hash costs ~15 µs: once per policy, not once per order
    def version(self) -> str:
        """Name plus a content hash: two workers with the same rules report the same version."""
        body = json.dumps(asdict(self), sort_keys=True).encode()
        return f"{self.name}-{hashlib.sha256(body).hexdigest()[:8]}"


@dataclass(slots=True, frozen=True)
class Verdict:
    decision: str
    score: float
    reasons: tuple[str, ...]


RULE_SCORES = {
    reasons.MERCHANT_SUSPENDED: 1.0,
    reasons.AMOUNT_OVER_DECLINE_LIMIT: 0.95,
    reasons.DEFERRED_OVER_CAP: 0.95,
    reasons.AMOUNT_OVER_REVIEW_LIMIT: 0.6,
    reasons.TIER_AMOUNT_OVER_LIMIT: 0.6,
    reasons.IDENTITY_MANY_CONTACTS: 0.6,
    reasons.FIRST_ORDER_SHIPS_ELSEWHERE: 0.55,
    reasons.MERCHANT_UNKNOWN: 0.5,
}


def fired_rules(enriched: EnrichedOrder, policy: Policy) -> list[str]:
    """Codes of the policy rules that fire for this order (enrichment reasons included)."""
    order, merchant = enriched.order, enriched.merchant
    fired = list(enriched.reasons)
    if merchant is not None and merchant.status == "SUSPENDED":
        fired.append(reasons.MERCHANT_SUSPENDED)
    if order.amount > policy.decline_amount:
        fired.append(reasons.AMOUNT_OVER_DECLINE_LIMIT)
    elif order.amount > policy.review_amount:
        fired.append(reasons.AMOUNT_OVER_REVIEW_LIMIT)
    if order.payment_method == "DEFERRED" and order.amount > policy.deferred_cap:
        fired.append(reasons.DEFERRED_OVER_CAP)
    tier_limit = policy.tier_review_amount.get(enriched.merchant_tier)
    if tier_limit is not None and order.amount > tier_limit:
        fired.append(reasons.TIER_AMOUNT_OVER_LIMIT)
    identity, attributes = enriched.identity, enriched.attributes
    contacts = max(identity.get(k, 0) for k in ("phones", "emails", "addresses")) if identity else 0
    if contacts >= policy.identity_contacts_review:
        fired.append(reasons.IDENTITY_MANY_CONTACTS)
    if (
        identity.get("orders") == 1
        and attributes.get("ship_prefecture_differs")
        and attributes.get("ship_name_differs")
    ):
        fired.append(reasons.FIRST_ORDER_SHIPS_ELSEWHERE)
    return fired


def rule_score(amount: int, fired: list[str], policy: Policy) -> float:
    floor = min(0.4, 0.4 * amount / policy.review_amount)
    return max([floor, *(RULE_SCORES.get(code, 0.0) for code in fired)])


def decide_order(enriched: EnrichedOrder, policy: Policy) -> Verdict:
    fired = fired_rules(enriched, policy)
    score = rule_score(enriched.order.amount, fired, policy)
    if score >= policy.decline_score:
        decision = DECLINE
    elif score >= policy.review_score:
        decision = REVIEW
    else:
        decision = APPROVE
    ordered = sorted(fired, key=lambda code: -RULE_SCORES.get(code, 0.0))
    return Verdict(decision, round(score, 4), (*ordered, reasons.SCORE_RULES_ONLY))
