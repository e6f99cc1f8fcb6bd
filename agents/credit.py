"""Stage 4b: the credit check (支払い能力・意志) of deferred-payment orders (pure, no I/O).

Fraud and credit are two questions: a late payer is not a fraudster, and a fraudster often has
a perfect (short) history. So a deferred order gets a second score, from a second model that
learns only repayments (agents/model.py `credit_label_of`: UNPAID → 1, PAID → 0) from
features of the identity's repayment history (its account, agents/state.py), never from
fraud labels. The policy turns it into its own reason (CREDIT_SCORE, agents/decide.py); an
order is approved only when both checks pass.

Credit features are computed from the account as the order found it (before the decision),
like every other feature, and kept in the order's snapshot for the learner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from agents.normalize import age_on

JST = timezone(timedelta(hours=9), "JST")
DUE_DAYS = 14  # a repayment later than this (on average) marks a slow payer
# Credit bands of shinsa_credit_* metrics: upper bounds of the credit score (unpaid
# probability) of bands A … D; E above; COLD while the credit model is not warm.
BAND_BOUNDS = (("A", 0.02), ("B", 0.05), ("C", 0.10), ("D", 0.25))
COLD_BAND = "COLD"
COHORTS_SHOWN = 13  # order months exported as metrics (bounded labels)
RECENT_COHORTS, BASELINE_COHORTS = 2, 6
MIN_COHORT_LABELS = 50  # labels each side needs before the unpaid-rate ratio is reported


def credit_features(
    amount: int,
    category: str,
    history: Mapping[str, int],
    outstanding: int,
    open_orders: int,
    held: bool,
    identity_age_days: float,
    buyer: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """The credit model's features of one deferred order, from its identity's account as the
    order found it: repayment counts (on time, late, unpaid), days to pay, the open balance,
    the amount against what the identity has repaid before, the identity's age and the
    category; and what a first order can tell of its buyer (`buyer_traits`): age band, phone
    kind, email class — numbers and classes only, never the values."""
    on_time, late, unpaid = (history.get(k, 0) for k in ("on_time", "late", "unpaid"))
    repaid = on_time + late
    settled = repaid + unpaid
    days = history.get("pay_hours", 0) / 24 / repaid if repaid else 0.0
    mean_repaid = history.get("repaid_yen", 0) / repaid if repaid else 0.0
    amount_log = math.log1p(amount)
    return {
        "credit_amount_log": amount_log,
        "credit_on_time": math.log1p(on_time),
        "credit_late": math.log1p(late),
        "credit_unpaid": math.log1p(unpaid),
        "credit_no_history": 0.0 if settled else 1.0,
        "credit_bad_share": (late + unpaid) / settled if settled else 0.0,
        "credit_days_to_pay": days,
        "credit_pays_after_due": 1.0 if days > DUE_DAYS else 0.0,
        "credit_amount_vs_repaid": amount_log - math.log1p(mean_repaid) if repaid else 0.0,
        "credit_outstanding_log": math.log1p(max(outstanding, 0)),
        "credit_open_orders": float(open_orders),
        "credit_held": 1.0 if held else 0.0,
        "credit_identity_age_log": math.log1p(max(identity_age_days, 0.0)),
        f"category={category}": 1.0,
        **{f"credit_{name}={value}": 1.0 for name, value in (buyer or {}).items()},
    }


def buyer_traits(birth_date: str | None, on: date, attributes: Mapping[str, Any]) -> dict[str, str]:
    """The buyer's age band on the order's day, phone kind and email domain class (from
    agents/attributes.py): bounded classes, no PII."""
    age = age_on(birth_date, on)
    band = "unknown"
    if age is not None:
        band = next((b for b, top in AGE_BANDS if 0 <= age < top), "unknown")
    return {
        "age": band,
        "phone": str(attributes.get("phone_kind", "missing")),
        "email": str(attributes.get("email_domain_class", "missing")),
    }


AGE_BANDS = (("under25", 25), ("25-34", 35), ("35-49", 50), ("50-64", 65), ("65+", 1_000))


# ---------------------------------------------------------------- accounts (pure)
# {"open": {order_id: yen}, "unpaid": [order_id, ...], "history": {"on_time": n, ...}}; in Redis
# (agents/state.py) the same rules are agents/accounts.lua's
Account = dict[str, Any]
REPAYMENTS = ("on_time", "late", "unpaid")  # the repayment history dynamic limits read
# ... and its sums the credit features read: hours from order to repayment, yen repaid
HISTORY_SUMS = ("pay_hours", "repaid_yen")


def empty_account() -> Account:
    return {"open": {}, "unpaid": [], "history": dict.fromkeys(REPAYMENTS + HISTORY_SUMS, 0)}


OUTCOME_EVENTS = {
    "PAID": "repaid",
    "UNPAID": "unpaid",
    "FRAUD_CONFIRMED": "written_off",
    "CHARGEBACK": "written_off",
    "CANCELLED": "written_off",  # a cancelled order is owed by nobody: closed like a write-off
}


def outstanding(account: Account) -> int:
    return sum(account["open"].values())


def is_held(account: Account) -> bool:
    return bool(account["unpaid"])


def apply_event(
    account: Account, event: str, order_id: str, amount: int, hours: int = 0
) -> Account:
    """The account after one event on one of its orders (accounts.lua does the same in
    Redis); a repayment adds its hours to pay and its yen to the history's sums."""
    open_orders = dict(account["open"])
    history = dict(account.get("history") or empty_account()["history"])
    was_open, was_unpaid = order_id in open_orders, order_id in account["unpaid"]
    unpaid = [o for o in account["unpaid"] if o != order_id]
    if event == "approved":
        open_orders[order_id] = amount
    elif event == "unpaid":
        unpaid.append(order_id)
        if was_open and not was_unpaid:
            history["unpaid"] += 1
    elif event in ("repaid", "written_off"):
        yen = open_orders.pop(order_id, 0)
        if event == "repaid" and was_open:  # late: repaid after it was reported unpaid
            history["late" if was_unpaid else "on_time"] += 1
            history["pay_hours"] = history.get("pay_hours", 0) + max(0, hours)
            history["repaid_yen"] = history.get("repaid_yen", 0) + yen
    else:
        raise ValueError(f"unknown account event {event!r}")
    return {"open": open_orders, "unpaid": unpaid, "history": history}


def credit_band(score: float | None, warm: bool) -> str:
    """The band of a credit score (bounded metric label)."""
    if score is None or not warm:
        return COLD_BAND
    for band, bound in BAND_BOUNDS:
        if score < bound:
            return band
    return "E"


def cohort_of(event_ms: int) -> str:
    """The order's month in Japan (YYYY-MM): repayment cohorts are by month of order."""
    return datetime.fromtimestamp(event_ms / 1000, UTC).astimezone(JST).strftime("%Y-%m")


def count_cohort(
    cohorts: dict[str, list[int]], event_ms: int, label: int, before: int | None
) -> None:
    """Add a credit label to its order's month ([paid, unpaid]); a changed label moves."""
    tally = cohorts.setdefault(cohort_of(event_ms), [0, 0])
    if before is not None:
        tally[before] = max(0, tally[before] - 1)
    tally[label] += 1


def unpaid_rate(tallies: list[list[int]]) -> tuple[float | None, int]:
    paid = sum(t[0] for t in tallies)
    unpaid = sum(t[1] for t in tallies)
    total = paid + unpaid
    return (unpaid / total if total else None), total


def unpaid_ratio(cohorts: Mapping[str, list[int]]) -> float | None:
    """Unpaid rate of the newest order months over that of the months before them, or None
    while either side has fewer than MIN_COHORT_LABELS labels.

    A young cohort's unpaid orders are reported after 30 days, its paid ones within 14: its
    rate starts low and rises. So the ratio errs late, never early: it does not alarm on a
    young cohort, and an alert on it fires once unpaid reports actually exceed the past."""
    months = sorted(cohorts)
    recent = [cohorts[m] for m in months[-RECENT_COHORTS:]]
    baseline = [cohorts[m] for m in months[-RECENT_COHORTS - BASELINE_COHORTS : -RECENT_COHORTS]]
    now, n_now = unpaid_rate(recent)
    past, n_past = unpaid_rate(baseline)
    if now is None or past is None or n_now < MIN_COHORT_LABELS or n_past < MIN_COHORT_LABELS:
        return None
    return now / past if past else (math.inf if now else 1.0)


def shown_cohorts(cohorts: Mapping[str, list[int]]) -> dict[str, list[int]]:
    """The newest COHORTS_SHOWN months (what the metrics export)."""
    return {m: cohorts[m] for m in sorted(cohorts)[-COHORTS_SHOWN:]}
