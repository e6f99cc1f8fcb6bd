"""The pipeline's Redis, in one place: the client, the retry rule, the key layout, the typed
feature snapshot and every store. Nothing else in the pipeline builds a Redis key, except the
identity graph script (agents/identity_graph.lua), which lays out its own under `<ns>`; the
hot path's two scripts get theirs from `Keys`.

Keys (no PII; `<ns>` is SHINSA_IDENTITY_NAMESPACE; ids are ours, personal values are keyed
hashes, `keyed_hash`):
- identity graph (agents/identity_graph.lua): `<ns>:key`, `<ns>:parent`, `<ns>:id:<identity>`…
- `<ns>:vel:<identity>` sorted set of the identity's recent orders (score: event ms, member:
  `<amount>:<order id>`), for velocity. A set, not a list rewritten per batch: two workers
  screening one person at once both add (ZADD is commutative), neither overwrites the other.
- `<ns>:acct:<identity>` the deferred-payment account: `o:<order id>` → yen for each open
  deferred order, `u:<order id>` for each unpaid one (events are single HSET / HDEL commands).
- `<ns>:exposure` the totals over every account (`outstanding` yen, `held` identities), kept
  by the same scripts that change accounts (agents/accounts.lua).
- wallet accounts (agents/wallet.py; account ids are opaque ids, devices keyed hashes):
  `<ns>:wa:<account>` hash of what the accounts topic said (identity, kyc, opened, status,
  limit); `<ns>:wp:<account>` its payments of the last 30 days (score: event ms, member
  `kind|yen|counterparty|payment id`); `<ns>:wi:<account>` transfers it received in the last
  day (`sender|yen|payment id`); `<ns>:wl:<account>` its logins of the last week
  (`device hash|1 or 0|login id`); `<ns>:wd:<account>` devices it logged in from, scored by
  first use.
- `<ns>:devfail:<device hash>` failed card authorisations per device, scored by event time.
- `<ns>:snap:<order id>` the feature snapshot the learner joins (`Snapshot`).
- `<ns>:dec:<order id>` the encoded Decision sent for the order, kept as long as snapshots;
  `<ns>:dtr:<order id>` its encoded DecisionTrace, kept for an hour (a crash retry re-sends it).
- `<ns>:learner` the learner lease.

Idempotent decisions: a batch's state changes (velocity, account, snapshots) and its decisions
are written in one MULTI/EXEC, before its Kafka transaction commits. A retry of the batch (the
worker died before the commit, or the transaction aborted) finds each decision and re-sends
the same bytes instead of deciding again on state the first attempt already changed; a producer
retry or a replay of an order id is answered the same way, for as long as the decision is kept.

While Redis does not answer, every caller waits and retries (`retrying`: logged, counted in
`shinsa_redis_retries_total{store}`) rather than lose or skip work.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import orjson
import redis
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agents.credit import HISTORY_SUMS, REPAYMENTS, Account, empty_account
from agents.entities import ACTIVITY_WIDTH, RISK_WIDTH, Decayed, EntityState
from agents.features import HISTORY_MAX, HISTORY_MS, PastOrder
from agents.wallet_features import (
    DAY,
    HOUR,
    SPLIT_BILL_MS,
    AccountFacts,
    Incoming,
    LoginSeen,
    PastPayment,
    WalletContext,
)
from agents.wallet_features import HISTORY_MS as WALLET_HISTORY_MS
from streams.metrics import REDIS_RETRIES
from streams.records import Login, Payment
from streams.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

HISTORY_TTL_SECONDS = 8 * 86_400  # the longest velocity window (7 d), plus a day
TRACE_REPLAY_SECONDS = 3600


def lua(name: str) -> str:
    return (Path(__file__).parent / name).read_text(encoding="utf-8")


LOAD_SCRIPT = lua("state_load.lua")
# accounts change through one rule (accounts.lua), entities' decayed sums through another
ACCOUNTS_LUA = lua("identity_root.lua") + lua("accounts.lua")  # accounts follow merges
SAVE_SCRIPT = ACCOUNTS_LUA + lua("entities.lua") + lua("segments.lua") + lua("state_save.lua")
LEARNED_SCRIPT = lua("entities.lua") + lua("entities_learn.lua")
EVENTS_SCRIPT = ACCOUNTS_LUA + lua("account_events.lua")
RECOUNT_SCRIPT = lua("account_totals.lua")
ACCOUNT_EVENTS = ("approved", "unpaid", "repaid", "written_off")
DEVICE_WINDOW_MS = 3_600_000  # failed authorisations counted in the hour before an order
DEVICE_KEEP_MS = 2 * 86_400_000

# The stores, the label values of the retry counter.
STORES = (
    "identity",
    "state",
    "decisions",
    "snapshots",
    "devices",
    "accounts",
    "wallet",
    "lease",
    "segments",
    "campaign",
)
for _store in STORES:  # at 0 from the start, so rate() counts the first outage
    REDIS_RETRIES.labels(_store)


REDIS_OUTAGE = (RedisConnectionError, RedisTimeoutError, OSError)


def outage_backoff(store: str, exc: BaseException, backoff: float) -> float:
    """Count and log a Redis outage seen by `store`; the next wait after `backoff` (the
    one retry policy of `retrying` and `retrying_blocking`: doubling up to 5 s)."""
    REDIS_RETRIES.labels(store).inc()
    reason = type(exc).__name__
    log.warning("Redis unavailable for %s (%s); retrying in %.1fs", store, reason, backoff)
    return min(backoff * 2, 5.0)


async def retrying(call: Callable[[], Awaitable[T]], store: str) -> T:
    """Run a Redis call until Redis answers, backing off up to 5 s between attempts."""
    backoff = 0.1
    while True:
        try:
            return await call()
        except REDIS_OUTAGE as exc:
            wait, backoff = backoff, outage_backoff(store, exc, backoff)
            await asyncio.sleep(wait)


def retrying_blocking(call: Callable[[], T], store: str, given_up: Callable[[], bool]) -> T:
    """`retrying` for a thread of its own (agents/state.py OrderedWrites); stops retrying
    once `given_up()` says the work was abandoned."""
    backoff = 0.1
    while True:
        try:
            return call()
        except REDIS_OUTAGE as exc:
            if given_up():
                raise
            wait, backoff = backoff, outage_backoff(store, exc, backoff)
            time.sleep(wait)


def redis_client(settings: Settings) -> aioredis.Redis:
    """The pipeline's Redis client: a call that hangs fails after 5 s and is retried."""
    return aioredis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)


# ---------------------------------------------------------------- keys

_HMAC_BASES: dict[bytes, Any] = {}  # secret → keyed state (a plain dict: lru_cache's own key
# for a bytes argument costs an allocation, and this is called 12 times a record)


def _hmac_base(secret: bytes) -> Any:
    """A keyed HMAC state to copy: ~0.9 µs per value, where hmac.new(...) costs ~5 µs."""
    base = _HMAC_BASES.get(secret)
    if base is None:
        if len(_HMAC_BASES) >= 8:
            _HMAC_BASES.clear()
        mac = hmac.new(secret, digestmod="sha256")
        # hmac.HMAC wraps OpenSSL's object in three Python calls per value: use it directly
        base = _HMAC_BASES[secret] = getattr(mac, "_hmac", None) or mac
    return base


def keyed_hash(secret: bytes, kind: str, value: str) -> str:
    """HMAC-SHA256 of `kind` and `value`, 128 bits in hex: how a personal value becomes a key."""
    mac = _hmac_base(secret).copy()
    mac.update(f"{kind}\x1f{value}".encode())
    return mac.digest()[:16].hex()


@lru_cache(maxsize=1 << 16)  # merchants, returning devices and buyers: ~3 µs a hash saved
def entity_ref(secret: bytes, kind: str, value: str) -> str:
    """How an entity (identity, merchant, device, card) is named in Redis and in snapshots:
    its kind and a keyed hash of its id, so a device id or card token is never a key."""
    return f"{kind}:{keyed_hash(secret, 'entity:' + kind, value)}"


def entity_kind(ref: str) -> str:
    return ref.partition(":")[0]


@dataclass(slots=True, frozen=True)
class Keys:
    namespace: str

    def velocity(self, identity_id: str) -> str:
        return f"{self.namespace}:vel:{identity_id}"

    def account(self, identity_id: str) -> str:
        return f"{self.namespace}:acct:{identity_id}"

    def device(self, secret: bytes, device_id: str) -> str:
        return f"{self.namespace}:devfail:{keyed_hash(secret, 'device', device_id)}"

    def snapshot(self, order_id: str) -> str:
        return f"{self.namespace}:snap:{order_id}"

    def decision(self, order_id: str) -> str:
        return f"{self.namespace}:dec:{order_id}"

    def trace(self, order_id: str) -> str:
        return f"{self.namespace}:dtr:{order_id}"

    def lease(self) -> str:
        return f"{self.namespace}:learner"

    def promote(self) -> str:
        """A pending `shinsa model promote` request: a hash of by and at (expires
        unanswered)."""
        return f"{self.namespace}:model:promote"

    def rollback(self) -> str:
        """A pending `shinsa model rollback` request: a hash of by, at and the signed
        checkpoint to return to (expires unanswered)."""
        return f"{self.namespace}:model:rollback"

    def exposure(self) -> str:
        return f"{self.namespace}:exposure"

    def entity(self, ref: str) -> str:
        """An entity's activity and known risk (`ref`: kind and keyed hash, entity_ref)."""
        return f"{self.namespace}:ent:{ref}"

    def wallet_account(self, account_id: str) -> str:
        return f"{self.namespace}:wa:{account_id}"

    def wallet_payments(self, account_id: str) -> str:
        return f"{self.namespace}:wp:{account_id}"

    def wallet_incoming(self, account_id: str) -> str:
        return f"{self.namespace}:wi:{account_id}"

    def wallet_logins(self, account_id: str) -> str:
        return f"{self.namespace}:wl:{account_id}"

    def wallet_devices(self, account_id: str) -> str:
        return f"{self.namespace}:wd:{account_id}"

    # merchant audiences (agents/segments.py; segments.lua builds the same names)
    def segment_rows(self, merchant_id: str) -> str:
        return f"{self.namespace}:seg:m:{merchant_id}:rows"

    def segment_ids(self, merchant_id: str) -> str:
        return f"{self.namespace}:seg:m:{merchant_id}:ids"

    def segment_person(self, identity_id: str) -> str:
        return f"{self.namespace}:seg:p:{identity_id}"

    def segment_api_keys(self) -> str:
        return f"{self.namespace}:seg:keys"

    def segment_audit(self, merchant_id: str) -> str:
        return f"{self.namespace}:seg:audit:{merchant_id}"

    # the campaign (agents/campaign.py, draw.py; campaign.lua builds the same names)
    def campaign_stats(self, campaign_id: str, month: str) -> str:
        return f"{self.namespace}:camp:{campaign_id}:{month}:stats"

    def campaign_person(self, campaign_id: str, month: str, identity_id: str) -> str:
        return f"{self.namespace}:camp:{campaign_id}:{month}:p:{identity_id}"

    def campaign_seed(self, campaign_id: str, month: str) -> str:
        return f"{self.namespace}:camp:{campaign_id}:{month}:seed"


# ---------------------------------------------------------------- feature snapshots


@dataclass(slots=True)
class Snapshot:
    """What an order was scored with, kept until its label arrives (no PII: numbers, flags and
    our own ids). The learner learns from exactly these features (no leakage), judges the
    score given then (progressive validation), and records the label it learned, so a repeated
    outcome is not learned twice and a changed one corrects the model once. Stored as compact
    JSON with one-letter fields."""

    features: dict[str, float]
    score: float
    model_version: str
    event_ms: int
    identity_id: str
    amount: int
    payment_method: str
    decision: str
    label: int | None = None  # the label learned, once learned
    learned_version: int | None = None  # the model version that learned it
    entities: list[str] = field(default_factory=list)  # entity refs: whose risk a label feeds
    challenger_score: float | None = None  # the challenger's shadow score, if there was one
    # deferred orders: what the credit model scored (agents/credit.py) and the repayment
    # label it learned, apart from the fraud label above
    credit_features: dict[str, float] | None = None
    credit_score: float | None = None
    credit_label: int | None = None
    credit_learned_version: int | None = None

    def to_json(self) -> bytes:
        out: dict[str, Any] = {
            "x": self.features,
            "s": self.score,
            "v": self.model_version,
            "t": self.event_ms,
            "i": self.identity_id,
            "a": self.amount,
            "m": self.payment_method,
            "d": self.decision,
        }
        if self.label is not None:
            out["y"], out["lv"] = self.label, self.learned_version
        if self.entities:
            out["e"] = self.entities
        if self.challenger_score is not None:
            out["c"] = self.challenger_score
        if self.credit_features is not None:
            out["k"], out["ks"] = self.credit_features, self.credit_score
        if self.credit_label is not None:
            out["ky"], out["klv"] = self.credit_label, self.credit_learned_version
        return orjson.dumps(out)

    @classmethod
    def from_json(cls, raw: bytes) -> Snapshot:
        d = orjson.loads(raw)
        return cls(
            d["x"],
            float(d.get("s", 0.0)),
            str(d.get("v", "")),
            int(d.get("t", 0)),
            str(d.get("i", "")),
            int(d.get("a", 0)),
            str(d.get("m", "")),
            str(d.get("d", "")),
            d.get("y"),
            d.get("lv"),
            list(d.get("e", ())),
            d.get("c"),
            d.get("k"),
            d.get("ks"),
            d.get("ky"),
            d.get("klv"),
        )


class SnapshotStore:
    def __init__(self, client: aioredis.Redis, namespace: str, ttl_seconds: float) -> None:
        self.client, self.keys = client, Keys(namespace)
        self.ttl = max(1, int(ttl_seconds))
        self._learned = client.register_script(LEARNED_SCRIPT)

    async def load(self, order_ids: Sequence[str]) -> list[Snapshot | None]:
        if not order_ids:
            return []
        keys = [self.keys.snapshot(o) for o in order_ids]
        raw = await retrying(lambda: self.client.mget(keys), "snapshots")
        return [Snapshot.from_json(r) if r is not None else None for r in raw]

    async def take_request(self, key: str) -> dict[bytes, bytes]:
        """An operator's pending request to the learner (`Keys.promote`, `Keys.rollback`: a
        hash), taken so that it is answered once; {} if there is none."""

        async def take() -> dict[bytes, bytes]:
            async with self.client.pipeline(transaction=True) as pipe:
                found, _ = await pipe.hgetall(key).delete(key).execute()
            return found

        return await retrying(take, "lease")

    async def mark_learned(
        self,
        learned: Sequence[tuple[str, Snapshot]],
        risk: Sequence[tuple[str, Decayed]] = (),
    ) -> None:
        """Store the label learned into each snapshot (keeping its TTL) and add the labels to
        their entities' known risk, in one atomic script (agents/entities_learn.lua)."""
        if not learned and not risk:
            return
        args: list[Any] = [len(learned)]
        for order_id, snapshot in learned:
            args += (self.keys.snapshot(order_id), snapshot.to_json())
        args.append(len(risk))
        for ref, sums in risk:
            args += (self.keys.entity(ref), sums.to_text())
        await retrying(lambda: self._learned(args=args), "snapshots")


# ---------------------------------------------------------------- accounts


def account_from_hash(fields: dict[bytes, bytes]) -> Account:
    account = empty_account()
    for name, value in fields.items():
        kind, _, key = name.decode().partition(":")
        if kind == "o":
            account["open"][key] = int(value)
        elif kind == "u":
            account["unpaid"].append(key)
        elif kind == "h" and (key in REPAYMENTS or key in HISTORY_SUMS):
            account["history"][key] = int(value)
    return account


class AccountStore:
    """Settlements change accounts (and the exposure totals beside them) through
    agents/accounts.lua, the rule the hot path's approvals follow too."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client, self.keys = client, Keys(namespace)
        self._events = client.register_script(EVENTS_SCRIPT)
        self._recount = client.register_script(RECOUNT_SCRIPT)

    async def apply(self, events: Sequence[tuple[str, str, str, int, int]]) -> None:
        """(identity, event, order id, yen, hours from order to repayment) account events, in
        one atomic call."""
        if not events:
            return
        args: list[Any] = [self.keys.exposure()]
        for identity_id, event, order_id, amount, hours in events:
            if event not in ACCOUNT_EVENTS:
                raise ValueError(f"unknown account event {event!r}")
            args += (self.keys.account(identity_id), event, order_id, amount, hours)
        await retrying(lambda: self._events(args=args), "accounts")

    async def totals(self) -> tuple[int, int]:
        """(outstanding yen, identities held), kept by every account change: for the gauges.
        Totals never counted (data written before they were kept) are recounted first."""
        fields = await self.client.hmget(self.keys.exposure(), ["outstanding", "held", "since"])
        if fields[2] is None:
            return await self.recount()
        return int(fields[0] or 0), int(fields[1] or 0)

    async def band_totals(self) -> dict[str, int]:
        """Outstanding yen by the credit band its orders were approved in (agents/credit.py)."""
        fields = await self.client.hgetall(self.keys.exposure())
        return {
            name.decode()[5:]: int(value)
            for name, value in fields.items()
            if name.startswith(b"band:")
        }

    async def recount(self, step: int = 1000) -> tuple[int, int]:
        """Sum every account again (in Redis, `step` keys a call) and store the totals.

        For accounts written before totals were kept: O(keys), so run once, not per scrape.
        Changes made while it runs may be counted twice or not at all (it takes seconds)."""
        cursor, total, held = b"0", 0, 0
        pattern = self.keys.account("*")
        while True:
            cursor, part, part_held = await self._recount(args=[cursor, pattern, step])
            total, held = total + int(part), held + int(part_held)
            if cursor in (b"0", 0, "0"):
                break
        await self.client.hset(
            self.keys.exposure(), mapping={"outstanding": total, "held": held, "since": 1}
        )
        return total, held


# ---------------------------------------------------------------- devices


class DeviceFailures:
    """Failed card authorisations per device (keyed hash), shared by every worker; the hot
    path counts them in the hour before each order (`HotPathState.load`, state_load.lua)."""

    def __init__(self, client: aioredis.Redis, namespace: str, secret: bytes) -> None:
        self.client, self.keys, self.secret = client, Keys(namespace), secret

    async def record(self, failures: Sequence[tuple[str, str, int]]) -> None:
        """(device id, payment id, event ms) of failed authorisations, one round trip."""
        if not failures:
            return

        async def write() -> None:
            pipe = self.client.pipeline(transaction=False)
            for device_id, payment_id, at_ms in failures:
                key = self.keys.device(self.secret, device_id)
                pipe.zadd(key, {payment_id: at_ms})
                pipe.zremrangebyscore(key, "-inf", at_ms - DEVICE_KEEP_MS)
                pipe.pexpire(key, DEVICE_KEEP_MS)
            await pipe.execute()

        await retrying(write, "devices")


# ---------------------------------------------------------------- the learner lease


class LeaseLost(Exception):
    """Another worker holds the learner lease now: stop learning."""


RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class Lease:
    """A Redis lease naming the one learner; renewed while it learns."""

    def __init__(self, client: aioredis.Redis, namespace: str, ttl_seconds: float) -> None:
        self.client, self.key = client, Keys(namespace).lease()
        self.token = uuid.uuid4().hex
        self.ttl_ms = int(ttl_seconds * 1000)
        self._renew = client.register_script(RENEW)

    async def acquire(self) -> bool:
        got = await retrying(
            lambda: self.client.set(self.key, self.token, nx=True, px=self.ttl_ms), "lease"
        )
        return bool(got)

    async def renew(self) -> None:
        ok = await retrying(
            lambda: self._renew(keys=[self.key], args=[self.token, self.ttl_ms]), "lease"
        )
        if not ok:
            raise LeaseLost(self.key)


# ---------------------------------------------------------------- the hot path's state


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
    entities: dict[str, EntityState] = field(default_factory=dict)  # by entity ref


def merge_loaded(parts: Sequence[Loaded]) -> Loaded:
    """The state of a batch loaded a chunk at a time, as one load of the chunks' candidates in
    order would return it (the probes' failures line up with the candidates)."""
    if len(parts) == 1:
        return parts[0]
    merged = Loaded({}, {}, [], {})
    for part in parts:
        merged.histories.update(part.histories)
        merged.accounts.update(part.accounts)
        merged.device_failures += part.device_failures
        merged.entities.update(part.entities)
    return merged


@dataclass(slots=True)
class Changes:
    """What a screened batch writes, all or nothing."""

    history: list[tuple[str, PastOrder]]  # (identity id, order)
    account_events: list[tuple[str, str, str, int, str]]  # (identity, event, order, yen, band)
    snapshots: list[tuple[str, Snapshot]]  # (order id, snapshot)
    decided: list[tuple[str, bytes, bytes]]  # (order id, Decision bytes, DecisionTrace bytes)
    # entity ref → the batch's events of it (decayed sums) and the newest event's ms
    activity: dict[str, tuple[Decayed, int]] = field(default_factory=dict)
    # purchases for merchant audiences: (merchant, identity, JST day, yen, person attributes)
    segments: list[tuple[str, str, int, int, str]] = field(default_factory=list)

    def record_activity(self, ref: str, at_ms: int, values: Sequence[float]) -> None:
        sums, last = self.activity.get(ref) or (Decayed(ACTIVITY_WIDTH), 0)
        sums.add(at_ms, values)
        self.activity[ref] = sums, max(last, at_ms)


def entity_from_reply(reply: Sequence[bytes | None]) -> EntityState:
    activity, risk, last = reply
    return EntityState(
        Decayed.from_text(ACTIVITY_WIDTH, activity),
        Decayed.from_text(RISK_WIDTH, risk),
        int(last or 0),
    )


def history_member(amount: int, order_id: str) -> str:
    return f"{amount}:{order_id}"


def history_from_zset(entries: Iterable[tuple[bytes, Any]]) -> list[PastOrder]:
    out: list[PastOrder] = []
    for member, score in entries:
        amount, _, order_id = member.decode().partition(":")
        out.append((int(float(score)), int(amount), order_id))
    return out


class HotPathState:
    """One read per batch of the hot path, and one atomic write per `save` (the orders' loop
    writes a slice of 200 per call, through OrderedWriter: agents/screen.py)."""

    def __init__(
        self, client: aioredis.Redis, namespace: str, secret: bytes, snapshot_ttl_seconds: float
    ) -> None:
        self.client, self.keys, self.secret = client, Keys(namespace), secret
        self.snapshot_ttl = max(1, int(snapshot_ttl_seconds))
        self._load = client.register_script(LOAD_SCRIPT)
        self._save = client.register_script(SAVE_SCRIPT)

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

        decisions, traces = await retrying(read, "decisions")
        return [
            Earlier(d, t) if d is not None else None for d, t in zip(decisions, traces, strict=True)
        ]

    async def load(
        self,
        identity_ids: Sequence[str],
        probes: Sequence[tuple[str | None, int]],
        entity_refs: Sequence[str] = (),
    ) -> Loaded:
        """Velocity histories and accounts of a batch's identities, failed card
        authorisations in the hour before each (device id, order ms) probe, and the entities'
        activity and known risk: one script call."""
        unique = list(dict.fromkeys(identity_ids))
        asked = [(d, t) for d, t in probes if d]
        refs = list(dict.fromkeys(entity_refs))
        if not unique and not asked and not refs:
            return Loaded({}, {}, [0] * len(probes))
        keys = self.keys
        args: list[Any] = [len(unique)]
        for identity_id in unique:
            args += (keys.velocity(identity_id), keys.account(identity_id))
        args.append(len(asked))
        for device_id, at_ms in asked:
            args += (keys.device(self.secret, device_id), at_ms)
        args.append(DEVICE_WINDOW_MS)
        args.append(len(refs))
        args += [keys.entity(ref) for ref in refs]
        raw = await retrying(lambda: self._load(args=args), "state")
        histories, accounts = {}, {}
        for i, identity_id in enumerate(unique):
            flat = raw[2 * i]
            histories[identity_id] = history_from_zset(zip(flat[::2], flat[1::2], strict=True))
            fields = raw[2 * i + 1]
            pairs = zip(fields[::2], fields[1::2], strict=True)
            accounts[identity_id] = account_from_hash(dict(pairs))
        found = iter(raw[2 * len(unique)])
        failures = [int(next(found)) if d else 0 for d, _ in probes]
        tail = raw[2 * len(unique) + 1 :]
        entities = {ref: entity_from_reply(r) for ref, r in zip(refs, tail, strict=True)}
        return Loaded(histories, accounts, failures, entities)

    async def save(self, changes: Changes) -> None:
        """Write a batch's state changes and decisions atomically (one script: Redis runs it
        alone): a crash leaves all of them or none, so a retry either re-sends every decision
        or decides on unchanged state."""
        args = self.save_args(changes)
        if args is not None:
            await retrying(lambda: self._save(args=args), "state")

    def save_args(self, changes: Changes) -> list[Any] | None:
        """The save script's arguments for `changes` (state_save.lua); None if nothing changed."""
        if not (
            changes.history
            or changes.account_events
            or changes.decided
            or changes.activity
            or changes.segments
        ):
            return None
        keys = self.keys
        args: list[Any] = [
            self.snapshot_ttl,
            TRACE_REPLAY_SECONDS,
            HISTORY_TTL_SECONDS,
            HISTORY_MS,
            HISTORY_MAX,
            len(changes.history),
        ]
        for identity_id, (at_ms, amount, order_id) in changes.history:
            args += (keys.velocity(identity_id), at_ms, history_member(amount, order_id))
        args += (keys.exposure(), len(changes.account_events))
        for identity_id, event, order_id, amount, band in changes.account_events:
            if event != "approved":  # the hot path only opens orders; settlements close them
                raise ValueError(f"the hot path does not apply {event!r} account events")
            args += (keys.account(identity_id), order_id, amount, band)
        if len(changes.snapshots) != len(changes.decided):
            raise ValueError("every decided order has its snapshot")
        args.append(len(changes.decided))
        for (order_id, snapshot), (decided_id, decision, trace) in zip(
            changes.snapshots, changes.decided, strict=True
        ):
            if order_id != decided_id:
                raise ValueError(f"snapshot {order_id} beside decision {decided_id}")
            args += (keys.snapshot(order_id), snapshot.to_json(), keys.decision(order_id))
            args += (decision, keys.trace(order_id), trace)
        args.append(len(changes.activity))
        for ref, (sums, last_ms) in changes.activity.items():
            args += (keys.entity(ref), sums.to_text(), last_ms)
        args += (keys.namespace, len(changes.segments))
        for purchase in changes.segments:
            args += purchase
        return args


class WriteSkipped(Exception):
    """An earlier write of the batch failed or was abandoned: this one must not run."""


class OrderedWriter:
    """Script calls run one after another in a thread of their own, on a blocking connection.

    While Redis runs slice k's write, the event loop's thread screens slice k+1: waiting on a
    blocking socket releases the GIL at once, where an asyncio call is only resumed when the
    loop next gets control (measured: the chain of writes then stalled behind the screening)."""

    def __init__(self, url: str, script: str, store: str = "state") -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self.script = self.client.register_script(script)
        self.thread = ThreadPoolExecutor(1, thread_name_prefix=f"redis-{store}")
        self.store = store

    def batch(self) -> OrderedWrites:
        return OrderedWrites(self)

    def close(self) -> None:
        self.thread.shutdown(wait=False, cancel_futures=True)
        self.client.close()


class OrderedWrites:
    """One batch's writes: in submission order, and none after one that failed."""

    def __init__(self, writer: OrderedWriter) -> None:
        self.writer = writer
        self.futures: list[asyncio.Future[Any]] = []
        self.abandoned = False

    def submit(self, args: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        self.futures.append(loop.run_in_executor(self.writer.thread, self._write, args))

    def _write(self, args: list[Any]) -> Any:
        if self.abandoned:
            raise WriteSkipped
        try:
            return retrying_blocking(
                lambda: self.writer.script(args=args), self.writer.store, lambda: self.abandoned
            )
        except BaseException:
            self.abandoned = True
            raise

    async def wait(self) -> None:
        """Until every write is done; raises the first failure (the batch is then retried)."""
        try:
            results = await asyncio.gather(*self.futures, return_exceptions=True)
        except BaseException:  # cancelled: the writes not yet started never will
            self.abandoned = True
            raise
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, WriteSkipped):
                raise result


# ---------------------------------------------------------------- wallet accounts

WALLET_HISTORY_TTL = 31 * 86_400
WALLET_INCOMING_MS = 86_400_000
# Logins are kept a week (at most LOGINS_MAX an account), though features look one hour back:
# a login arrives before its payment is screened, but not always by an hour (a replay, a lagging
# payments loop), and trimming to the newest login's hour dropped the takeover's login.
WALLET_LOGINS_MS = 7 * 86_400_000
WALLET_LOGINS_MAX = 500
WALLET_DEVICES_TTL = 180 * 86_400


class WalletState:
    """The wallet's accounts, payments and logins in Redis: one read pipeline and one write
    transaction per batch (agents/wallet.py)."""

    def __init__(self, client: aioredis.Redis, namespace: str, secret: bytes) -> None:
        self.client, self.keys, self.secret = client, Keys(namespace), secret

    def device(self, device_id: str | None) -> str:
        return keyed_hash(self.secret, "device", device_id) if device_id else ""

    async def load(self, payments: Sequence[tuple[Payment, int]]) -> list[WalletContext]:
        """Each (payment, event ms)'s context, in one round trip."""
        if not payments:
            return []
        keys = self.keys

        async def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for payment, at_ms in payments:
                account = payment.account_id or ""
                pipe.hgetall(keys.wallet_account(account))
                pipe.zrangebyscore(
                    keys.wallet_payments(account),
                    at_ms - WALLET_HISTORY_MS,
                    "+inf",
                    withscores=True,
                )
                pipe.zrangebyscore(
                    keys.wallet_logins(account), at_ms - HOUR, "+inf", withscores=True
                )
                pipe.zrange(keys.wallet_devices(account), 0, -1, withscores=True)
                if payment.kind == "TRANSFER":
                    other = payment.counterparty_account_id or ""
                    pipe.hgetall(keys.wallet_account(other))
                    pipe.zrangebyscore(
                        keys.wallet_incoming(other), at_ms - DAY, "+inf", withscores=True
                    )
                    pipe.zrangebyscore(
                        keys.wallet_payments(other), at_ms - SPLIT_BILL_MS, "+inf", withscores=True
                    )
            return await pipe.execute()

        raw = iter(await retrying(read, "wallet"))
        contexts = []
        for payment, _ in payments:
            ctx = WalletContext(
                payer=AccountFacts.from_hash(next(raw)),
                payer_history=[PastPayment.parse(m.decode(), s) for m, s in next(raw)],
                logins=[LoginSeen.parse(m.decode(), s) for m, s in next(raw)],
                devices={m.decode(): int(s) for m, s in next(raw)},
            )
            if payment.kind == "TRANSFER":
                ctx.counterparty = AccountFacts.from_hash(next(raw))
                ctx.counterparty_incoming = [Incoming.parse(m.decode(), s) for m, s in next(raw)]
                ctx.counterparty_history = [PastPayment.parse(m.decode(), s) for m, s in next(raw)]
            contexts.append(ctx)
        return contexts

    async def record_payments(self, payments: Sequence[tuple[Payment, int]]) -> None:
        """Screened payments into their accounts' histories (a retry adds nothing: members
        carry the payment id, and features skip the payment's own entry)."""
        if not payments:
            return
        keys = self.keys

        async def write() -> None:
            pipe = self.client.pipeline(transaction=True)
            for payment, at_ms in payments:
                account = payment.account_id or ""
                other = payment.counterparty_account_id or ""
                past = PastPayment(at_ms, payment.kind, payment.amount, other, payment.payment_id)
                key = keys.wallet_payments(account)
                pipe.zadd(key, {past.member(): at_ms}, nx=True)
                pipe.zremrangebyscore(key, "-inf", at_ms - WALLET_HISTORY_MS)
                pipe.expire(key, WALLET_HISTORY_TTL)
                if payment.kind == "TRANSFER":
                    got = Incoming(at_ms, account, payment.amount, payment.payment_id)
                    key = keys.wallet_incoming(other)
                    pipe.zadd(key, {got.member(): at_ms}, nx=True)
                    pipe.zremrangebyscore(key, "-inf", at_ms - WALLET_INCOMING_MS)
                    pipe.expire(key, WALLET_HISTORY_TTL)
            await pipe.execute()

        await retrying(write, "wallet")

    async def record_logins(self, logins: Sequence[Login]) -> None:
        """Logins into their accounts' recent logins; a successful one's device into the
        devices the account has used (scored by first use: ZADD LT keeps the earliest)."""
        if not logins:
            return
        keys = self.keys

        async def write() -> None:
            pipe = self.client.pipeline(transaction=False)
            for login in logins:
                at_ms = int(login.event_time.timestamp() * 1000)
                device = self.device(login.device_id)
                seen = LoginSeen(at_ms, device, login.success, login.login_id)
                key = keys.wallet_logins(login.account_id)
                pipe.zadd(key, {seen.member(): at_ms}, nx=True)
                pipe.zremrangebyscore(key, "-inf", at_ms - WALLET_LOGINS_MS)
                pipe.zremrangebyrank(key, 0, -(WALLET_LOGINS_MAX + 1))
                pipe.expire(key, WALLET_LOGINS_MS // 1000 + 86_400)
                if login.success and device:
                    key = keys.wallet_devices(login.account_id)
                    pipe.zadd(key, {device: at_ms}, lt=True)
                    pipe.expire(key, WALLET_DEVICES_TTL)
            await pipe.execute()

        await retrying(write, "wallet")

    async def record_accounts(self, changes: Sequence[tuple[str, dict[str, str | int]]]) -> None:
        """(account id, fields) from account events: identity, kyc, opened, status, limit."""
        if not changes:
            return

        async def write() -> None:
            pipe = self.client.pipeline(transaction=False)
            for account_id, fields in changes:
                pipe.hset(self.keys.wallet_account(account_id), mapping=fields)
            await pipe.execute()

        await retrying(write, "wallet")
