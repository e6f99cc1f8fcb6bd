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
CREDIT_LIMIT = "CREDIT_LIMIT"  # ability to pay (支払い能力), apart from the fraud reasons
CREDIT_SCORE = "CREDIT_SCORE"  # the credit model's unpaid probability (agents/credit.py)
VELOCITY_OVER_CAP = "VELOCITY_OVER_CAP"
NEW_IDENTITY_OVER_LIMIT = "NEW_IDENTITY_OVER_LIMIT"
# Wallet payments (agents/wallet_rules.py).
ACCOUNT_FROZEN = "ACCOUNT_FROZEN"
ACCOUNT_UNKNOWN = "ACCOUNT_UNKNOWN"
KYC_LIMIT_EXCEEDED = "KYC_LIMIT_EXCEEDED"
DAILY_LIMIT_EXCEEDED = "DAILY_LIMIT_EXCEEDED"
COUNTERPARTY_FAN_IN = "COUNTERPARTY_FAN_IN"
NEW_DEVICE_BEFORE_CASH_OUT = "NEW_DEVICE_BEFORE_CASH_OUT"
FAILED_LOGINS_BEFORE = "FAILED_LOGINS_BEFORE"
CASH_OUT_AFTER_CHARGE = "CASH_OUT_AFTER_CHARGE"
FIRST_TRANSFER_LARGE = "FIRST_TRANSFER_LARGE"
SELF_TRANSFER = "SELF_TRANSFER"
PAYMENT_VELOCITY_OVER_CAP = "PAYMENT_VELOCITY_OVER_CAP"
# Enrichment (enrich.py).
MERCHANT_UNKNOWN = "MERCHANT_UNKNOWN"
# How the score was made.
SCORE_RULES_ONLY = "SCORE_RULES_ONLY"
MODEL_COLD_START = "MODEL_COLD_START"
MODEL_SWITCHED_OFF = "MODEL_SWITCHED_OFF"
SCORE_MODEL = "SCORE_MODEL"
# A feature that raised the model's score: MODEL:<feature name from agents/features.py>.
MODEL_PREFIX = "MODEL:"


# A feature that raised the credit score: CREDIT:<feature name from agents/credit.py>.
CREDIT_PREFIX = "CREDIT:"


def rules_tail(consulted: bool, switched_off: bool) -> str:
    """The last reason of a decision the rules made alone: why no model decided."""
    if not consulted:
        return SCORE_RULES_ONLY
    return MODEL_SWITCHED_OFF if switched_off else MODEL_COLD_START


def model_reason(feature: str) -> str:
    return f"{MODEL_PREFIX}{feature}"


def credit_reason(feature: str) -> str:
    return f"{CREDIT_PREFIX}{feature}"


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
    CREDIT_LIMIT: "Outstanding deferred balance plus this order exceeds the identity's credit "
    "limit, which grows with on-time repayments and shrinks with late or unpaid ones.",
    CREDIT_SCORE: "Ability to pay: the credit model's probability that this deferred order "
    "goes unpaid reaches the policy's credit_review_score (or credit_decline_score).",
    VELOCITY_OVER_CAP: "More earlier orders (or yen) in a window than the policy allows.",
    NEW_IDENTITY_OVER_LIMIT: "A brand-new identity's first order above the policy's limit.",
    ACCOUNT_FROZEN: "The paying (or receiving) wallet account is frozen or closed.",
    ACCOUNT_UNKNOWN: "No account event seen for the paying wallet account; cautious defaults.",
    KYC_LIMIT_EXCEEDED: "Amount above what the account's KYC level allows for this kind.",
    DAILY_LIMIT_EXCEEDED: "Today's transfers and withdrawals exceed the account's daily limit.",
    COUNTERPARTY_FAN_IN: "The receiving account got money from many senders lately (mule).",
    NEW_DEVICE_BEFORE_CASH_OUT: "Money leaves within the hour after a login from a new device.",
    FAILED_LOGINS_BEFORE: "Failed logins on the account in the hour before (takeover attempt).",
    CASH_OUT_AFTER_CHARGE: "Withdrawn or sent on soon after a charge (cash-out).",
    FIRST_TRANSFER_LARGE: "A large first transfer to this counterparty (scam-driven).",
    SELF_TRANSFER: "Between two accounts of one identity: not fraud, counterparty rules skipped.",
    PAYMENT_VELOCITY_OVER_CAP: "More payments of this kind (or yen) in a window than allowed.",
    MERCHANT_UNKNOWN: "No attributes for the merchant yet; screened with cautious defaults.",
    SCORE_RULES_ONLY: "Score comes from policy rules only (no model consulted).",
    MODEL_COLD_START: "The model has not learned enough labels yet; policy rules decided alone.",
    MODEL_SWITCHED_OFF: "The kill switch is on (`shinsa model off`); policy rules decided alone.",
    SCORE_MODEL: "Score is the online model's fraud probability (or a policy limit, if higher).",
    MODEL_PREFIX: "MODEL:<feature>: this feature raised the model's score most (strongest first).",
    CREDIT_PREFIX: "CREDIT:<feature>: this repayment feature raised the credit score most.",
}

# Dead-letter reasons beyond the codec's (streams/codec.py): domain validation (validate.py).
AMOUNT_NOT_POSITIVE = "amount_not_positive"
UNSUPPORTED_CURRENCY = "unsupported_currency"
INVALID_ITEM = "invalid_item"
EMPTY_ID = "empty_id"
EVENT_TIME_OUT_OF_RANGE = "event_time_out_of_range"
PROCESSING_ERROR = "processing_error"
MISSING_ACCOUNT = "missing_account"
MISSING_COUNTERPARTY = "missing_counterparty"
INVALID_COUNTERPARTY = "invalid_counterparty"
INVALID_CHANNEL = "invalid_channel"
KYC_INCOMPLETE = "kyc_incomplete"
INVALID_LIMIT = "invalid_limit"


MODEL_FEATURE = "MODEL_FEATURE"  # the metric label of every MODEL:<feature> reason
CREDIT_FEATURE = "CREDIT_FEATURE"  # ... and of every CREDIT:<feature> reason


def metric_reason(code: str) -> str:
    """A reason as a metric label: the catalogue's codes, MODEL_FEATURE, or OTHER (bounded)."""
    if code.startswith(MODEL_PREFIX):
        return MODEL_FEATURE
    if code.startswith(CREDIT_PREFIX):
        return CREDIT_FEATURE
    return code if code in DECISION_REASONS else "OTHER"
