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
| BLOCK_LISTED_HARD           | a block-list entry with overridable: false matches | 1.00 |
| METHOD_NOT_ALLOWED          | payment method not in allowed_methods           | 1.00  |
| BLOCK_LISTED                | an overridable block-list entry matches         | 1.00  |
| IDENTITY_HELD_UNPAID        | the identity has an unpaid (overdue) order      | 0.95  |
| EXPOSURE_OVER_LIMIT         | DEFERRED and outstanding + amount > exposure_limit | 0.95 |
| CREDIT_LIMIT                | DEFERRED and outstanding + amount > credit limit | 0.95 |
| CREDIT_SCORE                | DEFERRED, warm credit score ≥ credit_review_score | review_score |
|                             | ... ≥ credit_decline_score                      | decline_score |
| VELOCITY_OVER_CAP           | earlier orders (or yen) in a window > a velocity cap | 0.60 |
| NEW_IDENTITY_OVER_LIMIT     | a new identity's first order > new_identity_max_amount | 0.60 |
| (floor)                     | always: 0.4 × amount / review_amount, ≤ 0.4     |       |

Thresholds: score ≥ 0.9 declines, score ≥ 0.5 reviews, otherwise approve. Limits left unset
in the policy (velocity caps, new-identity limit) do not fire; exposure_limit is 100,000 yen.
A policy's `credit_limit` (dynamic limits, `credit_limit_of`) replaces exposure_limit: each
identity's limit follows its repayment history.

Precedence when they disagree (agents/reasons.py documents every code):
1. BLOCK_LISTED_HARD (a block entry with `overridable: false`) and MERCHANT_SUSPENDED score
   1.0 and decline; nothing overrides them, not even the allow list.
2. ALLOW_LISTED approves, overriding everything below (the trace keeps what it overrode).
3. Everything else scores: overridable blocks, limits and rules by the table, the model by
   its probability; the highest score decides against the thresholds.

With the online model (agents/model.py) warm — it has learned `SHINSA_MODEL_MIN_LABELS`
labels, `SHINSA_MODEL_MIN_POSITIVES` of them frauds — the order's score is the higher of the
model's fraud probability and the policy limits above; the two fraud heuristics
(IDENTITY_MANY_CONTACTS, FIRST_ORDER_SHIPS_ELSEWHERE) and the amount floor give way to the
model, which learns those signals and their weight from outcomes. The reasons then name the
features that raised the score most (`MODEL:<feature>`) and end with SCORE_MODEL. Until then
(cold start) the rules above decide alone and the reasons end with MODEL_COLD_START; while the
kill switch is on (`shinsa model off`), the same, ending with MODEL_SWITCHED_OFF.

Deferred orders get a second check, ability to pay (agents/credit.py): the credit model's
probability that the order goes unpaid. Once that model is warm, a credit score at or above
the policy's `credit_review_score` fires CREDIT_SCORE, which scores like a limit: the policy's
review_score, or its decline_score from `credit_decline_score` on; the credit features that
raised it most follow as `CREDIT:<feature>`. So an order is approved only when both checks
pass, and a policy (or a shadow one) moves either threshold on its own.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
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
    allowed_methods: tuple[str, ...] | None = None  # None: every method
    velocity_caps: dict[str, int] = field(default_factory=dict)  # e.g. {"count_1h": 5}
    new_identity_max_amount: int | None = None
    exposure_limit: int | None = 100_000
    # dynamic limits: first_order, base, per_on_time, per_late, per_unpaid, max (yen)
    credit_limit: dict[str, int] | None = None
    # the credit check (agents/credit.py): unpaid probability → REVIEW / DECLINE
    credit_review_score: float = 0.5
    credit_decline_score: float = 0.8

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
    fired: tuple[str, ...] = ()  # every rule that fired, those overridden included (the trace)


RULE_SCORES = {
    reasons.MERCHANT_SUSPENDED: 1.0,
    reasons.AMOUNT_OVER_DECLINE_LIMIT: 0.95,
    reasons.DEFERRED_OVER_CAP: 0.95,
    reasons.AMOUNT_OVER_REVIEW_LIMIT: 0.6,
    reasons.TIER_AMOUNT_OVER_LIMIT: 0.6,
    reasons.IDENTITY_MANY_CONTACTS: 0.6,
    reasons.FIRST_ORDER_SHIPS_ELSEWHERE: 0.55,
    reasons.MERCHANT_UNKNOWN: 0.5,
    reasons.BLOCK_LISTED_HARD: 1.0,
    reasons.METHOD_NOT_ALLOWED: 1.0,
    reasons.BLOCK_LISTED: 1.0,
    reasons.IDENTITY_HELD_UNPAID: 0.95,
    reasons.EXPOSURE_OVER_LIMIT: 0.95,
    reasons.CREDIT_LIMIT: 0.95,
    reasons.VELOCITY_OVER_CAP: 0.6,
    reasons.NEW_IDENTITY_OVER_LIMIT: 0.6,
}


# Fraud heuristics the warm model replaces (it learns these signals from outcomes).
HEURISTICS = frozenset({reasons.IDENTITY_MANY_CONTACTS, reasons.FIRST_ORDER_SHIPS_ELSEWHERE})


@dataclass(slots=True, frozen=True)
class ModelOpinion:
    """What the model says of one order (agents/screen.py asks it)."""

    score: float
    version: str
    warm: bool
    contributions: tuple[str, ...] = ()  # features that raised the score most, strongest first
    # the credit model's (deferred orders; None otherwise, or before it has learned anything)
    credit: float | None = None
    credit_warm: bool = False
    credit_contributions: tuple[str, ...] = ()
    switched_off: bool = False  # the kill switch keeps it out of the decision, warm or not


@dataclass(frozen=True, slots=True)
class ListHits:
    """Kinds (phone, email, device, identity) of the list entries an order matched."""

    hard_blocks: tuple[str, ...] = ()  # block entries with overridable: false
    allows: tuple[str, ...] = ()
    blocks: tuple[str, ...] = ()  # overridable block entries


@dataclass(frozen=True, slots=True)
class Signals:
    """Per-identity state the policy's limits look at (from agents/screen.py's tables)."""

    velocity: Mapping[str, float] = field(default_factory=dict)  # agents/features.py velocity
    outstanding: int = 0  # deferred balance (yen) of the identity before this order
    held: bool = False  # the identity has an unpaid (overdue) order
    lists: ListHits = ListHits()
    repayments: Mapping[str, int] = field(default_factory=dict)  # on_time, late, unpaid


NO_SIGNALS = Signals()


def velocity_over_cap(velocity: Mapping[str, float], caps: Mapping[str, int]) -> bool:
    for cap, limit in caps.items():
        kind, window = cap.split("_", 1)
        value = velocity.get(f"velocity_{kind}_{window}", 0.0)
        if kind == "amount":
            value = math.expm1(value)  # features keep log(1 + yen)
        if value > limit + 1e-6:
            return True
    return False


def credit_limit_of(limits: Mapping[str, int], repayments: Mapping[str, int]) -> int:
    """An identity's deferred-payment limit from its repayment history: `first_order` with
    none yet, else `base` + `per_on_time` × on-time repayments + `per_late` × late ones +
    `per_unpaid` × unpaid ones, within 0 and `max` (per_late and per_unpaid are ≤ 0)."""
    on_time, late, unpaid = (repayments.get(k, 0) for k in ("on_time", "late", "unpaid"))
    if not (on_time or late or unpaid):
        return limits["first_order"]
    grown = (
        limits["base"]
        + limits["per_on_time"] * on_time
        + limits["per_late"] * late
        + limits["per_unpaid"] * unpaid
    )
    return max(0, min(limits["max"], grown))


def limit_rules(enriched: EnrichedOrder, policy: Policy, signals: Signals) -> list[str]:
    """Codes of the policy's limits and lists (beyond the amount and tier rules)."""
    order = enriched.order
    fired = []
    if policy.allowed_methods is not None and order.payment_method not in policy.allowed_methods:
        fired.append(reasons.METHOD_NOT_ALLOWED)
    if signals.lists.hard_blocks:
        fired.append(reasons.BLOCK_LISTED_HARD)
    if signals.lists.blocks:
        fired.append(reasons.BLOCK_LISTED)
    if signals.held:
        fired.append(reasons.IDENTITY_HELD_UNPAID)
    if order.payment_method == "DEFERRED" and policy.credit_limit is not None:
        limit = credit_limit_of(policy.credit_limit, signals.repayments)
        if signals.outstanding + order.amount > limit:
            fired.append(reasons.CREDIT_LIMIT)
    elif (
        policy.exposure_limit is not None
        and order.payment_method == "DEFERRED"
        and signals.outstanding + order.amount > policy.exposure_limit
    ):
        fired.append(reasons.EXPOSURE_OVER_LIMIT)
    if policy.velocity_caps and velocity_over_cap(signals.velocity, policy.velocity_caps):
        fired.append(reasons.VELOCITY_OVER_CAP)
    if (
        policy.new_identity_max_amount is not None
        and enriched.identity.get("orders", 1) <= 1
        and order.amount > policy.new_identity_max_amount
    ):
        fired.append(reasons.NEW_IDENTITY_OVER_LIMIT)
    return fired


def fired_rules(
    enriched: EnrichedOrder, policy: Policy, signals: Signals = NO_SIGNALS
) -> list[str]:
    """Codes of the policy rules that fire for this order (enrichment reasons included)."""
    order, merchant = enriched.order, enriched.merchant
    fired = list(enriched.reasons)
    fired += limit_rules(enriched, policy, signals)
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


def credit_check(enriched: EnrichedOrder, policy: Policy, model: ModelOpinion | None) -> float:
    """The score the credit check gives a deferred order: the policy's decline or review
    score when the warm credit model's unpaid probability reaches its credit thresholds,
    else 0 (it passes, or cannot judge yet and the limits decide)."""
    if model is None or model.credit is None or not model.credit_warm:
        return 0.0
    if enriched.order.payment_method != "DEFERRED":
        return 0.0
    if model.credit >= policy.credit_decline_score:
        return policy.decline_score
    if model.credit >= policy.credit_review_score:
        return policy.review_score
    return 0.0


def decide_order(
    enriched: EnrichedOrder,
    policy: Policy,
    model: ModelOpinion | None = None,
    signals: Signals = NO_SIGNALS,
) -> Verdict:
    fired = fired_rules(enriched, policy, signals)
    credit = credit_check(enriched, policy, model)
    if credit:
        fired.append(reasons.CREDIT_SCORE)
    unstoppable = reasons.BLOCK_LISTED_HARD in fired or reasons.MERCHANT_SUSPENDED in fired
    if signals.lists.allows and not unstoppable:  # precedence 2 (1 scores 1.0 below)
        return Verdict(APPROVE, 0.0, (reasons.ALLOW_LISTED,), tuple(fired))
    scores = {**RULE_SCORES, reasons.CREDIT_SCORE: credit}
    if model is not None and model.warm:
        deciding = [code for code in fired if code not in HEURISTICS]  # the model has those
        limits = max((scores.get(code, 0.0) for code in deciding), default=0.0)
        score = max(model.score, limits)
        explained = [reasons.model_reason(name) for name in model.contributions]
        ordered = sorted(deciding, key=lambda code: -scores.get(code, 0.0))
        ordered = [*explained, *ordered] if model.score >= limits else [*ordered, *explained]
        tail = reasons.SCORE_MODEL
    else:
        score = max(rule_score(enriched.order.amount, fired, policy), credit)
        ordered = sorted(fired, key=lambda code: -scores.get(code, 0.0))
        tail = reasons.rules_tail(model is not None, model is not None and model.switched_off)
    if credit and model is not None:  # which repayment features made it (after the code)
        at = ordered.index(reasons.CREDIT_SCORE) + 1
        named = [reasons.credit_reason(name) for name in model.credit_contributions]
        ordered[at:at] = named
    return Verdict(decision_for(score, policy), round(score, 4), (*ordered, tail), tuple(fired))


def decision_for(score: float, policy: Policy) -> str:
    if score >= policy.decline_score:
        return DECLINE
    if score >= policy.review_score:
        return REVIEW
    return APPROVE
