"""Wallet screening (the wallet seed): accounts and logins kept, payments decided.

    accounts ──> watch_accounts: facts per account; a KYC person → identity graph → identity
    logins   ──> watch_logins: recent logins and the devices an account used
    payments (CHARGE, PAY, TRANSFER, WITHDRAW) ──> the "pay" transactional loop:
                 earlier decision of the payment id? re-sent       state.py
                 accounts, histories, logins: one Redis read       state.py WalletState
                 screen_payments: features (wallet_features.py), score (model.py: one
                   estimator per payment kind in the one model), decide (wallet_rules.py)
                 histories, snapshots, decisions written; decisions, traces produced with
                 the input offsets in one Kafka transaction (streams/txloop.py)

A payment decision is a `Decision` with subject PAYMENT, keyed by the payment id (its
order_id field holds the payment id too), so one consumer of `decisions` sees both and tells
them apart by `subject`. Its snapshot, decision and trace live in Redis under `pay:<payment id>`
(never confused with an order id); an Outcome with subject PAYMENT labels it for the learner.
Invalid payments are dead-lettered once, by agents/ingest.py; this loop skips them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache, partial
from typing import Any

from agents import reasons
from agents.attributes import address_attributes
from agents.control import Control
from agents.decide import APPROVE, DECLINE, REVIEW, ModelOpinion, Verdict
from agents.entities import EntityState, known_risk, payment_entities
from agents.identity import IdentityGraph, person_keys
from agents.policy import PolicySet
from agents.screen import (
    Outputs,
    count_reasons,
    replay,
    stop_worker,
    to_ms,
    trace_record,
)
from agents.segments import SegmentStore, jst_date, jst_day, person_attributes
from agents.state import (
    Changes,
    HotPathState,
    Snapshot,
    WalletState,
    entity_ref,
    redis_client,
)
from agents.validate import Rejection, check_account, check_payment, decode_event
from agents.wallet_features import (
    Incoming,
    PastPayment,
    WalletContext,
    before,
    money_out_today,
    payment_features,
)
from agents.wallet_rules import PaymentPolicy, PaymentSignals, decide_payment
from streams.app import Runtime
from streams.codec import SchemaRegistry
from streams.delivery import Outgoing
from streams.dlq import dead_letter
from streams.metrics import (
    CASH_OUT_STOPPED,
    LATENCY,
    MODEL_SCORE,
    PAYMENT_AMOUNT,
    PAYMENT_DECISIONS,
    PAYMENTS_REPLAYED,
)
from streams.records import WALLET_KINDS, Account, Login, Payment
from streams.txloop import Received, Stopwatch, TransactionalLoop

log = logging.getLogger(__name__)

PAYMENT_PREFIX = "pay:"  # Redis ids of payment snapshots, decisions and traces


def payment_ref(payment_id: str) -> str:
    return f"{PAYMENT_PREFIX}{payment_id}"


# ---------------------------------------------------------------- the batch core (pure)
@dataclass(slots=True)
class PaymentCandidate:
    message: Received
    payment: Payment
    at_ms: int
    entities: list[tuple[str, str]] = field(default_factory=list)  # (kind, entity ref)


@dataclass(slots=True)
class PaymentRules:
    """What a batch of payments is decided with."""

    now: datetime
    policies: PolicySet
    model: Any  # agents/model.py ModelState
    warm: bool
    switched_off: bool = False  # the kill switch (`shinsa model off`)


def accept_payment(
    message: Received, now: datetime, reg: SchemaRegistry, max_bytes: int
) -> Payment | None:
    """A wallet payment to screen; None for other kinds and for invalid input (ingest.py
    dead-letters that, once)."""
    payment = decode_event(reg, "Payment", message.value, max_bytes)
    if isinstance(payment, Rejection) or payment.kind not in WALLET_KINDS:
        return None
    if check_payment(payment, now) is not None:
        return None
    return payment


def screen_payment(
    candidate: PaymentCandidate,
    ctx: WalletContext,
    rules: PaymentRules,
    entities: Sequence[tuple[str, EntityState | None]] = (),
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float], float]:
    """One payment → (Decision datum, DecisionTrace datum, features, model score)."""
    payment, at_ms = candidate.payment, candidate.at_ms
    policy: PaymentPolicy = rules.policies.payments_for(payment.merchant_id)
    features = payment_features(payment, ctx, at_ms)
    features |= known_risk(entities, at_ms)  # not activity: the account's history is in ctx
    probability, contributions = rules.model.assess(features, explain=rules.warm)
    opinion = ModelOpinion(
        probability,
        rules.model.name,
        rules.warm,
        tuple(n for n, _ in contributions),
        switched_off=rules.switched_off,
    )
    out_today = money_out_today(before(ctx.payer_history, at_ms, payment.payment_id), at_ms)
    signals = PaymentSignals(
        payer_status=ctx.payer.status,
        counterparty_status=ctx.counterparty.status if ctx.counterparty else None,
        payer_kyc=ctx.payer.kyc if ctx.payer.known else policy.unknown_account_kyc,
        payer_known=ctx.payer.known,
        daily_limit=ctx.payer.daily_limit,
        money_out_today=out_today,
    )
    verdict = decide_payment(payment, features, signals, policy, opinion)
    now_ms = rules.now.timestamp() * 1000
    decision = {
        "order_id": payment.payment_id,
        "merchant_id": payment.merchant_id or "",
        "identity_id": ctx.payer.identity_id,
        "decision": verdict.decision,
        "score": verdict.score,
        "reasons": list(verdict.reasons),
        "policy_version": rules.policies.version,
        "model_version": rules.model.name,
        "amount": payment.amount,
        "merchant_category": None,
        "event_time": payment.event_time,
        "decided_at": rules.now,
        "latency_event_ms": now_ms - at_ms,
        "latency_ingest_ms": now_ms - candidate.message.timestamp_ms,
        "subject": "PAYMENT",
        "payment_id": payment.payment_id,
        "payment_kind": payment.kind,
        "account_id": payment.account_id,
        "payment_method": "CARD" if payment.card_fingerprint else "WALLET",
    }
    override = (payment.merchant_id or "") in rules.policies.merchant_payments
    trace = payment_trace(decision, payment, policy, signals, verdict, opinion, features, override)
    trace["contributions"] = dict(contributions)
    return decision, trace, features, probability


def payment_trace(
    decision: dict[str, Any],
    payment: Payment,
    policy: PaymentPolicy,
    signals: PaymentSignals,
    verdict: Verdict,
    opinion: ModelOpinion,
    features: dict[str, float],
    merchant_override: bool,
) -> dict[str, Any]:
    """The audit record of a payment decision (no PII: ids, numbers, codes)."""
    review, decline = policy.thresholds(payment.kind)
    kyc_limit = policy.kyc_limits.get(signals.payer_kyc, {}).get(payment.kind)
    thresholds = {
        "review_score": review,
        "decline_score": decline,
        "fan_in_24h": float(policy.fan_in_24h),
        "failed_logins_review": float(policy.failed_logins_review),
        "first_transfer_review_amount": float(policy.first_transfer_review_amount),
    }
    if kyc_limit is not None:
        thresholds["kyc_limit"] = float(kyc_limit)
    inputs = {"amount": float(payment.amount), "money_out_today": float(signals.money_out_today)}
    if signals.daily_limit is not None:
        inputs["daily_limit"] = float(signals.daily_limit)
    return trace_record(
        decision,
        verdict,
        opinion,
        features,
        merchant_override=merchant_override,
        thresholds=thresholds,
        inputs=inputs,
        list_hits={"hard_blocks": [], "allows": [], "blocks": []},
        subject="PAYMENT",
        payment_kind=payment.kind,
    )


class BatchHistory:
    """The batch's own payments, so each sees those before it (Redis was read before the
    batch): the payer's and the receiver's histories and the receiver's incoming transfers."""

    def __init__(self) -> None:
        self.payments: dict[str, list[PastPayment]] = {}
        self.incoming: dict[str, list[Incoming]] = {}

    def add(self, payment: Payment, at_ms: int) -> None:
        other = payment.counterparty_account_id or ""
        past = PastPayment(at_ms, payment.kind, payment.amount, other, payment.payment_id)
        self.payments.setdefault(payment.account_id or "", []).append(past)
        if payment.kind == "TRANSFER":
            got = Incoming(at_ms, payment.account_id or "", payment.amount, payment.payment_id)
            self.incoming.setdefault(other, []).append(got)

    def seen_by(self, payment: Payment, loaded: WalletContext) -> WalletContext:
        """`loaded` plus the batch's earlier payments; those Redis already has (a retried
        batch finds its first attempt's entries) are not counted twice."""
        if not self.payments:
            return loaded
        payer = payment.account_id or ""
        ctx = replace(loaded, payer_history=merged(loaded.payer_history, self.payments, payer))
        if payment.kind == "TRANSFER":
            other = payment.counterparty_account_id or ""
            ctx.counterparty_history = merged(loaded.counterparty_history, self.payments, other)
            ctx.counterparty_incoming = merged(loaded.counterparty_incoming, self.incoming, other)
        return ctx


def merged(loaded: Sequence[Any], batch: dict[str, list[Any]], account: str) -> list[Any]:
    known = {entry.payment_id for entry in loaded}
    return [*loaded, *(e for e in batch.get(account, ()) if e.payment_id not in known)]


def screen_payments(
    candidates: Sequence[PaymentCandidate],
    contexts: Sequence[WalletContext],
    rules: PaymentRules,
    out: Outputs,
    entities: dict[str, EntityState] | None = None,
) -> tuple[list[Outgoing], Changes, list[tuple[Payment, int]]]:
    """Decide a batch of payments: what to send, the snapshots and decisions to keep, and the
    payments to record in their accounts' histories. One `try` per payment down to encoding."""
    outgoing: list[Outgoing] = []
    changes = Changes([], [], [], [])
    recorded: list[tuple[Payment, int]] = []
    decided: dict[str, tuple[bytes, bytes]] = {}
    batch = BatchHistory()
    known = {} if entities is None else entities
    for candidate, loaded in zip(candidates, contexts, strict=True):
        payment = candidate.payment
        ctx = batch.seen_by(payment, loaded)
        try:
            if payment.payment_id in decided:  # the same payment twice in one batch
                PAYMENTS_REPLAYED.inc()
                decision_bytes, trace_bytes = decided[payment.payment_id]
            else:
                seen = [(kind, known.get(ref)) for kind, ref in candidate.entities]
                decision, trace, features, score = screen_payment(candidate, ctx, rules, seen)
                decision_bytes = out.registry.encode("Decision", decision)
                trace_bytes = out.registry.encode("DecisionTrace", trace)
                decided[payment.payment_id] = decision_bytes, trace_bytes
                ref = payment_ref(payment.payment_id)
                challenger = rules.model.shadow_score(features)
                snapshot = payment_snapshot(candidate, decision, features, score, challenger)
                changes.snapshots.append((ref, snapshot))
                changes.decided.append((ref, decision_bytes, trace_bytes))
                purchase = payment_purchase(payment, ctx, decision["decision"], candidate.at_ms)
                if purchase is not None:
                    changes.segments.append(purchase)
                recorded.append((payment, candidate.at_ms))
                batch.add(payment, candidate.at_ms)
                record_payment_metrics(decision, score)
        except Exception as exc:  # a bug must not lose the rest of the batch
            msg = candidate.message
            where = (msg.topic, msg.partition, msg.offset)
            log.exception("payment screening failed at %s[%d]@%d", *where)
            outgoing.append(
                dead_letter(out.dlq, msg, "payments", reasons.PROCESSING_ERROR, type(exc).__name__)
            )
            continue
        key = payment.payment_id.encode()
        outgoing.append(Outgoing(out.decisions, key, decision_bytes))
        outgoing.append(Outgoing(out.traces, key, trace_bytes))
    return outgoing, changes, recorded


def payment_purchase(
    payment: Payment, ctx: WalletContext, decision: str, at_ms: int
) -> tuple[str, str, int, int, str] | None:
    """An approved shop payment as a purchase of its merchant's audience (agents/segments.py):
    its payer's attributes come from KYC (watch_accounts), so the payment tells none."""
    if (
        payment.kind != "PAY"
        or decision != APPROVE
        or not payment.merchant_id
        or not ctx.payer.identity_id
    ):
        return None
    return payment.merchant_id, ctx.payer.identity_id, jst_day(at_ms), payment.amount, ""


def payment_snapshot(
    candidate: PaymentCandidate,
    decision: dict[str, Any],
    features: dict[str, float],
    score: float,
    challenger: float | None = None,
) -> Snapshot:
    return Snapshot(
        features=features,
        score=score,
        model_version=decision["model_version"],
        event_ms=candidate.at_ms,
        identity_id=decision["identity_id"] or "",
        amount=candidate.payment.amount,
        payment_method="WALLET",
        decision=decision["decision"],
        entities=[ref for _, ref in candidate.entities],
        challenger_score=challenger,
    )


@cache
def payment_series(kind: str, decision: str) -> tuple[Any, Any]:
    return PAYMENT_DECISIONS.labels(kind, decision), PAYMENT_AMOUNT.labels(kind, decision)


LATENCY_EVENT, LATENCY_INGEST = LATENCY.labels("event"), LATENCY.labels("ingest")
for _kind in sorted(WALLET_KINDS):  # every series at 0 from the start, so rate() sees the first
    for _decision in ("APPROVE", "REVIEW", "DECLINE"):
        payment_series(_kind, _decision)
for _kind in ("TRANSFER", "WITHDRAW"):
    CASH_OUT_STOPPED.labels(_kind)


def record_payment_metrics(decision: dict[str, Any], score: float) -> None:
    kind, verdict, amount = decision["payment_kind"], decision["decision"], decision["amount"]
    count, yen = payment_series(kind, verdict)
    count.inc()
    yen.inc(amount)
    count_reasons(decision, "PAYMENT")
    if kind in ("TRANSFER", "WITHDRAW") and verdict in (DECLINE, REVIEW):
        CASH_OUT_STOPPED.labels(kind).inc(amount)
    LATENCY_EVENT.observe(max(decision["latency_event_ms"], 0.0) / 1000)
    LATENCY_INGEST.observe(max(decision["latency_ingest_ms"], 0.0) / 1000)
    MODEL_SCORE.observe(score)


# ---------------------------------------------------------------- the loop's I/O
class PaymentScreening:
    """payments → earlier decision? → wallet state → screen_payments → state → outputs."""

    def __init__(
        self,
        reg: SchemaRegistry,
        state: HotPathState,
        wallet: WalletState,
        rules: Callable[[datetime], PaymentRules],
        out: Outputs,
        max_bytes: int,
        graph: IdentityGraph,
    ) -> None:
        self.registry, self.state, self.wallet, self.graph = reg, state, wallet, graph
        self.rules, self.out, self.max_bytes = rules, out, max_bytes

    async def __call__(self, batch: list[Received]) -> list[Outgoing]:
        watch = Stopwatch("pay")
        now = datetime.now(UTC)
        outgoing: list[Outgoing] = []
        candidates: list[PaymentCandidate] = []
        for message in batch:
            try:
                payment = accept_payment(message, now, self.registry, self.max_bytes)
            except Exception as exc:  # a bug must not lose the rest of the batch
                where = (message.topic, message.partition, message.offset)
                log.exception("payment intake failed at %s[%d]@%d", *where)
                detail = type(exc).__name__
                outgoing.append(
                    dead_letter(self.out.dlq, message, "payments", reasons.PROCESSING_ERROR, detail)
                )
                continue
            if payment is not None:
                candidates.append(PaymentCandidate(message, payment, to_ms(payment.event_time)))
        watch.lap("intake")
        earlier = await self.state.earlier([payment_ref(c.payment.payment_id) for c in candidates])
        fresh = []
        for candidate, found in zip(candidates, earlier, strict=True):
            if found is None:
                fresh.append(candidate)
                continue
            PAYMENTS_REPLAYED.inc()
            outgoing += replay(candidate.payment.payment_id.encode(), found, self.out)
        contexts = await self.wallet.load([(c.payment, c.at_ms) for c in fresh])
        await current_identities(self.graph, contexts)
        for candidate, ctx in zip(fresh, contexts, strict=True):
            candidate.entities = candidate_payment_entities(
                candidate.payment, ctx, self.state.secret
            )
        refs = [ref for c in fresh for _, ref in c.entities]
        entities = (await self.state.load([], [], refs)).entities
        watch.lap("load")
        rules = self.rules(now)
        sent, changes, recorded = screen_payments(fresh, contexts, rules, self.out, entities)
        watch.lap("screen")
        # histories first: a crash between the two writes leaves entries a retry skips (its
        # features exclude the payment's own id), never a decision without its history
        await self.wallet.record_payments(recorded)
        await self.state.save(changes)
        watch.lap("save")
        watch.log_if_slow("handler", len(batch))
        return outgoing + sent


def candidate_payment_entities(
    payment: Payment, ctx: WalletContext, secret: bytes
) -> list[tuple[str, str]]:
    """(kind, ref) of the entities a payment is kept under (agents/entities.py)."""
    pairs = payment_entities(
        ctx.payer.identity_id,
        payment.account_id,
        payment.merchant_id,
        payment.device_id,
        payment.card_fingerprint,
    )
    return [(kind, entity_ref(secret, kind, value)) for kind, value in pairs]


async def current_identities(graph: IdentityGraph, contexts: Sequence[WalletContext]) -> None:
    """A transfer's two accounts as the identities they belong to now: an account keeps the
    identity its KYC resolved to, which a later merge may have absorbed (self-transfers are
    told by identity)."""
    pairs = [
        c
        for c in contexts
        if c.counterparty is not None
        and c.payer.identity_id
        and c.counterparty.identity_id
        and c.payer.identity_id != c.counterparty.identity_id
    ]
    ids = [x for c in pairs for x in (c.payer.identity_id, c.counterparty.identity_id)]
    roots = iter(await graph.roots(ids))  # type: ignore[arg-type]
    for c in pairs:
        c.payer = replace(c.payer, identity_id=next(roots))
        c.counterparty = replace(c.counterparty, identity_id=next(roots))  # type: ignore[arg-type]


def current_payment_rules(control: Control, now: datetime) -> PaymentRules:
    scorer = control.scorer
    return PaymentRules(
        now, control.policies.active, scorer.state, scorer.warm_for_payments, scorer.switched_off
    )


def payments_loop(rt: Runtime, control: Control) -> TransactionalLoop:
    """Wallet payment screening as a service of the worker (registered by
    streams/tools/worker.py)."""
    settings, reg = rt.settings, rt.registry
    client = redis_client(settings)
    secret = rt.secret
    state = HotPathState(
        client, settings.identity_namespace, secret, settings.snapshot_ttl_days * 86400
    )
    wallet = WalletState(client, settings.identity_namespace, secret)
    out = Outputs(reg, settings.topic("decisions"), settings.topic("traces"), settings.topic("dlq"))
    graph = IdentityGraph(client, settings.identity_namespace, settings.identity_fanout_limit)
    rules = partial(current_payment_rules, control)
    handler = PaymentScreening(reg, state, wallet, rules, out, settings.max_event_bytes, graph)
    return TransactionalLoop(
        settings,
        "pay",
        [settings.topic("payments")],
        handler,
        ready=control.ready,
        on_fatal=stop_worker,
    )


# ---------------------------------------------------------------- accounts and logins
def account_fields(account: Account, identity_id: str | None) -> dict[str, str | int]:
    """What an account event changes in the account's facts (no PII: the person is resolved
    to an identity id and dropped)."""
    at_ms = to_ms(account.event_time)
    if account.kind == "OPENED":
        return {"opened": at_ms}
    if account.kind == "KYC_VERIFIED":
        fields: dict[str, str | int] = {"kyc": account.kyc_level or "NONE"}
        if identity_id:
            fields["identity"] = identity_id
        return fields
    if account.kind == "LIMITS_CHANGED":
        return {"limit": int(account.daily_limit or 0)}
    return {"status": "FROZEN" if account.kind == "FROZEN" else "CLOSED"}


def kyc_attributes(account: Account) -> str:
    """What a verified person tells merchant audiences: age band, gender, prefecture ("" if
    it cannot be read: the account's facts and identity must not wait on its audiences)."""
    person = account.person
    if person is None:
        return ""
    try:
        prefecture = address_attributes(person.address).prefecture_code
        on = jst_date(to_ms(account.event_time))
        return person_attributes(person.birth_date, person.gender, prefecture, on)
    except Exception:  # a bug here must not stop the accounts agent
        log.exception("KYC attributes of account event at %s unreadable", account.event_time)
        return ""


def register(rt: Runtime) -> None:
    """The accounts and logins agents, in this worker's app (the payments' hot path is a
    service: `payments_loop`)."""

    async def accounts(stream: Any) -> None:
        await watch_accounts(rt, stream)

    async def logins(stream: Any) -> None:
        await watch_logins(rt, stream)

    rt.app.agent(rt.topics.accounts, name="agents.wallet.watch_accounts")(accounts)
    rt.app.agent(rt.topics.logins, name="agents.wallet.watch_logins")(logins)


async def watch_accounts(rt: Runtime, stream: Any) -> None:
    """accounts → each account's facts in Redis; a KYC person joins the identity graph, so a
    wallet account and a BNPL buyer of the same person resolve to one identity."""
    settings, registry = rt.settings, rt.registry
    client = redis_client(settings)
    secret = rt.secret
    graph = IdentityGraph(client, settings.identity_namespace, settings.identity_fanout_limit)
    wallet = WalletState(client, settings.identity_namespace, secret)
    segments = SegmentStore(client, settings.identity_namespace)
    async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
        now = datetime.now(UTC)
        accounts: list[Account] = []
        for event in events:
            msg = event.message
            try:
                account = decode_event(registry, "Account", msg.value, settings.max_event_bytes)
                if not isinstance(account, Rejection) and check_account(account, now) is None:
                    accounts.append(account)
            except Exception:  # a bug must not lose the batch; ingest.py dead-letters bad input
                where = (msg.topic, msg.partition, msg.offset)
                log.exception("account event failed at %s[%d]@%d", *where)
        kyc = [a for a in accounts if a.kind == "KYC_VERIFIED" and a.person is not None]
        identities = await graph.resolve(
            [person_keys(a.person, secret) for a in kyc],  # type: ignore[arg-type]
            [to_ms(a.event_time) for a in kyc],
            to_ms(now),
            [f"kyc:{a.account_id}:{to_ms(a.event_time)}" for a in kyc],
        )
        resolved = {id(a): i.identity_id for a, i in zip(kyc, identities, strict=True)}
        await wallet.record_accounts(
            [(a.account_id, account_fields(a, resolved.get(id(a)))) for a in accounts]
        )
        await segments.record_people(
            [(i.identity_id, kyc_attributes(a)) for a, i in zip(kyc, identities, strict=True)]
        )


async def watch_logins(rt: Runtime, stream: Any) -> None:
    """logins → each account's recent logins and the devices it used (wallet takeover)."""
    settings, registry = rt.settings, rt.registry
    secret = rt.secret
    wallet = WalletState(redis_client(settings), settings.identity_namespace, secret)
    async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
        logins: list[Login] = []
        for event in events:
            msg = event.message
            try:
                login = decode_event(registry, "Login", msg.value, settings.max_event_bytes)
                if not isinstance(login, Rejection):
                    logins.append(login)
            except Exception:  # a bug must not lose the batch; ingest.py dead-letters bad input
                log.exception("login failed at %s[%d]@%d", msg.topic, msg.partition, msg.offset)
        await wallet.record_logins(logins)
