"""The wallet's backtest (`shinsa eval FILE --payments`): a simulator file's wallet payments
replayed through the worker's own feature code (agents/wallet_features.py), with the state the
worker keeps in Redis rebuilt in memory from the same events in event-time order: account
facts from `accounts`, logins and devices from `logins`, histories and incoming transfers from
the payments before. Labels come from outcomes with subject PAYMENT; the replay and metrics are
the orders' (streams/tools/backtest.py), plus the recall of each named pattern.

One simplification: two accounts are one person when their KYC persons share name and birth
date (the worker asks the identity graph, which also links spelling variations).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from agents.entities import payment_entities
from agents.model import label_of
from agents.validate import Rejection, check_account, check_payment, decode_event
from agents.wallet_features import (
    DAY,
    HISTORY_MS,
    HOUR,
    AccountFacts,
    Incoming,
    LoginSeen,
    PastPayment,
    WalletContext,
    payment_features,
)
from streams.errors import UserError
from streams.records import WALLET_KINDS, Account, Login, Outcome, Payment


def to_ms(moment: Any) -> int:
    return int(moment.timestamp() * 1000)


@dataclass
class WalletMemory:
    """What the worker keeps in Redis for the wallet, in memory (agents/state.py WalletState)."""

    facts: dict[str, dict[str, Any]] = field(default_factory=lambda: defaultdict(dict))
    payments: dict[str, list[PastPayment]] = field(default_factory=lambda: defaultdict(list))
    incoming: dict[str, list[Incoming]] = field(default_factory=lambda: defaultdict(list))
    logins: dict[str, list[LoginSeen]] = field(default_factory=lambda: defaultdict(list))
    devices: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))

    def account(self, event: Account) -> None:
        facts, at_ms = self.facts[event.account_id], to_ms(event.event_time)
        if event.kind == "OPENED":
            facts["opened"] = at_ms
        elif event.kind == "KYC_VERIFIED" and event.person is not None:
            facts["kyc"] = event.kyc_level or "NONE"
            person = f"{event.person.name}|{event.person.birth_date}".encode()
            facts["identity"] = hashlib.sha256(person).hexdigest()[:16]
        elif event.kind == "LIMITS_CHANGED":
            facts["limit"] = int(event.daily_limit or 0)
        elif event.kind in ("FROZEN", "CLOSED"):
            facts["status"] = event.kind

    def login(self, event: Login) -> None:
        at_ms = to_ms(event.event_time)
        device = event.device_id or ""
        self.logins[event.account_id].append(
            LoginSeen(at_ms, device, event.success, event.login_id)
        )
        if event.success and device:
            known = self.devices[event.account_id]
            known[device] = min(known.get(device, at_ms), at_ms)

    def facts_of(self, account_id: str) -> AccountFacts:
        facts = self.facts.get(account_id)
        if not facts:
            return AccountFacts()
        return AccountFacts(
            True,
            facts.get("identity"),
            facts.get("kyc", "NONE"),
            facts.get("opened"),
            facts.get("status", "ACTIVE"),
            facts.get("limit"),
        )

    def context(self, payment: Payment, at_ms: int) -> WalletContext:
        payer = payment.account_id or ""
        ctx = WalletContext(
            payer=self.facts_of(payer),
            payer_history=[p for p in self.payments[payer] if p.at_ms >= at_ms - HISTORY_MS],
            logins=[x for x in self.logins[payer] if x.at_ms >= at_ms - HOUR],
            devices=dict(self.devices[payer]),
        )
        if payment.kind == "TRANSFER":
            other = payment.counterparty_account_id or ""
            ctx.counterparty = self.facts_of(other)
            ctx.counterparty_incoming = [i for i in self.incoming[other] if i.at_ms >= at_ms - DAY]
            ctx.counterparty_history = [
                p for p in self.payments[other] if p.at_ms >= at_ms - 6 * HOUR
            ]
        return ctx

    def paid(self, payment: Payment, at_ms: int) -> None:
        other = payment.counterparty_account_id or ""
        entry = PastPayment(at_ms, payment.kind, payment.amount, other, payment.payment_id)
        self.payments[payment.account_id or ""].append(entry)
        if payment.kind == "TRANSFER":
            got = Incoming(at_ms, payment.account_id or "", payment.amount, payment.payment_id)
            self.incoming[other].append(got)


@dataclass
class WalletFile:
    """The wallet payments of a simulator file, their features, labels and patterns."""

    times: list[int] = field(default_factory=list)
    features: list[dict[str, float]] = field(default_factory=list)
    payment_ids: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    entities: list[tuple[tuple[str, str], ...]] = field(default_factory=list)  # for known risk
    patterns: list[str | None] = field(default_factory=list)
    labels: dict[str, tuple[int, int]] = field(default_factory=dict)  # id → (label, known ms)
    skipped: Counter[str] = field(default_factory=Counter)


NAMES = {"accounts": "Account", "logins": "Login", "payments": "Payment", "outcomes": "Outcome"}


def read_wallet(path: Path, registry: Any) -> WalletFile:
    """Replay the file's wallet events in event-time order into features, as the worker would
    compute them when each payment arrived."""
    events: list[tuple[int, int, Any, str | None]] = []
    out = WalletFile()
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            envelope = orjson.loads(line)
            name = NAMES.get(envelope.get("topic"))
            if name is None:
                continue
            record = decode_event(registry, name, orjson.dumps(envelope.get("value")), None)
            if isinstance(record, Rejection):
                out.skipped[f"invalid {envelope['topic']}"] += 1
                continue
            moment = record.event_time
            problem = (
                check_payment(record, moment)
                if isinstance(record, Payment)
                else check_account(record, moment)
                if isinstance(record, Account)
                else None
            )
            if problem is not None:
                out.skipped[f"invalid {envelope['topic']}"] += 1
                continue
            events.append((to_ms(moment), number, record, envelope.get("pattern")))
    events.sort(key=lambda e: (e[0], e[1]))
    memory = WalletMemory()
    for at_ms, _, record, pattern in events:
        if isinstance(record, Account):
            memory.account(record)
        elif isinstance(record, Login):
            memory.login(record)
        elif isinstance(record, Outcome):
            label = label_of(record.kind)
            if record.subject == "PAYMENT" and label is not None:
                earlier = out.labels.get(record.order_id)
                if earlier is None or (label == 1 and earlier[0] == 0):
                    out.labels[record.order_id] = (label, at_ms)
        elif isinstance(record, Payment) and record.kind in WALLET_KINDS:
            ctx = memory.context(record, at_ms)
            keys = payment_entities(
                ctx.payer.identity_id,
                record.account_id,
                record.merchant_id,
                record.device_id,
                record.card_fingerprint,
            )
            out.features.append(payment_features(record, ctx, at_ms))
            out.entities.append(tuple(keys))
            out.times.append(at_ms)
            out.payment_ids.append(record.payment_id)
            out.kinds.append(record.kind)
            out.patterns.append(pattern)
            memory.paid(record, at_ms)
    if not out.features:
        raise UserError(f"{path}: no wallet payments (simulate with --wallet N)")
    return out


def pattern_recall(
    scores: Sequence[float], patterns: Sequence[str | None], labelled: Sequence[int], rate: float
) -> dict[str, Any]:
    """Among the `labelled` transactions (indices), at the score above which `rate` of the
    legitimate ones are flagged: the share of each pattern's flagged, and of legitimate ones."""
    legit = sorted((scores[i] for i in labelled if patterns[i] is None), reverse=True)
    if not legit:
        return {}
    threshold = legit[max(0, min(len(legit) - 1, round(len(legit) * rate) - 1))]
    out: dict[str, Any] = {"threshold": threshold}
    by_pattern: dict[str, list[float]] = {}
    for i in labelled:
        if patterns[i] is not None:
            by_pattern.setdefault(patterns[i], []).append(scores[i])  # type: ignore[index]
    for name, mine in sorted(by_pattern.items()):
        out[name] = round(sum(s >= threshold for s in mine) / len(mine), 3)
    out["legitimate_flagged"] = round(sum(s >= threshold for s in legit) / len(legit), 4)
    return out
