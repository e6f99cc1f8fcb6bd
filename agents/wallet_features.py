"""Wallet screening, features: a payment against its accounts' recent history (pure).

Everything counts from the payment's own event time backwards: entries at or after it, and
the payment itself (a retried batch finds its own first attempt in Redis), never count, so a
replayed backlog does not leak the future into a feature. What is loaded for a payment
(agents/state.py `WalletState`): both accounts' facts (from the `accounts` topic), the payer's
payments of the last 30 days, the counterparty's payments and incoming transfers, the payer's
logins of the last hour and the devices it has used.

The features and the fraud pattern each one is for:

| feature                                  | pattern                                       |
|------------------------------------------|-----------------------------------------------|
| pay_count_1h / _24h, pay_amount_24h_log   | velocity of this kind on the account          |
| payer_payments_30d_log, payer_age_days_log | a new or dormant payer (stolen-card top-ups)  |
| pay_amount_vs_mean                        | amount against the account's own history      |
| minutes_since_charge, cash_out_after_charge | stolen card charged, then withdrawn (cash-out) |
| new_device_login_1h, failed_logins_1h     | account takeover before money leaves          |
| first_transfer_to_counterparty            | scam-driven transfer to someone new           |
| counterparty_fan_in_1h / _24h, fan_out_*  | mule accounts collecting from many senders    |
| counterparty_age_days_log, counterparty_kyc=* | fresh, unverified receiving accounts       |
| self_transfer                             | between one person's accounts: not fraud      |
| split_bill_like                           | paying a friend back after a shared purchase  |
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streams.records import Payment

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
HISTORY_MS = 30 * DAY  # payer history kept and read
CASH_OUT_MS = 30 * MINUTE  # a withdrawal or transfer this soon after a charge is a cash-out
SPLIT_BILL_MS = 6 * HOUR
SPLIT_BILL_MAX_YEN = 20_000
JST_MS = 9 * HOUR
MONEY_OUT = ("TRANSFER", "WITHDRAW")
PAYMENT_FEATURE = "pay_amount_log"  # every payment has it: how the model counts their labels


@dataclass(slots=True, frozen=True)
class PastPayment:
    """One earlier payment of an account (its history entry in Redis)."""

    at_ms: int
    kind: str
    amount: int
    counterparty: str  # "" unless a TRANSFER
    payment_id: str

    def member(self) -> str:
        return f"{self.kind}|{self.amount}|{self.counterparty}|{self.payment_id}"

    @classmethod
    def parse(cls, member: str, at_ms: float) -> PastPayment:
        kind, amount, counterparty, payment_id = member.split("|", 3)
        return cls(int(at_ms), kind, int(amount), counterparty, payment_id)


@dataclass(slots=True, frozen=True)
class Incoming:
    """A transfer an account received."""

    at_ms: int
    sender: str
    amount: int
    payment_id: str

    def member(self) -> str:
        return f"{self.sender}|{self.amount}|{self.payment_id}"

    @classmethod
    def parse(cls, member: str, at_ms: float) -> Incoming:
        sender, amount, payment_id = member.split("|", 2)
        return cls(int(at_ms), sender, int(amount), payment_id)


@dataclass(slots=True, frozen=True)
class LoginSeen:
    """A login of the account: its device (keyed hash, "" if none) and whether it succeeded."""

    at_ms: int
    device: str
    success: bool
    login_id: str

    def member(self) -> str:
        return f"{self.device}|{int(self.success)}|{self.login_id}"

    @classmethod
    def parse(cls, member: str, at_ms: float) -> LoginSeen:
        device, success, login_id = member.split("|", 2)
        return cls(int(at_ms), device, success == "1", login_id)


@dataclass(slots=True, frozen=True)
class AccountFacts:
    """What the `accounts` topic told us of a wallet account (no PII: the person became an
    identity id)."""

    known: bool = False
    identity_id: str | None = None
    kyc: str = "NONE"
    opened_ms: int | None = None
    status: str = "ACTIVE"  # ACTIVE, FROZEN, CLOSED
    daily_limit: int | None = None

    @classmethod
    def from_hash(cls, fields: Mapping[bytes, bytes]) -> AccountFacts:
        if not fields:
            return cls()
        text = {k.decode(): v.decode() for k, v in fields.items()}
        return cls(
            True,
            text.get("identity") or None,
            text.get("kyc", "NONE"),
            int(text["opened"]) if "opened" in text else None,
            text.get("status", "ACTIVE"),
            int(text["limit"]) if "limit" in text else None,
        )


@dataclass(slots=True)
class WalletContext:
    """Everything a payment is screened against, as loaded for it."""

    payer: AccountFacts = field(default_factory=AccountFacts)
    counterparty: AccountFacts | None = None
    payer_history: Sequence[PastPayment] = ()
    counterparty_history: Sequence[PastPayment] = ()
    counterparty_incoming: Sequence[Incoming] = ()
    logins: Sequence[LoginSeen] = ()
    devices: Mapping[str, int] = field(default_factory=dict)  # device hash → first seen ms


def before(entries: Sequence, at_ms: int, own_id: str) -> list:
    """Entries strictly before the payment, the payment itself excluded."""
    return [e for e in entries if e.at_ms < at_ms and e.payment_id != own_id]


def jst_day(at_ms: int) -> int:
    return (at_ms + JST_MS) // DAY


def log_days(ms: float) -> float:
    return math.log1p(max(ms, 0) / DAY)


def is_self_transfer(payment: Payment, ctx: WalletContext) -> bool:
    """Between two accounts of one identity (resolved from their KYC persons)."""
    cp = ctx.counterparty
    return (
        payment.kind == "TRANSFER"
        and cp is not None
        and ctx.payer.identity_id is not None
        and cp.identity_id == ctx.payer.identity_id
    )


def new_device_login(logins: Sequence[LoginSeen], devices: Mapping[str, int], at_ms: int) -> bool:
    """A successful login in the hour before from a device the account first used in that hour,
    when it had used another device before (an account's very first device is not 'new')."""
    if len(devices) < 2:
        return False
    oldest = min(devices.values())
    for login in logins:
        if not (at_ms - HOUR <= login.at_ms < at_ms and login.success and login.device):
            continue
        first = devices.get(login.device, login.at_ms)
        if first > oldest and first >= at_ms - HOUR:
            return True
    return False


def payment_features(payment: Payment, ctx: WalletContext, at_ms: int) -> dict[str, float]:
    """The model's view of one wallet payment (names stable: snapshots and models keep them)."""
    kind, amount, own = payment.kind, payment.amount, payment.payment_id
    history = before(ctx.payer_history, at_ms, own)
    same_kind = [p for p in history if p.kind == kind]
    x: dict[str, float] = {
        f"payment_kind={kind}": 1.0,
        PAYMENT_FEATURE: math.log1p(amount),
        "pay_count_1h": float(sum(p.at_ms >= at_ms - HOUR for p in same_kind)),
        "pay_count_24h": float(sum(p.at_ms >= at_ms - DAY for p in same_kind)),
        "pay_amount_24h_log": math.log1p(
            sum(p.amount for p in same_kind if p.at_ms >= at_ms - DAY)
        ),
        "pay_all_count_1h": float(sum(p.at_ms >= at_ms - HOUR for p in history)),
        "payer_payments_30d_log": math.log1p(len(history)),
        "payer_kyc=" + ctx.payer.kyc: 1.0,
        "payer_account_unknown": float(not ctx.payer.known),
    }
    if payment.channel:
        x[f"channel={payment.channel}"] = 1.0
    if same_kind:
        mean = sum(p.amount for p in same_kind) / len(same_kind)
        x["pay_amount_vs_mean"] = math.log((amount + 1) / (mean + 1))
    if ctx.payer.opened_ms is not None:
        x["payer_age_days_log"] = log_days(at_ms - ctx.payer.opened_ms)
    x.update(cash_out_features(kind, amount, history, at_ms))
    x.update(login_features(ctx, at_ms))
    if kind == "TRANSFER":
        x.update(counterparty_features(payment, ctx, history, at_ms))
    return x


def cash_out_features(
    kind: str, amount: int, history: Sequence[PastPayment], at_ms: int
) -> dict[str, float]:
    if kind not in MONEY_OUT:
        return {}
    charges = [p for p in history if p.kind == "CHARGE"]
    if not charges:
        return {"minutes_since_charge": 10_080.0, "cash_out_after_charge": 0.0}
    last = max(charges, key=lambda p: p.at_ms)
    minutes = min((at_ms - last.at_ms) / MINUTE, 10_080.0)
    recent = sum(p.amount for p in charges if p.at_ms >= at_ms - CASH_OUT_MS)
    return {
        "minutes_since_charge": minutes,
        "cash_out_after_charge": float(recent > 0 and amount >= 0.5 * recent),
    }


def login_features(ctx: WalletContext, at_ms: int) -> dict[str, float]:
    failed = sum(
        1 for login in ctx.logins if at_ms - HOUR <= login.at_ms < at_ms and not login.success
    )
    return {
        "new_device_login_1h": float(new_device_login(ctx.logins, ctx.devices, at_ms)),
        "failed_logins_1h": float(failed),
    }


def counterparty_features(
    payment: Payment, ctx: WalletContext, history: Sequence[PastPayment], at_ms: int
) -> dict[str, float]:
    cp_id = payment.counterparty_account_id or ""
    transfers = [p for p in history if p.kind == "TRANSFER"]
    incoming = before(ctx.counterparty_incoming, at_ms, payment.payment_id)
    cp = ctx.counterparty or AccountFacts()
    x = {
        "first_transfer_to_counterparty": float(all(p.counterparty != cp_id for p in transfers)),
        "counterparty_fan_in_1h": float(
            len({i.sender for i in incoming if i.at_ms >= at_ms - HOUR})
        ),
        "counterparty_fan_in_24h": float(
            len({i.sender for i in incoming if i.at_ms >= at_ms - DAY})
        ),
        "fan_out_1h": float(len({p.counterparty for p in transfers if p.at_ms >= at_ms - HOUR})),
        "fan_out_24h": float(len({p.counterparty for p in transfers if p.at_ms >= at_ms - DAY})),
        "counterparty_kyc=" + cp.kyc: 1.0,
        "counterparty_account_unknown": float(not cp.known),
        "self_transfer": float(is_self_transfer(payment, ctx)),
        "split_bill_like": float(split_bill_like(payment, ctx, at_ms)),
    }
    if cp.opened_ms is not None:
        x["counterparty_age_days_log"] = log_days(at_ms - cp.opened_ms)
    return x


def split_bill_like(payment: Payment, ctx: WalletContext, at_ms: int) -> bool:
    """A small transfer to someone who paid a merchant at least as much in the hours before:
    paying a friend back for a shared purchase (normal, however new the pairing)."""
    if payment.amount > SPLIT_BILL_MAX_YEN:
        return False
    return any(
        p.kind == "PAY" and at_ms - SPLIT_BILL_MS <= p.at_ms < at_ms and p.amount >= payment.amount
        for p in ctx.counterparty_history
    )


def money_out_today(history: Sequence[PastPayment], at_ms: int) -> int:
    """Yen already transferred or withdrawn on the payment's JST day (the daily limit)."""
    day = jst_day(at_ms)
    return sum(p.amount for p in history if p.kind in MONEY_OUT and jst_day(p.at_ms) == day)
