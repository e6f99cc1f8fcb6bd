"""agents/decide.py: the default policy's documented rules (see the table in its docstring)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.decide import ModelOpinion, Policy, decide_order
from agents.enrich import enrich_order
from streams.records import Merchant
from tests.unit.conftest import make_merchant, make_order

TIERS = ["ENTERPRISE", "STANDARD", "SMALL", "HIGH_RISK"]
METHODS = ["DEFERRED", "CARD", "WALLET", "BANK_TRANSFER", "CONVENIENCE_STORE", "CARRIER_BILLING"]
RANK = {"APPROVE": 0, "REVIEW": 1, "DECLINE": 2}


def merchant(tier: str = "STANDARD", status: str = "ACTIVE") -> Merchant:
    return make_merchant(tier, status)


DEFAULT = Policy()


def verdict(amount: int, method: str = "CARD", m: Merchant | None = None, policy: Policy = DEFAULT):
    order = make_order(amount, method)
    return decide_order(enrich_order(order, {"m0001": m} if m else {}), policy)


def test_small_order_at_active_standard_merchant_is_approved():
    v = verdict(4980, m=merchant())
    assert (v.decision, v.reasons) == ("APPROVE", ("SCORE_RULES_ONLY",))


@pytest.mark.parametrize("amount", [150_000, 300_000, 500_000])
def test_amount_over_review_limit_is_reviewed(amount):
    v = verdict(amount, m=merchant())
    assert (v.decision, v.score, v.reasons[0]) == ("REVIEW", 0.6, "AMOUNT_OVER_REVIEW_LIMIT")


def test_score_floor_grows_with_amount_when_no_rule_fires():
    assert [verdict(a, m=merchant()).score for a in (10_000, 50_000, 100_000)] == [0.04, 0.2, 0.4]


def test_review_limit_itself_is_approved():
    assert verdict(100_000, m=merchant()).decision == "APPROVE"


def test_amount_over_decline_limit_is_declined():
    v = verdict(600_000, m=merchant())
    assert (v.decision, v.reasons[0]) == ("DECLINE", "AMOUNT_OVER_DECLINE_LIMIT")


def test_deferred_over_cap_is_declined():
    v = verdict(60_000, "DEFERRED", merchant())
    assert (v.decision, v.reasons[0]) == ("DECLINE", "DEFERRED_OVER_CAP")


def test_deferred_cap_does_not_apply_to_cards():
    assert verdict(60_000, "CARD", merchant()).decision == "APPROVE"


@pytest.mark.parametrize("tier, amount", [("HIGH_RISK", 25_000), ("SMALL", 60_000)])
def test_amount_over_tier_limit_is_reviewed(tier, amount):
    v = verdict(amount, m=merchant(tier))
    assert (v.decision, v.reasons[0]) == ("REVIEW", "TIER_AMOUNT_OVER_LIMIT")


def test_unknown_merchant_is_reviewed():
    v = verdict(4980, m=None)
    assert (v.decision, v.reasons) == ("REVIEW", ("MERCHANT_UNKNOWN", "SCORE_RULES_ONLY"))


def test_suspended_merchant_is_declined_whatever_the_amount():
    v = verdict(100, m=merchant(status="SUSPENDED"))
    assert (v.decision, v.score, v.reasons[0]) == ("DECLINE", 1.0, "MERCHANT_SUSPENDED")


def test_reasons_are_ordered_strongest_first():
    v = verdict(600_000, "DEFERRED", merchant("HIGH_RISK", "SUSPENDED"))
    assert v.reasons == (
        "MERCHANT_SUSPENDED",
        "EXPOSURE_OVER_LIMIT",  # 600,000 yen deferred is over the 100,000 yen exposure limit
        "AMOUNT_OVER_DECLINE_LIMIT",
        "DEFERRED_OVER_CAP",
        "TIER_AMOUNT_OVER_LIMIT",
        "SCORE_RULES_ONLY",
    )


def test_unknown_merchant_ranks_below_amount_rules():
    assert verdict(150_000).reasons == (
        "AMOUNT_OVER_REVIEW_LIMIT",
        "MERCHANT_UNKNOWN",
        "SCORE_RULES_ONLY",
    )


MERCHANTS = st.one_of(
    st.none(), st.builds(merchant, st.sampled_from(TIERS), st.sampled_from(["ACTIVE", "SUSPENDED"]))
)


@given(
    m=MERCHANTS,
    method=st.sampled_from(METHODS),
    a=st.integers(1, 2_000_000),
    b=st.integers(1, 2_000_000),
)
def test_score_is_in_unit_interval_and_monotone_in_amount(m, method, a, b):
    low, high = verdict(min(a, b), method, m), verdict(max(a, b), method, m)
    assert 0.0 <= low.score <= high.score <= 1.0
    assert RANK[low.decision] <= RANK[high.decision]
    assert low.reasons[-1] == high.reasons[-1] == "SCORE_RULES_ONLY"


def test_policy_version_is_stable_for_equal_policies():
    assert Policy().version == Policy().version
    assert Policy().version.startswith("default-")


@pytest.mark.parametrize(
    "changed",
    [
        Policy(review_amount=120_000),
        Policy(decline_score=0.8),
        Policy(tier_review_amount={"HIGH_RISK": 10_000, "SMALL": 50_000}),
    ],
)
def test_policy_version_changes_with_a_threshold(changed):
    assert changed.version != Policy().version


def test_thresholds_come_from_the_policy():
    strict = Policy(name="strict", review_amount=3_000)
    assert verdict(4980, m=merchant(), policy=strict).decision == "REVIEW"


def test_every_rule_is_described_in_the_reason_catalogue():
    from agents import reasons
    from agents.decide import RULE_SCORES
    from agents.wallet_rules import PAYMENT_RULE_SCORES

    how_scored = {
        reasons.SCORE_RULES_ONLY,
        reasons.MODEL_COLD_START,
        reasons.MODEL_SWITCHED_OFF,
        reasons.SCORE_MODEL,
        reasons.MODEL_PREFIX,
        reasons.CREDIT_PREFIX,
    }
    rules = set(RULE_SCORES) | set(PAYMENT_RULE_SCORES) | {reasons.CREDIT_SCORE}
    assert rules | how_scored | {reasons.ALLOW_LISTED} == set(reasons.DECISION_REASONS)


def opinion(score: float, warm: bool = True, top: tuple[str, ...] = ()) -> ModelOpinion:
    return ModelOpinion(score=score, version="logreg-v3", warm=warm, contributions=top)


def decide_with(amount: int, model: ModelOpinion, identity: dict | None = None, **kw):
    order = make_order(amount, kw.get("method", "CARD"))
    enriched = enrich_order(order, {"m0001": merchant()}, identity or {}, {})
    return decide_order(enriched, DEFAULT, model)


def test_a_cold_model_leaves_the_rules_to_decide_and_says_so():
    cold = decide_with(3_000, opinion(0.99, warm=False))
    assert cold.decision == "APPROVE"
    assert cold.reasons == ("MODEL_COLD_START",)


def test_the_kill_switch_leaves_the_rules_to_decide_and_says_so():
    off = ModelOpinion(score=0.99, version="logreg-v3", warm=False, switched_off=True)
    assert decide_with(3_000, off).reasons == ("MODEL_SWITCHED_OFF",)
    big = decide_with(300_000, off)
    assert big.reasons[-1] == "MODEL_SWITCHED_OFF" and big.decision != "APPROVE"


def test_a_warm_model_decides_with_its_probability_and_names_its_reasons():
    risky = decide_with(3_000, opinion(0.93, top=("velocity_count_1h", "identity_new")))
    assert risky.decision == "DECLINE"
    assert risky.score == 0.93
    assert risky.reasons == ("MODEL:velocity_count_1h", "MODEL:identity_new", "SCORE_MODEL")
    assert decide_with(3_000, opinion(0.6)).decision == "REVIEW"
    assert decide_with(3_000, opinion(0.1)).decision == "APPROVE"


def test_policy_limits_still_apply_when_the_model_is_confident():
    limited = decide_with(600_000, opinion(0.01, top=("amount_log",)))
    assert limited.decision == "DECLINE"
    assert limited.reasons[0] == "AMOUNT_OVER_DECLINE_LIMIT"
    assert limited.reasons[-2:] == ("MODEL:amount_log", "SCORE_MODEL")


def test_the_warm_model_replaces_the_fraud_heuristics():
    many = {"orders": 5, "phones": 4, "emails": 1, "addresses": 1}
    assert "IDENTITY_MANY_CONTACTS" in decide_with(3_000, opinion(0.2, warm=False), many).reasons
    warm = decide_with(3_000, opinion(0.2), many)
    assert warm.decision == "APPROVE"
    assert "IDENTITY_MANY_CONTACTS" not in warm.reasons
    assert "IDENTITY_MANY_CONTACTS" in warm.fired, "the trace still shows it fired"


def credit_verdict(method: str, credit: float, warm: bool = True, policy: Policy = DEFAULT):
    order = make_order(3_000, method, order_id="o-2")
    opinion = ModelOpinion(0.05, "logreg-v1", True, (), credit, warm, ("credit_late",))
    return decide_order(enrich_order(order, {"m0001": merchant()}), policy, opinion)


def test_a_deferred_order_is_approved_only_when_the_credit_check_passes_too():
    assert credit_verdict("DEFERRED", 0.1).decision == "APPROVE"
    review = credit_verdict("DEFERRED", 0.6)
    assert review.decision == "REVIEW"
    assert review.reasons[:2] == ("CREDIT_SCORE", "CREDIT:credit_late")
    assert credit_verdict("DEFERRED", 0.85).decision == "DECLINE"
    assert credit_verdict("DEFERRED", 0.85, warm=False).decision == "APPROVE"  # limits decide
    assert credit_verdict("CARD", 0.95).decision == "APPROVE"  # no credit check for cards
    lenient = Policy(credit_review_score=0.7, credit_decline_score=0.95)
    assert credit_verdict("DEFERRED", 0.85, policy=lenient).decision == "REVIEW"
