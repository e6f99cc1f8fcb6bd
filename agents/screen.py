"""identified-orders (keyed by identity) → enrich → features → score → decide → decisions.

Orders arrive here validated and resolved by agents/intake.py. All stages from here share the
identity key, so they are function calls inside one agent, and per-identity state is local:
the identity's recent orders (for velocity features) and its deferred-payment account are
loaded for the whole batch in one Redis round trip and saved in one (agents/accounts.py), so a
restarted or rebalanced worker finds them. The policy in force
(and a shadow candidate, if any) comes from agents/policies.py, the model from
agents/scorer.py. `screen_order` is the pure composition; `screen_orders` is the agent: it
takes batches, writes each order's feature snapshot (for the learner, agents/learn.py), sends
one decision and one trace (for audit: `shinsa explain`) per order, and awaits all of it before
the batch is acknowledged, so a crash never commits an unsent result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any

from prometheus_client import Counter
from redis import asyncio as aioredis

from agents import reasons
from agents.accounts import IdentityState
from agents.decide import APPROVE, ModelOpinion, Policy, Signals, Verdict, decide_order
from agents.devices import DeviceFailures
from agents.enrich import EnrichedOrder, enrich_order
from agents.exposure import Account, apply_event, empty_account, is_held, outstanding
from agents.features import PastOrder, add_to_history, history_before, order_features
from agents.intake import read_hop_headers
from agents.merchants import merchant_by_id, merchants_loaded
from agents.model import ModelState
from agents.policies import policies, policies_loaded
from agents.policy import PolicySet, match_lists, order_list_keys
from agents.scorer import models_loaded, scorer
from agents.snapshots import SnapshotStore
from agents.validate import Rejection, decode_event
from streams.app import app, registry, settings
from streams.delivery import Outgoing, send_all
from streams.dlq import dead_letter
from streams.metrics import DECIDED_AMOUNT, DECISIONS, LATENCY, MODEL_SCORE
from streams.records import Merchant, Order
from streams.topics import decisions_topic, dlq_topic, identified_orders_topic, traces_topic

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Screened:
    decision: dict[str, Any]  # the Decision datum
    features: dict[str, float]  # exactly what the model scored: the snapshot
    model_score: float
    trace: dict[str, Any]  # the DecisionTrace datum
    shadow: Verdict | None = None  # what the shadow policy would have decided


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
) -> Screened:
    """One validated, identified order, its identity's earlier orders and account → decision."""
    enriched = enrich_order(order, merchants, identity, attributes)
    features = order_features(enriched, history_before(history, order.order_id), device_failures)
    probability = model.score(features)
    contributions = model.contributions(features) if warm else []
    opinion = ModelOpinion(probability, model.name, warm, tuple(n for n, _ in contributions))
    keys = (
        order_list_keys(order, identity["identity_id"], secret)
        if policies_have_lists(policies, shadow)
        else {}
    )
    # a redelivered order is already in its account: do not count it against itself
    balance = outstanding(account) - account["open"].get(order.order_id, 0)
    signals = Signals(features, balance, is_held(account), match_lists(policies, keys))
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
    }
    trace = trace_of(decision, enriched, policy, policies, signals, verdict, opinion, features)
    trace["contributions"] = dict(contributions)
    if shadow_verdict is not None and shadow is not None:
        trace["shadow"] = {
            "policy_version": shadow.version,
            "decision": shadow_verdict.decision,
            "score": shadow_verdict.score,
            "reasons": list(shadow_verdict.reasons),
        }
    return Screened(decision, features, probability, trace, shadow_verdict)


def policies_have_lists(*sets: PolicySet | None) -> bool:
    """Hashing an order's phone, email and device for the lists costs µs: only when needed."""
    return any(s is not None and (s.blocks or s.allows) for s in sets)


def thresholds_of(policy: Policy) -> dict[str, float]:
    """The effective policy's numeric rules, flattened for the trace."""
    out: dict[str, float] = {}
    for name, value in asdict(policy).items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            out[name] = float(value)
        elif isinstance(value, dict):
            out.update({f"{name}.{k}": float(v) for k, v in value.items()})
    return out


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
    }
    return {
        "order_id": decision["order_id"],
        "decided_at": decision["decided_at"],
        "decision": verdict.decision,
        "score": verdict.score,
        "reasons": list(verdict.reasons),
        "policy_version": policies.version,
        "merchant_override": enriched.order.merchant_id in policies.merchants,
        "thresholds": thresholds_of(policy),
        "allowed_methods": list(policy.allowed_methods) if policy.allowed_methods else None,
        "inputs": inputs,
        "fired": list(verdict.fired),
        "list_hits": {
            "hard_blocks": list(signals.lists.hard_blocks),
            "allows": list(signals.lists.allows),
            "blocks": list(signals.lists.blocks),
        },
        "model_version": opinion.version,
        "model_warm": opinion.warm,
        "model_score": opinion.score,
        "contributions": {},
        "features": dict(features),
        "shadow": None,
    }


def snapshot_of(order: Order, screened: Screened) -> dict[str, Any]:
    """What the learner and the exposure stage need when the outcome arrives (no PII)."""
    decision = screened.decision
    return {
        "x": screened.features,
        "s": screened.model_score,
        "v": decision["model_version"],
        "t": int(order.event_time.timestamp() * 1000),
        "i": decision["identity_id"],
        "a": order.amount,
        "m": order.payment_method,
        "d": decision["decision"],
    }


def remember_order(
    identity_id: str,
    histories: dict[str, list[PastOrder]],
    accounts: dict[str, Account],
    screened: Screened,
    order: Order,
) -> tuple[str, str, str, int] | None:
    """Per-identity state after the decision (saved once per batch): velocity history, and
    the account event if a deferred order was approved."""
    at_ms = to_ms(order.event_time)
    history = histories.get(identity_id, [])
    histories[identity_id] = add_to_history(history, order.order_id, at_ms, order.amount)
    if screened.decision["decision"] == APPROVE and order.payment_method == "DEFERRED":
        accounts[identity_id] = apply_event(
            accounts[identity_id], "approved", order.order_id, order.amount
        )
        return (identity_id, "approved", order.order_id, order.amount)
    return None


@cache
def decision_series(decision: str, category: str) -> tuple[Any, Any]:
    """Bound label children, looked up once per (decision, category): `labels()` costs µs."""
    return DECISIONS.labels(decision, category), DECIDED_AMOUNT.labels(decision, category)


LATENCY_EVENT = LATENCY.labels("event")
LATENCY_INGEST = LATENCY.labels("ingest")


def record_decision_metrics(decision: Mapping[str, Any]) -> None:
    count, amount = decision_series(decision["decision"], decision["merchant_category"])
    count.inc()
    amount.inc(decision["amount"])
    LATENCY_EVENT.observe(max(decision["latency_event_ms"], 0.0) / 1000)
    LATENCY_INGEST.observe(max(decision["latency_ingest_ms"], 0.0) / 1000)


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def hop_of(msg: Any) -> tuple[dict[str, Any], dict[str, Any], float] | None:
    """The identity, attributes and ingest time the order carries (None: a bug upstream)."""
    try:
        return read_hop_headers(msg.headers)
    except Exception:  # reported per message by the caller
        return None


def decoded(msg: Any) -> Order | None:
    try:
        order = decode_event(registry, "Order", msg.value, None)
    except Exception:  # counted as a processing error by the caller
        return None
    return None if isinstance(order, Rejection) else order


SHADOW_DECISIONS = Counter(
    "shinsa_shadow_decisions_total",
    "Orders decided by both the active and the shadow policy, by the pair of decisions.",
    ["active", "shadow"],
)


@app.agent(identified_orders_topic)
async def screen_orders(stream: Any) -> None:
    await merchants_loaded.wait()
    await models_loaded.wait()
    await policies_loaded.wait()
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
    store = SnapshotStore(client, settings.identity_namespace, settings.snapshot_ttl_days * 86400)
    secret = settings.hash_key.get_secret_value().encode()
    devices = DeviceFailures(client, settings.identity_namespace, secret)
    state = IdentityState(client, settings.identity_namespace)
    decisions = decisions_topic.get_topic_name()
    traces = traces_topic.get_topic_name()
    dead_letters = dlq_topic.get_topic_name()
    async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
        outgoing: list[Outgoing] = []
        snapshots: list[tuple[str, dict[str, Any]]] = []
        now = datetime.now(UTC)
        # one model and one policy for the whole batch
        model, warm = scorer.state, scorer.warm
        active, shadow = policies.active, policies.shadow
        orders = [decoded(event.message) for event in events]
        failures = await devices.counts(
            [(o.device_id, to_ms(o.event_time)) if o else (None, 0) for o in orders]
        )
        hops = [hop_of(event.message) for event in events]
        histories, accounts = await state.load([h[0]["identity_id"] for h in hops if h])
        changed: dict[str, list[PastOrder]] = {}
        account_events = []
        for event, order, hop, device_failures in zip(events, orders, hops, failures, strict=True):
            msg = event.message
            try:
                if order is None or hop is None:  # intake made both: only a bug gets here
                    raise ValueError("undecodable order or hop headers after intake")
                identity, attributes, ingest_ms = hop
                identity_id = identity["identity_id"]
                history = histories.get(identity_id, [])
                screened = screen_order(
                    order,
                    identity=identity,
                    attributes=attributes,
                    ingest_ms=ingest_ms,
                    now=now,
                    merchants=merchant_by_id,
                    policies=active,
                    history=history,
                    account=accounts.get(identity_id) or empty_account(),
                    model=model,
                    warm=warm,
                    secret=secret,
                    shadow=shadow,
                    device_failures=device_failures,
                )
                accounts.setdefault(identity_id, empty_account())
                opened = remember_order(identity_id, histories, accounts, screened, order)
                changed[identity_id] = histories[identity_id]
                if opened:
                    account_events.append(opened)
            except Exception as exc:  # a bug must not lose the rest of the batch
                log.exception("screening failed at %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                outgoing.append(
                    dead_letter(
                        dead_letters,
                        msg,
                        "identified-orders",
                        reasons.PROCESSING_ERROR,
                        type(exc).__name__,
                    )
                )
                continue
            result = screened.decision
            order_key = result["order_id"].encode()
            snapshots.append((order.order_id, snapshot_of(order, screened)))
            value = registry.encode("Decision", result)
            outgoing.append(Outgoing(decisions, order_key, value))
            trace = registry.encode("DecisionTrace", screened.trace)
            outgoing.append(Outgoing(traces, order_key, trace))
            record_decision_metrics(result)
            MODEL_SCORE.observe(screened.model_score)
            if screened.shadow is not None:
                SHADOW_DECISIONS.labels(result["decision"], screened.shadow.decision).inc()
        await state.save(changed, account_events)
        await store.save(snapshots)  # before the decisions: an outcome can only follow them
        await send_all(app.producer, outgoing)
