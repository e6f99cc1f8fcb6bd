"""orders → intake → identity → state → screen_batch → decisions, traces (the hot path).

The pure part: `screen_order` composes the stages for one identified order (enrich → features
→ score → decide → trace); `screen_batch` runs a batch of them with the per-identity state
loaded for the batch (each order sees the earlier ones of its identity in the batch) and
returns what to send and what to write, one `try` per order down to encoding. The I/O part:
`OrderScreening` is the handler of the transactional loop (streams/txloop.py): decode and
validate (agents/intake.py), re-send the earlier decision of an order id already decided,
resolve identities (agents/identity.py), load state, screen, write state and decisions in one
Redis transaction (agents/state.py); the loop then produces the results and commits the input
offsets in one Kafka transaction. The policy in force (and a shadow candidate, if any), the
model and the merchants come from the control streams, handed in as agents/control.py's
`Control`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import cache, partial
from typing import Any

from agents import reasons
from agents.control import Control
from agents.credit import (
    COLD_BAND,
    apply_event,
    buyer_traits,
    credit_band,
    credit_features,
    is_held,
    outstanding,
)
from agents.decide import (
    APPROVE,
    ModelOpinion,
    Policy,
    Signals,
    Verdict,
    credit_limit_of,
    decide_order,
)
from agents.enrich import EnrichedOrder, enrich_order
from agents.entities import (
    ORDER_ACTIVITY,
    EntityState,
    entity_values,
    known_risk,
    order_entities,
)
from agents.features import PastOrder, add_to_history, history_before, order_features
from agents.identity import Identity, IdentityGraph, Lookup, resolve_overlapped
from agents.intake import (
    Accepted,
    accept_order,
    identity_lookup,
    identity_view,
    record_identity_metrics,
)
from agents.model import ModelState
from agents.policy import PolicySet, match_lists, order_list_keys
from agents.segments import jst_date, jst_day, person_attributes
from agents.state import (
    SAVE_SCRIPT,
    Account,
    Changes,
    Earlier,
    HotPathState,
    Loaded,
    OrderedWriter,
    Snapshot,
    empty_account,
    entity_ref,
    merge_loaded,
    redis_client,
)
from streams.app import Runtime
from streams.codec import SchemaRegistry
from streams.delivery import Outgoing
from streams.dlq import dead_letter
from streams.metrics import (
    CREDIT_DECIDED_YEN,
    CREDIT_DECISIONS,
    DECIDED_AMOUNT,
    DECISION_REASONS,
    DECISIONS,
    DECISIONS_BY_METHOD,
    LATENCY,
    MODEL_SCORE,
    REPLAYED,
    SHADOW_DECISIONS,
)
from streams.records import Merchant, Order
from streams.settings import Settings
from streams.txloop import Received, Stopwatch, TransactionalLoop

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Screened:
    decision: dict[str, Any]  # the Decision datum
    features: dict[str, float]  # exactly what the model scored: the snapshot
    model_score: float
    trace: dict[str, Any]  # the DecisionTrace datum
    shadow: Verdict | None = None  # what the shadow policy would have decided
    challenger_score: float | None = None  # the challenger model's shadow score, if any
    credit: dict[str, Any] | None = None  # a deferred order's CreditCheck datum


def screen_order(
    order: Order,
    *,
    identity: Mapping[str, Any],
    attributes: Mapping[str, Any],
    ingest_ms: float,
    now: datetime,
    merchants: Mapping[str, Merchant],
    policies: PolicySet,
    history: Sequence[PastOrder],
    account: Account,
    model: ModelState,
    warm: bool,
    secret: bytes,
    shadow: PolicySet | None = None,
    device_failures: int = 0,
    entities: Sequence[tuple[str, EntityState | None]] = (),
    credit_warm: bool = False,
    switched_off: bool = False,
) -> Screened:
    """One validated, identified order, its identity's earlier orders and account, and its
    entities' activity and known risk → decision (fraud, and credit for a deferred order)."""
    enriched = enrich_order(order, merchants, identity, attributes)
    past = history_before(history, order.order_id)
    habits = [(kind, state) for kind, state in entities if kind in ORDER_ACTIVITY]
    features = order_features(enriched, past, device_failures, habits)
    features |= known_risk(entities, to_ms(order.event_time))
    probability, contributions = model.assess(features, explain=warm)
    # a redelivered order is already in its account: do not count it against itself
    balance = outstanding(account) - account["open"].get(order.order_id, 0)
    credit = (
        credit_check_of(order, enriched, account, balance, model, credit_warm)
        if order.payment_method == "DEFERRED"
        else None
    )
    opinion = ModelOpinion(
        probability,
        model.name,
        warm,
        tuple(n for n, _ in contributions),
        credit["score"] if credit and model.credit is not None else None,
        credit_warm,
        tuple(credit["contributions"]) if credit else (),
        switched_off,
    )
    keys = (
        order_list_keys(order, identity["identity_id"], secret)
        if policies_have_lists(policies, shadow)
        else {}
    )
    signals = Signals(
        features, balance, is_held(account), match_lists(policies, keys), account["history"]
    )
    policy = policies.for_merchant(order.merchant_id)
    verdict = decide_order(enriched, policy, opinion, signals)
    shadow_verdict = None
    if shadow is not None:
        shadow_signals = replace(signals, lists=match_lists(shadow, keys))
        shadow_verdict = decide_order(
            enriched, shadow.for_merchant(order.merchant_id), opinion, shadow_signals
        )
    now_ms = now.timestamp() * 1000
    decision = {
        "order_id": order.order_id,
        "merchant_id": order.merchant_id,
        "identity_id": identity["identity_id"],
        "decision": verdict.decision,
        "score": verdict.score,
        "reasons": list(verdict.reasons),
        "policy_version": policies.version,
        "model_version": model.name,
        "amount": order.amount,
        "merchant_category": enriched.merchant_category,
        "event_time": order.event_time,
        "decided_at": now,
        "latency_event_ms": now_ms - order.event_time.timestamp() * 1000,
        "latency_ingest_ms": now_ms - ingest_ms,
        "payment_method": order.payment_method,
    }
    trace = trace_of(decision, enriched, policy, policies, signals, verdict, opinion, features)
    trace["contributions"] = dict(contributions)
    trace["credit"] = credit
    if shadow_verdict is not None and shadow is not None:
        trace["shadow"] = {
            "policy_version": shadow.version,
            "decision": shadow_verdict.decision,
            "score": shadow_verdict.score,
            "reasons": list(shadow_verdict.reasons),
        }
    challenger = model.shadow_score(features)
    return Screened(decision, features, probability, trace, shadow_verdict, challenger, credit)


def credit_check_of(
    order: Order,
    enriched: EnrichedOrder,
    account: Account,
    balance: int,
    model: ModelState,
    warm: bool,
) -> dict[str, Any]:
    """The credit check of a deferred order (the trace's CreditCheck datum): its credit
    features from the account as the order found it, and the credit model's score (0.5, no
    opinion, before the credit model has learned anything)."""
    identity = enriched.identity
    now_ms = to_ms(order.event_time)
    first_ms = identity.get("first_seen_ms") or now_ms
    traits = buyer_traits(order.buyer.birth_date, jst_date(now_ms), enriched.attributes)
    x = credit_features(
        order.amount,
        enriched.merchant_category,
        account["history"],
        balance,
        sum(1 for o in account["open"] if o != order.order_id),
        is_held(account),
        (now_ms - first_ms) / 86_400_000,
        traits,
    )
    credit = model.credit
    score, parts = credit.assess(x, explain=warm) if credit is not None else (0.5, [])
    return {
        "score": score,
        "warm": warm,
        "band": credit_band(score, warm),
        "contributions": dict(parts),
        "features": x,
    }


def policies_have_lists(*sets: PolicySet | None) -> bool:
    """Hashing an order's phone, email and device for the lists costs µs: only when needed."""
    return any(s is not None and (s.blocks or s.allows) for s in sets)


def thresholds_of(policy: Policy) -> dict[str, float]:
    """The effective policy's numeric rules, flattened for the trace (computed once per policy:
    `asdict` costs ~40 µs and a policy decides thousands of orders)."""
    cached = _THRESHOLDS.get(id(policy))
    if cached is not None and cached[0] is policy:
        return cached[1]
    out: dict[str, float] = {}
    for name, value in asdict(policy).items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            out[name] = float(value)
        elif isinstance(value, dict):
            out.update({f"{name}.{k}": float(v) for k, v in value.items()})
    if len(_THRESHOLDS) > 10_000:  # policies are replaced, rarely: never let this grow
        _THRESHOLDS.clear()
    _THRESHOLDS[id(policy)] = (policy, out)  # the policy is held, so its id is not reused
    return out


_THRESHOLDS: dict[int, tuple[Policy, dict[str, float]]] = {}


def trace_of(
    decision: Mapping[str, Any],
    enriched: EnrichedOrder,
    policy: Policy,
    policies: PolicySet,
    signals: Signals,
    verdict: Verdict,
    opinion: ModelOpinion,
    features: Mapping[str, float],
) -> dict[str, Any]:
    """The audit record of a decision: inputs, thresholds, hits and versions (no PII)."""
    identity = enriched.identity
    inputs = {
        "amount": float(enriched.order.amount),
        "outstanding": float(signals.outstanding),
        "held": float(signals.held),
        **{f"identity_{k}": float(identity.get(k, 0)) for k in ("orders", "phones", "emails")},
        **{f"repaid_{k}": float(n) for k, n in signals.repayments.items()},
    }
    if policy.credit_limit is not None:  # the limit this identity had, from its history
        inputs["credit_limit"] = float(credit_limit_of(policy.credit_limit, signals.repayments))
    return trace_record(
        decision,
        verdict,
        opinion,
        features,
        merchant_override=enriched.order.merchant_id in policies.merchants,
        thresholds=thresholds_of(policy),
        allowed_methods=list(policy.allowed_methods) if policy.allowed_methods else None,
        inputs=inputs,
        list_hits={
            "hard_blocks": list(signals.lists.hard_blocks),
            "allows": list(signals.lists.allows),
            "blocks": list(signals.lists.blocks),
        },
    )


def trace_record(
    decision: Mapping[str, Any],
    verdict: Verdict,
    opinion: ModelOpinion,
    features: Mapping[str, float],
    **specific: Any,
) -> dict[str, Any]:
    """The DecisionTrace datum: what every decision records, and what its stage adds
    (`specific`: thresholds, inputs, list hits, merchant override, allowed methods...)."""
    return {
        "order_id": decision["order_id"],
        "decided_at": decision["decided_at"],
        "decision": verdict.decision,
        "score": verdict.score,
        "reasons": list(verdict.reasons),
        "policy_version": decision["policy_version"],
        "fired": list(verdict.fired),
        "model_version": opinion.version,
        "model_warm": opinion.warm,
        "model_score": opinion.score,
        "contributions": {},
        "features": dict(features),
        "shadow": None,
        "allowed_methods": None,
        **specific,
    }


def snapshot_of(
    order: Order, screened: Screened, entities: Sequence[tuple[str, str]] = ()
) -> Snapshot:
    """What the learner and the exposure stage need when the outcome arrives (no PII)."""
    decision = screened.decision
    return Snapshot(
        features=screened.features,
        score=screened.model_score,
        model_version=decision["model_version"],
        event_ms=to_ms(order.event_time),
        identity_id=decision["identity_id"],
        amount=order.amount,
        payment_method=order.payment_method,
        decision=decision["decision"],
        entities=[ref for _, ref in entities],
        challenger_score=screened.challenger_score,
        credit_features=screened.credit["features"] if screened.credit else None,
        credit_score=screened.credit["score"] if screened.credit else None,
    )


@cache
def decision_series(decision: str, category: str) -> tuple[Any, Any]:
    """Bound label children, looked up once per (decision, category): `labels()` costs µs."""
    return DECISIONS.labels(decision, category), DECIDED_AMOUNT.labels(decision, category)


LATENCY_EVENT = LATENCY.labels("event")
LATENCY_INGEST = LATENCY.labels("ingest")


@cache
def reason_series(code: str, decision: str, subject: str) -> Any:
    return DECISION_REASONS.labels(reasons.metric_reason(code), decision, subject)


@cache
def method_series(method: str, decision: str) -> Any:
    return DECISIONS_BY_METHOD.labels(method, decision)


@cache
def credit_series(band: str, decision: str) -> tuple[Any, Any]:
    return CREDIT_DECISIONS.labels(band, decision), CREDIT_DECIDED_YEN.labels(band, decision)


def count_reasons(decision: Mapping[str, Any], subject: str) -> None:
    for code in decision["reasons"]:
        reason_series(code, decision["decision"], subject).inc()


def record_decision_metrics(decision: Mapping[str, Any], method: str) -> None:
    count, amount = decision_series(decision["decision"], decision["merchant_category"])
    count.inc()
    amount.inc(decision["amount"])
    method_series(method, decision["decision"]).inc()
    count_reasons(decision, "ORDER")
    LATENCY_EVENT.observe(max(decision["latency_event_ms"], 0.0) / 1000)
    LATENCY_INGEST.observe(max(decision["latency_ingest_ms"], 0.0) / 1000)


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# ---------------------------------------------------------------- the batch core (pure)
@dataclass(slots=True)
class Candidate:
    """A valid, identified order, ready to be screened."""

    message: Received
    order: Order
    identity: dict[str, Any]
    attributes: dict[str, Any]
    entities: list[tuple[str, str]] = field(default_factory=list)  # (kind, entity ref)


def candidate_entities(order: Order, identity_id: str, secret: bytes) -> list[tuple[str, str]]:
    """(kind, ref) of the entities an order is kept under (agents/entities.py)."""
    pairs = order_entities(identity_id, order.merchant_id, order.device_id)
    return [(kind, entity_ref(secret, kind, value)) for kind, value in pairs]


@dataclass(slots=True)
class Rules:
    """What a whole batch is decided with: one clock, one model, one policy."""

    now: datetime
    merchants: Mapping[str, Merchant]
    policies: PolicySet
    shadow: PolicySet | None
    model: ModelState
    warm: bool
    secret: bytes
    credit_warm: bool = False
    switched_off: bool = False  # the kill switch (`shinsa model off`)


@dataclass(slots=True, frozen=True)
class Outputs:
    """How results are encoded and where they go."""

    registry: SchemaRegistry
    decisions: str
    traces: str
    dlq: str


def screen_batch(
    candidates: Sequence[Candidate],
    loaded: Loaded,
    rules: Rules,
    out: Outputs,
    decided: dict[str, tuple[bytes, bytes]] | None = None,
) -> tuple[list[Outgoing], Changes]:
    """Decide a batch: its messages (decisions and traces, or a dead letter per failed order)
    and its state changes. One `try` per order covers everything down to encoding, so a bug
    costs exactly that order (dead-lettered), never the rest of the batch. `decided` (order id
    → encoded decision and trace) carries the orders already decided when a batch is screened
    in slices, so an order sent twice is decided once."""
    outgoing: list[Outgoing] = []
    changes = Changes([], [], [], [])
    decided = {} if decided is None else decided
    for candidate, failures in zip(candidates, loaded.device_failures, strict=True):
        order_id = candidate.order.order_id
        try:
            if order_id in decided:  # the same order twice in one batch: one decision
                REPLAYED.inc()
                decision, trace = decided[order_id]
            else:
                decision, trace = screen_one(candidate, failures, loaded, rules, out, changes)
                decided[order_id] = decision, trace
        except Exception as exc:  # a bug must not lose the rest of the batch
            msg = candidate.message
            log.exception("screening failed at %s[%d]@%d", msg.topic, msg.partition, msg.offset)
            outgoing.append(
                dead_letter(out.dlq, msg, "orders", reasons.PROCESSING_ERROR, type(exc).__name__)
            )
            continue
        key = order_id.encode()
        outgoing.append(Outgoing(out.decisions, key, decision))
        outgoing.append(Outgoing(out.traces, key, trace))
    return outgoing, changes


def screen_one(
    candidate: Candidate,
    device_failures: int,
    loaded: Loaded,
    rules: Rules,
    out: Outputs,
    changes: Changes,
) -> tuple[bytes, bytes]:
    """Screen and encode one order, then record its state changes (only once all succeeded)."""
    order = candidate.order
    identity_id = candidate.identity["identity_id"]
    history = loaded.histories.get(identity_id, [])
    account = loaded.accounts.get(identity_id) or empty_account()
    screened = screen_order(
        order,
        identity=candidate.identity,
        attributes=candidate.attributes,
        ingest_ms=candidate.message.timestamp_ms,
        now=rules.now,
        merchants=rules.merchants,
        policies=rules.policies,
        history=history,
        account=account,
        model=rules.model,
        warm=rules.warm,
        secret=rules.secret,
        shadow=rules.shadow,
        device_failures=device_failures,
        entities=[(kind, loaded.entities.get(ref)) for kind, ref in candidate.entities],
        credit_warm=rules.credit_warm,
        switched_off=rules.switched_off,
    )
    snapshot = snapshot_of(order, screened, candidate.entities)
    decision = out.registry.encode("Decision", screened.decision)
    trace = out.registry.encode("DecisionTrace", screened.trace)
    at_ms = to_ms(order.event_time)
    approved = screened.decision["decision"] == APPROVE
    purchase = order_purchase(order, identity_id, at_ms, candidate.attributes) if approved else None
    # nothing below can fail: the order's state changes are recorded whole or not at all
    loaded.histories[identity_id] = add_to_history(history, order.order_id, at_ms, order.amount)
    changes.history.append((identity_id, (at_ms, order.amount, order.order_id)))
    for kind, ref in candidate.entities:  # later orders of the batch see this one
        if kind not in ORDER_ACTIVITY:
            continue
        values = entity_values(kind, order.amount, screened.features)
        state = loaded.entities.get(ref)
        if state is None:
            state = loaded.entities[ref] = EntityState()
        state.record(at_ms, values)
        changes.record_activity(ref, at_ms, values)
    if purchase is not None:
        changes.segments.append(purchase)
        if order.payment_method == "DEFERRED":
            loaded.accounts[identity_id] = apply_event(
                account, "approved", order.order_id, order.amount
            )
            band = screened.credit["band"] if screened.credit else COLD_BAND
            changes.account_events.append(
                (identity_id, "approved", order.order_id, order.amount, band)
            )
    changes.snapshots.append((order.order_id, snapshot))
    changes.decided.append((order.order_id, decision, trace))
    record_decision_metrics(screened.decision, order.payment_method)
    if screened.credit is not None:
        count, yen = credit_series(screened.credit["band"], screened.decision["decision"])
        count.inc()
        yen.inc(order.amount)
    MODEL_SCORE.observe(screened.model_score)
    if screened.shadow is not None:
        SHADOW_DECISIONS.labels(screened.decision["decision"], screened.shadow.decision).inc()
    return decision, trace


def order_purchase(
    order: Order, identity_id: str, at_ms: int, attributes: Mapping[str, Any]
) -> tuple[str, str, int, int, str]:
    """An approved order as a purchase of its merchant's audience (agents/segments.py), with
    what it says of its buyer: age band, gender, prefecture of the home address."""
    buyer = order.buyer
    told = person_attributes(
        buyer.birth_date, buyer.gender, attributes.get("prefecture_code"), jst_date(at_ms)
    )
    return order.merchant_id, identity_id, jst_day(at_ms), order.amount, told


def replay(key: bytes, earlier: Earlier, out: Outputs) -> list[Outgoing]:
    """The earlier decision (and its trace while kept) of an order or payment decided before,
    under its key (the order or payment id)."""
    sent = [Outgoing(out.decisions, key, earlier.decision)]
    if earlier.trace is not None:
        sent.append(Outgoing(out.traces, key, earlier.trace))
    return sent


# ---------------------------------------------------------------- the hot path's I/O
class OrderScreening:
    """orders → intake → identity → state → screen_batch → state → outputs, per batch.

    Called by the transactional loop (streams/txloop.py), which produces what this returns and
    commits the batch's offsets in one Kafka transaction. Per chunk of 100, Redis answers the
    earlier decisions and runs the identity script while Python prepares the next chunk, then
    reads the chunk's state (velocity, accounts, devices, entities) while the next chunk is
    resolved; then a write per slice of up to 200 screened, while the next slice is screened.
    """

    def __init__(
        self,
        settings: Settings,
        registry: SchemaRegistry,
        graph: IdentityGraph,
        state: HotPathState,
        writer: OrderedWriter,
        rules: Callable[[datetime], Rules],
    ) -> None:
        self.settings, self.registry, self.graph, self.state = settings, registry, graph, state
        self.writer, self.rules = writer, rules
        self.secret = settings.hash_key.get_secret_value().encode()
        self.out = Outputs(
            registry,
            settings.topic("decisions"),
            settings.topic("traces"),
            settings.topic("dlq"),
        )

    async def __call__(self, batch: list[Received]) -> list[Outgoing]:
        watch = Stopwatch("screen")
        now = datetime.now(UTC)
        outgoing: list[Outgoing] = []
        max_bytes, dlq = self.settings.max_event_bytes, self.out.dlq

        def prepare(message: Received) -> Lookup[Accepted] | None:
            """Decode, validate, attributes and identity keys: Python's part, done a chunk
            ahead of the identity script (Redis's part, on the other core)."""
            result = accept_order(message, now, self.registry, max_bytes, dlq)
            if not isinstance(result, Accepted):
                outgoing.append(result)
                return None
            return identity_lookup(result, self.secret, outgoing, dlq)

        async def keep(lookups: list[Lookup[Accepted]]) -> list[Lookup[Accepted]]:
            """Orders decided before are answered with that decision, not resolved again."""
            earlier = await self.state.earlier([x.order_id for x in lookups])
            fresh = []
            for lookup, found in zip(lookups, earlier, strict=True):
                if found is None:
                    fresh.append(lookup)
                else:
                    REPLAYED.inc()
                    outgoing.extend(replay(lookup.order_id.encode(), found, self.out))
            return fresh

        candidates: list[Candidate] = []
        loads: list[asyncio.Task[Loaded]] = []

        def found(chunk: list[tuple[Lookup[Accepted], Identity]]) -> None:
            """A chunk is resolved: load its state while Redis resolves the next one."""
            part = [self.candidate(item, identity) for item, identity in chunk]
            candidates.extend(part)
            loads.append(asyncio.ensure_future(self.load(part)))

        try:
            done = await resolve_overlapped(
                self.graph, batch, prepare, to_ms(now), keep=keep, on_found=found
            )
            watch.lap("intake+identity")
            loaded = merge_loaded(await asyncio.gather(*loads))
        finally:
            for task in loads:
                task.cancel()  # only those still running: a failed batch leaves none behind
        for item in done.unresolved:
            detail = f"identity: {type(done.error).__name__}"
            outgoing.append(
                dead_letter(dlq, item.message, "orders", reasons.PROCESSING_ERROR, detail)
            )
        watch.lap("load")
        outgoing += await self.screen_and_save(candidates, loaded)
        watch.lap("screen+save")
        watch.log_if_slow("handler", len(batch))
        return outgoing

    def candidate(self, item: Lookup[Accepted], identity: Identity) -> Candidate:
        record_identity_metrics(identity)
        view = identity_view(identity)
        entities = candidate_entities(item.order, view["identity_id"], self.secret)
        return Candidate(item.message, item.order, view, item.attributes or {}, entities)

    async def load(self, candidates: list[Candidate]) -> Loaded:
        """Velocity, accounts, device failures and entities of some candidates (one call)."""
        return await self.state.load(
            [c.identity["identity_id"] for c in candidates],
            [(c.order.device_id, to_ms(c.order.event_time)) for c in candidates],
            [ref for c in candidates for _, ref in c.entities],
        )

    async def screen_and_save(self, candidates: list[Candidate], loaded: Loaded) -> list[Outgoing]:
        """Screen the batch a slice at a time, Redis writing slice k while Python screens
        slice k+1 (Redis runs on another core). The writes stay in order, one script each, and
        all are done before the decisions are returned (an outcome can only follow them).

        A crash between two slices' writes is safe: on the retry, the written slices' orders
        are answered with their kept decisions, and the others are decided on the state they
        saw the first time (the loaded state plus the written slices' changes)."""
        rules = self.rules(datetime.now(UTC))
        decided: dict[str, tuple[bytes, bytes]] = {}
        outgoing: list[Outgoing] = []
        writes = self.writer.batch()
        try:
            size = save_slice(len(candidates))
            for start in range(0, len(candidates), size):
                end = start + size
                # the slice's device probes; the histories, accounts and entities are shared,
                # so each slice sees the earlier ones
                part = replace(loaded, device_failures=loaded.device_failures[start:end])
                sent, changes = screen_batch(candidates[start:end], part, rules, self.out, decided)
                outgoing += sent
                args = self.state.save_args(changes)
                if args is not None:
                    writes.submit(args)
        finally:
            await writes.wait()
        return outgoing


SAVE_SLICE = 200  # orders per state write: small enough to overlap, large enough to batch
MIN_SAVE_SLICE = 25  # a write's fixed cost (~0.3 ms) keeps slices from being tiny


def save_slice(n: int) -> int:
    """SAVE_SLICE, or a quarter of a smaller batch: only the last slice's write runs alone,
    so a batch of 80 (1,000 orders/s) waits for 20 orders' write instead of 80."""
    return min(SAVE_SLICE, max(MIN_SAVE_SLICE, -(-n // 4)))


def current_rules(control: Control, now: datetime, secret: bytes) -> Rules:
    """The merchants, policies and model the control agents keep current, as of now."""
    scorer = control.scorer
    return Rules(
        now,
        control.merchants.by_id,
        control.policies.active,
        control.policies.shadow,
        scorer.state,
        scorer.warm,
        secret,
        scorer.credit_warm,
        scorer.switched_off,
    )


def screening_loop(rt: Runtime, control: Control) -> TransactionalLoop:
    """The hot path as a service of the worker (registered by streams/tools/worker.py)."""
    settings = rt.settings
    client = redis_client(settings)
    secret = rt.secret
    graph = IdentityGraph(client, settings.identity_namespace, settings.identity_fanout_limit)
    state = HotPathState(
        client, settings.identity_namespace, secret, settings.snapshot_ttl_days * 86400
    )
    writer = OrderedWriter(settings.redis_url, SAVE_SCRIPT)
    handler = OrderScreening(
        settings, rt.registry, graph, state, writer, partial(current_rules, control, secret=secret)
    )
    return TransactionalLoop(
        settings,
        "screen",
        [settings.topic("orders")],
        handler,
        ready=control.ready,
        on_fatal=stop_worker,
    )


def stop_worker(reason: BaseException) -> None:
    """A fenced producer must not write again: stop the worker as SIGTERM would."""
    log.error("stopping the worker: %s", reason)
    os.kill(os.getpid(), signal.SIGTERM)
