"""The hot path's Redis: one read pipeline and one atomic write per batch.

Keys (no PII; `<ns>` is SHINSA_IDENTITY_NAMESPACE):
- `<ns>:vel:<identity>` sorted set of the identity's recent orders (score: event ms, member:
  `<amount>:<order id>`), for velocity. A set, not a list rewritten per batch: two workers
  screening one person at once both add (ZADD is commutative), neither overwrites the other.
- `<ns>:acct:<identity>` the deferred-payment account (agents/accounts.py).
- `<ns>:devfail:<device hash>` failed card authorisations per device (agents/devices.py).
- `<ns>:snap:<order id>` the feature snapshot the learner joins (agents/snapshots.py).
- `<ns>:dec:<order id>` the encoded Decision sent for the order, kept as long as snapshots;
  `<ns>:dtr:<order id>` its encoded DecisionTrace, kept for an hour (a crash retry re-sends it).

Idempotent decisions: a batch's state changes (velocity, account, snapshots) and its decisions
are written in one MULTI/EXEC, before its Kafka transaction commits. A retry of the batch (the
worker died before the commit, or the transaction aborted) finds each decision and re-sends
the same bytes instead of deciding again on state the first attempt already changed; a producer
retry or a replay of an order id is answered the same way, for as long as the decision is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis import asyncio as aioredis

from agents.accounts import account_from_hash, queue_event
from agents.devices import WINDOW_MS, device_key
from agents.exposure import Account
from agents.features import HISTORY_MAX, HISTORY_MS, PastOrder
from agents.snapshots import retrying
from streams.settings import Settings

HISTORY_TTL_SECONDS = 8 * 86_400  # the longest velocity window (7 d), plus a day
TRACE_REPLAY_SECONDS = 3600


def redis_client(settings: Settings) -> aioredis.Redis:
    """The pipeline's Redis client: a call that hangs fails after 5 s and is retried."""
    return aioredis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)


@dataclass(slots=True, frozen=True)
class Keys:
    namespace: str

    def velocity(self, identity_id: str) -> str:
        return f"{self.namespace}:vel:{identity_id}"

    def account(self, identity_id: str) -> str:
        return f"{self.namespace}:acct:{identity_id}"

    def snapshot(self, order_id: str) -> str:
        return f"{self.namespace}:snap:{order_id}"

    def decision(self, order_id: str) -> str:
        return f"{self.namespace}:dec:{order_id}"

    def trace(self, order_id: str) -> str:
        return f"{self.namespace}:dtr:{order_id}"


@dataclass(slots=True)
class Earlier:
    """A decision already made for an order id: re-sent as it was, never decided again."""

    decision: bytes
    trace: bytes | None


@dataclass(slots=True)
class Loaded:
    """The per-identity state a batch is screened with."""

    histories: dict[str, list[PastOrder]]
    accounts: dict[str, Account]
    device_failures: list[int]  # per probe, in order


@dataclass(slots=True)
class Changes:
    """What a screened batch writes, all or nothing."""

    history: list[tuple[str, PastOrder]]  # (identity id, order)
    account_events: list[tuple[str, str, str, int]]  # (identity, event, order id, yen)
    snapshots: list[tuple[str, dict[str, Any]]]  # (order id, snapshot)
    decided: list[tuple[str, bytes, bytes]]  # (order id, Decision bytes, DecisionTrace bytes)


def history_member(amount: int, order_id: str) -> str:
    return f"{amount}:{order_id}"


def history_from_zset(entries: Sequence[tuple[bytes, float]]) -> list[PastOrder]:
    out: list[PastOrder] = []
    for member, score in entries:
        amount, _, order_id = member.decode().partition(":")
        out.append((int(score), int(amount), order_id))
    return out


class HotPathState:
    def __init__(
        self, client: aioredis.Redis, namespace: str, secret: bytes, snapshot_ttl_seconds: float
    ) -> None:
        self.client, self.keys, self.secret = client, Keys(namespace), secret
        self.namespace = namespace
        self.snapshot_ttl = max(1, int(snapshot_ttl_seconds))

    async def earlier(self, order_ids: Sequence[str]) -> list[Earlier | None]:
        """Decisions already made for these order ids (None: decide it now), one round trip."""
        if not order_ids:
            return []
        keys = self.keys

        async def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.mget([keys.decision(o) for o in order_ids])
            pipe.mget([keys.trace(o) for o in order_ids])
            return await pipe.execute()

        decisions, traces = await retrying(read, "earlier decisions")
        return [
            Earlier(d, t) if d is not None else None for d, t in zip(decisions, traces, strict=True)
        ]

    async def load(
        self, identity_ids: Sequence[str], probes: Sequence[tuple[str | None, int]]
    ) -> Loaded:
        """Velocity histories and accounts of a batch's identities, and failed card
        authorisations in the hour before each (device id, order ms) probe: one round trip."""
        unique = list(dict.fromkeys(identity_ids))
        asked = [(d, t) for d, t in probes if d]
        keys = self.keys

        async def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for identity_id in unique:
                pipe.zrange(keys.velocity(identity_id), 0, -1, withscores=True)
                pipe.hgetall(keys.account(identity_id))
            for device_id, at_ms in asked:
                key = device_key(self.namespace, self.secret, device_id)
                pipe.zcount(key, f"({at_ms - WINDOW_MS}", at_ms)
            return await pipe.execute()

        raw = await retrying(read, "identity state") if unique or asked else []
        histories, accounts = {}, {}
        for i, identity_id in enumerate(unique):
            histories[identity_id] = history_from_zset(raw[2 * i])
            accounts[identity_id] = account_from_hash(raw[2 * i + 1])
        found = iter(raw[2 * len(unique) :])
        failures = [int(next(found)) if d else 0 for d, _ in probes]
        return Loaded(histories, accounts, failures)

    async def save(self, changes: Changes) -> None:
        """Write a batch's state changes and decisions in one MULTI/EXEC: a crash leaves all of
        them or none, so a retry either re-sends every decision or decides on unchanged state."""
        if not (changes.history or changes.account_events or changes.snapshots or changes.decided):
            return
        keys, ttl = self.keys, self.snapshot_ttl

        async def write() -> None:
            pipe = self.client.pipeline(transaction=True)
            touched: dict[str, int] = {}
            for identity_id, (at_ms, amount, order_id) in changes.history:
                key = keys.velocity(identity_id)
                pipe.zadd(key, {history_member(amount, order_id): at_ms}, nx=True)
                touched[key] = max(touched.get(key, 0), at_ms)
            for key, newest in touched.items():
                pipe.zremrangebyscore(key, "-inf", newest - HISTORY_MS)
                pipe.zremrangebyrank(key, 0, -(HISTORY_MAX + 1))
                pipe.expire(key, HISTORY_TTL_SECONDS)
            for identity_id, event, order_id, amount in changes.account_events:
                queue_event(pipe, keys.account(identity_id), event, order_id, amount)
            for order_id, snapshot in changes.snapshots:
                pipe.set(keys.snapshot(order_id), orjson.dumps(snapshot), ex=ttl)
            for order_id, decision, trace in changes.decided:
                pipe.set(keys.decision(order_id), decision, ex=ttl)
                pipe.set(keys.trace(order_id), trace, ex=TRACE_REPLAY_SECONDS)
            await pipe.execute()

        await retrying(write, "screening state")
