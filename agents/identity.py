"""Identity resolution (名寄せ): link every buyer to one resolved person, shared through Redis.

Pure part: `person_keys` turns a buyer into keyed hashes (HMAC-SHA256 with SHINSA_HASH_KEY) of
match keys built from normalized fields, so no PII is stored in Redis or emitted. The keys,
and why each is safe to merge on:

- `mobile`: mobile phone (E.164). A mobile line is personal; landlines are shared by
  families and business numbers (0120, 0570 …) by everyone, so neither merges alone.
- `email`: normalized address (gmail dots and +tags folded). A mailbox is personal.
- `name_birth`, `kana_birth`: name or kana reading + birth date. Namesakes rarely share a
  birthday; the kana key catches a name written in kana instead of kanji.
- `name_address`, `kana_address`: name or reading + postal code + street (not the building,
  which people drop or split differently). Family members at one address differ by name;
  namesakes differ by address.
- `landline_name`: fixed-line phone + kana reading: a shared landline plus the person's name.

I/O part: `IdentityGraph` runs `identity_graph.lua` (union-find with atomic merges) on a batch.
A key seen with more than `fanout_limit` distinct names stops merging (see the script).
`resolve_overlapped` (the intake agent's batch, and the benchmark's) cuts a batch into chunks
and computes the keys of the next chunk while Redis runs the script on the current one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

import orjson
from redis import asyncio as aioredis

from agents.normalize import (
    normalize_address,
    normalize_birth_date,
    normalize_email,
    normalize_kana,
    normalize_name,
    normalize_phone,
)
from agents.state import ACCOUNTS_LUA, keyed_hash, lua, retrying
from streams.records import Buyer

log = logging.getLogger(__name__)

KATAKANA_ONLY = re.compile("[\u30a1-\u30fa\u30fc]+")
# a merge moves the person's account and history (accounts.lua) and audience rows
# (segments.lua) too, in the same script
SCRIPT = ACCOUNTS_LUA + lua("segments.lua") + lua("identity_graph.lua")
# ARGV: the parent hash, then identity ids; returns each id's root (read only)
ROOTS_SCRIPT = (
    lua("identity_root.lua")
    + """
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = identity_root(ARGV[1], ARGV[i])
end
return out
"""
)
# Records per script call in resolve_overlapped. The first chunk's keys and the last chunk's
# script run alone, so chunks are small; a call's fixed cost (~0.35 ms) keeps them from being
# tiny. A small batch is still cut in two, down to MIN_CHUNK records a chunk.
CHUNK_SIZE = 100
MIN_CHUNK = 25
YIELD_EVERY_S = 0.00005  # while preparing a chunk, give the event loop a turn (~1 µs) this often

T = TypeVar("T")
C = TypeVar("C")


@dataclass(slots=True, frozen=True)
class PersonKeys:
    """What the graph needs of one buyer: hashes only."""

    keys: tuple[str, ...]
    name: str  # hash of the reading (or name): counts distinct names per key
    attributes: dict[str, str]  # names / addresses / phones / emails → hash of normalized value
    spellings: tuple[str, ...]  # hashes of the raw spellings: "a new variation" of a known person


@dataclass(slots=True, frozen=True)
class Identity:
    """The resolved person behind an order, as features (no PII)."""

    identity_id: str
    new: bool
    merged: int
    first_seen_ms: int
    orders: int
    names: int
    addresses: int
    phones: int
    emails: int
    new_variation: bool
    saturated_keys: int


@lru_cache(maxsize=65536)  # returning buyers cost a lookup instead of ~70 µs
def person_keys(buyer: Buyer, secret: bytes) -> PersonKeys:
    """Match keys and attribute hashes of a buyer, from its normalized fields."""
    name = normalize_name(buyer.name)
    kana = normalize_kana(buyer.name_kana) if buyer.name_kana else ""
    if not kana and KATAKANA_ONLY.fullmatch(name):
        kana = name  # a name typed in kana is its own reading
    birth = normalize_birth_date(buyer.birth_date) if buyer.birth_date else None
    line = normalize_phone(buyer.phone) if buyer.phone else None
    phone = line.e164 if line is not None else None
    email = normalize_email(buyer.email).address if buyer.email else None
    a = buyer.address
    addr = normalize_address(a.postal_code, a.prefecture, a.city, a.street, a.building)
    # address keys leave the building out: it is the part people drop or split differently
    street = f"{addr.postal_code}|{addr.street}" if addr.postal_code and addr.street else ""
    mobile = phone if line is not None and line.kind == "mobile" else None
    raw = _match_keys(name, kana, birth, mobile, email, street)
    if phone and line is not None and line.kind == "fixed" and kana:
        raw.append(("landline_name", f"{phone}|{kana}"))
    h = keyed_hash
    attributes = {
        "names": h(secret, "n", kana or name),
        "addresses": h(secret, "a", f"{addr.postal_code}|{addr.street}|{addr.building or ''}"),
        "phones": h(secret, "p", phone) if phone else "",
        "emails": h(secret, "e", email) if email else "",
    }
    spellings = tuple(
        [
            h(secret, "s", f"{field}|{value.strip()}")
            for field, value in (
                ("name", buyer.name),
                ("phone", buyer.phone),
                ("email", buyer.email),
                ("street", a.street),
            )
            if value
        ]
    )
    keys = tuple([h(secret, k, v) for k, v in raw])
    return PersonKeys(keys, attributes["names"], attributes, spellings)


def _match_keys(
    name: str, kana: str, birth: str | None, mobile: str | None, email: str | None, street: str
) -> list[tuple[str, str]]:
    """(kind, value) of the keys that may merge on their own (see the module docstring)."""
    raw: list[tuple[str, str]] = []
    if mobile:
        raw.append(("mobile", mobile))
    if email:
        raw.append(("email", email))
    if birth:
        raw.append(("name_birth", f"{name}|{birth}"))
        if kana:
            raw.append(("kana_birth", f"{kana}|{birth}"))
    if street:
        raw.append(("name_address", f"{name}|{street}"))
        if kana:
            raw.append(("kana_address", f"{kana}|{street}"))
    return raw


class IdentityGraph:
    """The shared identity graph in Redis, resolved a batch per script call."""

    def __init__(self, client: aioredis.Redis, namespace: str, fanout_limit: int = 3) -> None:
        self.client = client
        self.namespace = namespace
        self.fanout_limit = fanout_limit
        self._script = client.register_script(SCRIPT)
        self._roots = client.register_script(ROOTS_SCRIPT)

    async def resolve(
        self,
        people: list[PersonKeys],
        times_ms: list[int],
        now_ms: int,
        order_ids: list[str] | None = None,
    ) -> list[Identity]:
        """Resolve a batch atomically; waits and retries while Redis is unreachable.

        With `order_ids`, an order resolved before (a redelivery after a crash) is reported
        without being counted twice.
        """
        if not people:
            return []
        refs = order_ids or [""] * len(people)
        batch = [
            {
                "k": list(p.keys),
                "n": p.name,
                "t": t,
                "a": p.attributes,
                "s": list(p.spellings),
                "o": o,
            }
            for p, t, o in zip(people, times_ms, refs, strict=True)
        ]
        payload = orjson.dumps(batch)
        args = [self.namespace, self.fanout_limit, now_ms, payload]
        raw = await retrying(lambda: self._script(args=args), "identity")
        results = orjson.loads(raw) or []
        return [to_identity(r) for r in results]

    async def roots(self, identity_ids: Sequence[str]) -> list[str]:
        """The identities these ids belong to now (merges absorb ids), in one call."""
        if not identity_ids:
            return []
        args = [f"{self.namespace}:parent", *identity_ids]
        found = await retrying(lambda: self._roots(args=args), "identity")
        return [r.decode() if isinstance(r, bytes) else str(r) for r in found]

    async def root(self, identity_id: str) -> str:
        """The identity an id now belongs to (ids absorbed by a merge point to the survivor)."""
        root = identity_id
        while (parent := await self.client.hget(f"{self.namespace}:parent", root)) is not None:
            root = parent.decode()
        return root

    async def summary(self, identity_id: str) -> dict[str, Any] | None:
        """Counts, first/last seen and merges of an identity (following merges), no PII."""
        root = await self.root(identity_id)
        data = await self.client.hgetall(f"{self.namespace}:id:{root}")
        if not data:
            return None
        out: dict[str, Any] = {"identity_id": root, "requested": identity_id}
        out.update({k.decode(): int(v) for k, v in data.items()})
        for attr in ("names", "addresses", "phones", "emails"):
            out[attr] = await self.client.scard(f"{self.namespace}:id:{root}:{attr}")
        return out

    async def merges(self, limit: int = 20) -> list[dict[str, str]]:
        """The newest merges (winner, loser, when), newest first."""
        entries = await self.client.xrevrange(f"{self.namespace}:merges", count=limit)
        return [
            {"event": eid.decode()} | {k.decode(): v.decode() for k, v in fields.items()}
            for eid, fields in entries
        ]

    async def stats(self) -> dict[str, int]:
        data = await self.client.hgetall(f"{self.namespace}:stats")
        return {k.decode(): int(v) for k, v in data.items()}


def to_identity(r: dict[str, Any]) -> Identity:
    return Identity(
        identity_id=r["id"],
        new=bool(r["new"]),
        merged=int(r["merged"]),
        first_seen_ms=int(r["first"]),
        orders=int(r["orders"]),
        names=int(r["names"]),
        addresses=int(r["addresses"]),
        phones=int(r["phones"]),
        emails=int(r["emails"]),
        new_variation=bool(r["variation"]),
        saturated_keys=int(r["saturated"]),
    )


@dataclass(slots=True)  # not frozen: that costs ~0.8 µs a record
class Lookup(Generic[C]):
    """One record to resolve, and what its caller needs back with the identity."""

    keys: PersonKeys
    time_ms: int
    order_id: str  # "" when there is none (no redelivery dedupe)
    context: C


@dataclass(slots=True)
class Resolved(Generic[C]):
    """A batch resolved by `resolve_overlapped`, in order."""

    found: list[tuple[C, Identity]]
    unresolved: list[C]  # not resolved because a call failed (a bug: an outage waits instead)
    error: Exception | None = None


async def _prepare_chunk(
    items: Sequence[T], prepare: Callable[[T], Lookup[C] | None]
) -> list[Lookup[C]]:
    """`prepare` each item, handing the event loop a turn every YIELD_EVERY_S.

    Those turns let the call in flight go out and its answer come in while this computes
    (a call needs a few turns to be sent: each one late is Redis idle).
    """
    lookups: list[Lookup[C]] = []
    turn = time.perf_counter() + YIELD_EVERY_S
    for item in items:
        lookup = prepare(item)
        if lookup is not None:
            lookups.append(lookup)
        if time.perf_counter() >= turn:
            await asyncio.sleep(0)
            turn = time.perf_counter() + YIELD_EVERY_S
    return lookups


def _send(graph: IdentityGraph, lookups: list[Lookup[C]], now_ms: int) -> asyncio.Task[Any]:
    people = [x.keys for x in lookups]
    times = [x.time_ms for x in lookups]
    order_ids = [x.order_id for x in lookups]
    return asyncio.ensure_future(graph.resolve(people, times, now_ms, order_ids))


def _chunk_size(n: int) -> int:
    """CHUNK_SIZE, or half a small batch (two chunks overlap), but at least MIN_CHUNK."""
    return min(CHUNK_SIZE, max(MIN_CHUNK, -(-n // 2)))


async def resolve_overlapped(
    graph: IdentityGraph,
    items: Sequence[T],
    prepare: Callable[[T], Lookup[C] | None],
    now_ms: int,
    chunk_size: int | None = None,
    keep: Callable[[list[Lookup[C]]], Awaitable[list[Lookup[C]]]] | None = None,
    on_found: Callable[[list[tuple[C, Identity]]], None] | None = None,
) -> Resolved[C]:
    """Resolve items a chunk per script call, preparing chunk k+1 while Redis runs chunk k.

    Python (`prepare`: keys, ~80 µs a record cold) and Redis (the script, ~60–100 µs) run on
    different cores, so overlapping them nearly halves a batch. The calls stay sequential and
    in order, and all have answered when this returns. `prepare` returns None to skip an item
    (rejected); `keep`, if given, sees each prepared chunk before it is sent and returns the
    lookups still to resolve (the hot path answers orders decided before instead);
    `on_found`, if given, sees each chunk's records as soon as they are resolved, in order (the
    hot path starts loading their state then, while the next chunk is resolved).
    After a failed call (a bug; an outage waits and retries inside) no further call is made:
    the rest is prepared and reported unresolved, with the error.
    """
    out: Resolved[C] = Resolved([], [])
    in_flight: asyncio.Task[list[Identity]] | None = None
    sent: list[Lookup[C]] = []
    size = chunk_size or _chunk_size(len(items))
    try:
        for start in range(0, len(items), size):
            lookups = await _prepare_chunk(items[start : start + size], prepare)
            if keep is not None and lookups:
                lookups = await keep(lookups)
            if in_flight is not None:
                await _collect(out, in_flight, sent, on_found)
            in_flight, sent = None, lookups
            if out.error is None and lookups:
                in_flight = _send(graph, lookups, now_ms)
            else:
                out.unresolved += [x.context for x in lookups]
        if in_flight is not None:
            await _collect(out, in_flight, sent, on_found)
    finally:
        if in_flight is not None and not in_flight.done():
            in_flight.cancel()
    return out


async def _collect(
    out: Resolved[C],
    in_flight: asyncio.Task[list[Identity]],
    sent: list[Lookup[C]],
    on_found: Callable[[list[tuple[C, Identity]]], None] | None,
) -> None:
    """Wait for the call in flight; its records are found, or unresolved if it failed."""
    try:
        identities = await in_flight
    except Exception as exc:  # not an outage (that waits inside resolve): a bug
        log.exception("identity resolution failed for a chunk of %d records", len(sent))
        out.error = exc
        out.unresolved += [x.context for x in sent]
        return
    found = list(zip((x.context for x in sent), identities, strict=True))
    out.found += found
    if on_found is not None and found:
        on_found(found)


async def resolve_buyers(
    client: aioredis.Redis,
    namespace: str,
    buyers: list[Buyer],
    secret: bytes,
    *,
    fanout_limit: int = 3,
    batch: int = 1000,
    on_batch: Any = None,
) -> list[str]:
    """Resolve buyers in order, a batch per script call; returns each one's final identity id.

    Final: an id absorbed by a later merge is reported as the identity it was merged into.
    """
    graph = IdentityGraph(client, namespace, fanout_limit)
    ids: list[str] = []
    for start in range(0, len(buyers), batch):
        chunk = [person_keys(b, secret) for b in buyers[start : start + batch]]
        found = await graph.resolve(chunk, [0] * len(chunk), 0)
        ids.extend(i.identity_id for i in found)
        if on_batch is not None:
            on_batch(len(chunk))
    roots: dict[str, str] = {}
    for identity_id in set(ids):
        roots[identity_id] = await graph.root(identity_id)
    return [roots[i] for i in ids]


async def drop_namespace(client: aioredis.Redis, namespace: str) -> int:
    """Delete every key of a namespace (a scratch graph); returns how many."""
    keys = [k async for k in client.scan_iter(f"{namespace}:*", count=1000)]
    for start in range(0, len(keys), 1000):
        await client.delete(*keys[start : start + 1000])
    return len(keys)
