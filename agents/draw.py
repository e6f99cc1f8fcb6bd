"""The campaign's monthly draw, auditable: a commitment before the month closes, a draw after
it that anyone holding the ledger and the revealed seed can recompute.

    shinsa campaign commit --month M   a random 32-byte seed kept in Redis; SHA-256(seed)
                                       published on campaign-draws before M closes
    shinsa campaign draw --month M     after M closes: the ledger (campaign-tickets, read
                                       committed) → each purchase's newest record → live
                                       tickets per person → `draw` → campaign-winners + CSV;
                                       the seed, the ledger's digest and the winners' digest
                                       published on campaign-draws
    shinsa campaign verify --month M   the same from the ledger as it is now: the seed matches
                                       the commitment, the ledger matches its digest (a record
                                       added, changed or removed is caught), the winners match

The draw (pure, `draw`): weighted sampling without replacement by keys (Efraimidis-Spirakis):
each person gets u = a keyed hash of (seed, identity id) mapped to (0, 1) and the key
log(u) / tickets; the `winners` highest keys win, one win per person, a person's chance
growing with their tickets. It depends on the seed and the ledger only, not on reading order.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import redis

from agents.campaign import month_closes
from agents.state import Keys
from streams.clients import DeliveryTracker, make_producer, produce_one, read_topic
from streams.codec import SchemaRegistry
from streams.settings import Settings

TWO_64 = float(2**64)


@dataclass(frozen=True, slots=True)
class Entry:
    """A purchase's state in the ledger: its newest record."""

    identity_id: str
    day: str
    action: str  # ISSUED or REVOKED


def reduce_ledger(
    records: Iterable[Mapping[str, str]], campaign_id: str, month: str
) -> dict[str, Entry]:
    """The ledger as a table: purchase id → its newest record, for one campaign and month.
    Records of a purchase share its key, so they sit in one partition, in order."""
    table: dict[str, Entry] = {}
    for r in records:
        if r["campaign_id"] == campaign_id and r["month"] == month:
            table[r["purchase_id"]] = Entry(r["identity_id"], r["day"], r["action"])
    return table


def ledger_digest(table: Mapping[str, Entry]) -> str:
    """SHA-256 over the table's lines in purchase order: any change to the ledger changes it."""
    h = hashlib.sha256()
    for purchase in sorted(table):
        e = table[purchase]
        h.update(f"{purchase}\t{e.identity_id}\t{e.day}\t{e.action}\n".encode())
    return h.hexdigest()


def tickets_by_person(table: Mapping[str, Entry]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in table.values():
        if e.action == "ISSUED":
            counts[e.identity_id] = counts.get(e.identity_id, 0) + 1
    return counts


def commitment(seed: bytes) -> str:
    return hashlib.sha256(seed).hexdigest()


def uniforms(seed: bytes, people: list[str]) -> np.ndarray:
    """One number in (0, 1) per person from a keyed hash of the seed and the person's id."""
    draws = np.empty(len(people), dtype=np.float64)
    for i, person in enumerate(people):
        digest = hashlib.blake2b(person.encode(), key=seed, digest_size=8).digest()
        draws[i] = (int.from_bytes(digest, "big") + 0.5) / TWO_64
    return draws


def draw(tickets: Mapping[str, int], seed: bytes, winners: int) -> list[tuple[str, int]]:
    """The winners, best key first: (identity id, tickets), one win per person."""
    people = sorted(p for p, n in tickets.items() if n > 0)
    if not people:
        return []
    weights = np.array([tickets[p] for p in people], dtype=np.float64)
    keys = np.log(uniforms(seed, people)) / weights  # ≤ 0; higher is better
    take = min(winners, len(people))
    best = np.argpartition(-keys, take - 1)[:take] if take < len(people) else np.arange(len(people))
    order = best[np.lexsort((np.array(people, dtype=object)[best], -keys[best]))]
    return [(people[i], int(weights[i])) for i in order]


def winners_digest(winners: Iterable[tuple[str, int]]) -> str:
    h = hashlib.sha256()
    for rank, (person, tickets) in enumerate(winners, 1):
        h.update(f"{rank}\t{person}\t{tickets}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------- commit, draw, verify (I/O)
class DrawError(Exception):
    """A draw step refused; the message says why and what to do."""


def _draw_key(campaign_id: str, month: str) -> bytes:
    return f"{campaign_id}:{month}".encode()


def published_draw(settings: Settings, campaign_id: str, month: str) -> dict[str, Any]:
    """The newest record of campaign-draws for the month ({} if none)."""
    found: dict[str, Any] = {}
    key = _draw_key(campaign_id, month)
    for msg in read_topic(settings, settings.topic("campaign-draws")):
        if msg.key() == key and msg.value() is not None:
            found = orjson.loads(msg.value())
    return found


def _publish(settings: Settings, records: Sequence[tuple[str, bytes, bytes]]) -> None:
    producer = make_producer(settings)
    tracker = DeliveryTracker()
    for topic, key, value in records:
        produce_one(producer, settings.topic(topic), key, value, tracker)
    if producer.flush(60) or tracker.failed:
        raise DrawError(f"publishing failed: {tracker.failed or 'timed out'}")


def _seed_key(settings: Settings, campaign_id: str, month: str) -> str:
    return Keys(settings.identity_namespace).campaign_seed(campaign_id, month)


def commit_month(settings: Settings, campaign_id: str, month: str, now: datetime) -> dict[str, Any]:
    """Before the month closes: a secret seed (kept in Redis until the draw reveals it) and its
    SHA-256 published on campaign-draws. Refused after the close or when already committed."""
    if now >= month_closes(month):
        raise DrawError(f"{month} has closed: a commitment must be published before it closes")
    earlier = published_draw(settings, campaign_id, month)
    if earlier:
        raise DrawError(f"{campaign_id} {month} is already committed: {earlier['commitment']}")
    seed = secrets.token_bytes(32)
    client = redis.Redis.from_url(settings.redis_url)
    if not client.set(_seed_key(settings, campaign_id, month), seed, nx=True):
        seed = client.get(_seed_key(settings, campaign_id, month))  # a commit that did not publish
    record = {
        "campaign_id": campaign_id,
        "month": month,
        "commitment": commitment(seed),
        "committed_at": now.isoformat(),
    }
    _publish(settings, [("campaign-draws", _draw_key(campaign_id, month), orjson.dumps(record))])
    return record


def read_ledger(
    settings: Settings, registry: SchemaRegistry, on_record: Any = None
) -> list[dict[str, Any]]:
    """Every record of campaign-tickets, read committed, in partition order."""
    out = []
    for msg in read_topic(settings, settings.topic("campaign-tickets")):
        if msg.value() is not None:
            out.append(registry.decode("CampaignTicket", msg.value()))
            if on_record is not None:
                on_record()
    return out


def draw_month(
    settings: Settings,
    registry: SchemaRegistry,
    campaign_id: str,
    month: str,
    winners: int,
    prize_yen: int,
    now: datetime,
    ledger: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """After the month closes: the winners from the ledger and the committed seed, published
    on campaign-winners with the seed and both digests on campaign-draws."""
    if now < month_closes(month):
        raise DrawError(f"{month} has not closed yet (it closes {month_closes(month)} UTC)")
    committed = published_draw(settings, campaign_id, month)
    if not committed:
        raise DrawError(f"no commitment for {campaign_id} {month}: `shinsa campaign commit` first")
    if "seed" in committed:
        raise DrawError(f"{campaign_id} {month} was drawn at {committed['drawn_at']}")
    seed = redis.Redis.from_url(settings.redis_url).get(_seed_key(settings, campaign_id, month))
    if seed is None or commitment(seed) != committed["commitment"]:
        raise DrawError("the seed kept in Redis does not match the published commitment")
    table = reduce_ledger(ledger or read_ledger(settings, registry), campaign_id, month)
    tickets = tickets_by_person(table)
    chosen = draw(tickets, seed, winners)
    drawn_at = now
    records = [
        (
            "campaign-winners",
            f"{campaign_id}:{month}:{person}".encode(),
            registry.encode(
                "CampaignWinner",
                {
                    "campaign_id": campaign_id,
                    "month": month,
                    "rank": rank,
                    "identity_id": person,
                    "tickets": count,
                    "prize_yen": prize_yen,
                    "drawn_at": drawn_at,
                },
            ),
        )
        for rank, (person, count) in enumerate(chosen, 1)
    ]
    result = committed | {
        "seed": seed.hex(),
        "ledger_digest": ledger_digest(table),
        "winners_digest": winners_digest(chosen),
        "participants": len(tickets),
        "tickets": sum(tickets.values()),
        "winners": len(chosen),
        "winners_wanted": winners,
        "drawn_at": drawn_at.isoformat(),
    }
    records.append(("campaign-draws", _draw_key(campaign_id, month), orjson.dumps(result)))
    _publish(settings, records)
    result["chosen"] = chosen
    return result


def verify_month(
    settings: Settings,
    registry: SchemaRegistry,
    campaign_id: str,
    month: str,
    ledger: list[dict[str, Any]] | None = None,
) -> list[tuple[str, bool, str]]:
    """Recompute a published draw from the ledger as it is now and the revealed seed:
    (check, passed, detail) for the commitment, the ledger, the winners."""
    published = published_draw(settings, campaign_id, month)
    if "seed" not in published:
        raise DrawError(f"{campaign_id} {month} has not been drawn: nothing to verify")
    seed = bytes.fromhex(published["seed"])
    table = reduce_ledger(ledger or read_ledger(settings, registry), campaign_id, month)
    chosen = draw(tickets_by_person(table), seed, published["winners_wanted"])
    digest = ledger_digest(table)
    on_topic = [
        registry.decode("CampaignWinner", m.value())
        for m in read_topic(settings, settings.topic("campaign-winners"))
        if m.value() is not None
    ]
    listed = sorted(
        (w["rank"], w["identity_id"], w["tickets"])
        for w in on_topic
        if w["campaign_id"] == campaign_id and w["month"] == month
    )
    expected = [(rank, p, n) for rank, (p, n) in enumerate(chosen, 1)]
    return [
        (
            "seed matches the commitment",
            commitment(seed) == published["commitment"],
            published["commitment"][:16] + "…",
        ),
        (
            "ledger matches the drawn one",
            digest == published["ledger_digest"],
            f"{len(table):,} purchases, digest {digest[:16]}…",
        ),
        (
            "winners recomputed",
            winners_digest(chosen) == published["winners_digest"],
            f"{len(chosen):,} winners",
        ),
        ("winners on campaign-winners", listed == expected, f"{len(listed):,} listed"),
    ]
