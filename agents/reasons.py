"""The catalogue of reason codes carried by decisions and dead letters.

Codes are stable strings: consumers, dashboards and reviewers rely on them. A decision lists
the codes of the rules that fired, strongest first.
"""

from __future__ import annotations

# Decision reasons: rules of the policy (decide.py).
AMOUNT_OVER_REVIEW_LIMIT = "AMOUNT_OVER_REVIEW_LIMIT"
AMOUNT_OVER_DECLINE_LIMIT = "AMOUNT_OVER_DECLINE_LIMIT"
DEFERRED_OVER_CAP = "DEFERRED_OVER_CAP"
TIER_AMOUNT_OVER_LIMIT = "TIER_AMOUNT_OVER_LIMIT"
MERCHANT_SUSPENDED = "MERCHANT_SUSPENDED"
IDENTITY_MANY_CONTACTS = "IDENTITY_MANY_CONTACTS"
FIRST_ORDER_SHIPS_ELSEWHERE = "FIRST_ORDER_SHIPS_ELSEWHERE"
# Policy limits and lists (decide.py, policy.py).
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
BLOCK_LISTED = "BLOCK_LISTED"
BLOCK_LISTED_HARD = "BLOCK_LISTED_HARD"
ALLOW_LISTED = "ALLOW_LISTED"
IDENTITY_HELD_UNPAID = "IDENTITY_HELD_UNPAID"
EXPOSURE_OVER_LIMIT = "EXPOSURE_OVER_LIMIT"
VELOCITY_OVER_CAP = "VELOCITY_OVER_CAP"
NEW_IDENTITY_OVER_LIMIT = "NEW_IDENTITY_OVER_LIMIT"
# Enrichment (enrich.py).
MERCHANT_UNKNOWN = "MERCHANT_UNKNOWN"
# How the score was made.
SCORE_RULES_ONLY = "SCORE_RULES_ONLY"
MODEL_COLD_START = "MODEL_COLD_START"
SCORE_MODEL = "SCORE_MODEL"
# A feature that raised the model's score: MODEL:<feature name from agents/features.py>.
MODEL_PREFIX = "MODEL:"


def model_reason(feature: str) -> str:
    return f"{MODEL_PREFIX}{feature}"


DECISION_REASONS: dict[str, str] = {
    AMOUNT_OVER_REVIEW_LIMIT: "Order amount is above the policy's review limit.",
    AMOUNT_OVER_DECLINE_LIMIT: "Order amount is above the policy's decline limit.",
    DEFERRED_OVER_CAP: "Deferred payment (後払い) above the per-order cap.",
    TIER_AMOUNT_OVER_LIMIT: "Amount above the review limit for the merchant's risk tier.",
    MERCHANT_SUSPENDED: "The merchant is suspended; its orders are not accepted.",
    IDENTITY_MANY_CONTACTS: "The buyer's identity has used many phones, emails or addresses.",
    FIRST_ORDER_SHIPS_ELSEWHERE: "A first order shipped to another person in another prefecture.",
    METHOD_NOT_ALLOWED: "The merchant's policy does not accept this payment method.",
    BLOCK_LISTED: "The phone, email, device or identity is on the block list (overridable).",
    BLOCK_LISTED_HARD: "On the block list with overridable: false; nothing overrides it.",
    ALLOW_LISTED: "On the allow list: approved over every rule but a hard block.",
    IDENTITY_HELD_UNPAID: "The identity has an unpaid (overdue) order; held until repaid.",
    EXPOSURE_OVER_LIMIT: "Outstanding deferred balance plus this order exceeds the limit.",
    VELOCITY_OVER_CAP: "More earlier orders (or yen) in a window than the policy allows.",
    NEW_IDENTITY_OVER_LIMIT: "A brand-new identity's first order above the policy's limit.",
    MERCHANT_UNKNOWN: "No attributes for the merchant yet; screened with cautious defaults.",
    SCORE_RULES_ONLY: "Score comes from policy rules only (no model consulted).",
    MODEL_COLD_START: "The model has not learned enough labels yet; policy rules decided alone.",
    SCORE_MODEL: "Score is the online model's fraud probability (or a policy limit, if higher).",
    MODEL_PREFIX: "MODEL:<feature>: this feature raised the model's score most (strongest first).",
}

# Dead-letter reasons beyond the codec's (streams/codec.py): domain validation (validate.py).
AMOUNT_NOT_POSITIVE = "amount_not_positive"
UNSUPPORTED_CURRENCY = "unsupported_currency"
INVALID_ITEM = "invalid_item"
EMPTY_ID = "empty_id"
EVENT_TIME_OUT_OF_RANGE = "event_time_out_of_range"
PROCESSING_ERROR = "processing_error"
