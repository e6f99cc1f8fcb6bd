"""The review queue: orders decided REVIEW that wait for a reviewer, and the reviewer's verdict.

A verdict is an Outcome with source REVIEWER on the outcomes topic (FRAUD_CONFIRMED or
LEGIT_CONFIRMED): the learner learns from it (agents/learn.py) and the exposure stage opens or
writes off a reviewed deferred order (agents/exposure.py). So the queue needs no state of its
own: it is the REVIEW decisions minus the orders with a verdict.

A reviewer needs to know who bought, not to read it: the buyer is shown masked (name initial,
the phone's last 4 digits, the email's first character and domain) and nothing else of the
order's PII leaves this module. Orders are read only where they are: the partition their key
maps to, from the Kafka time they were ingested (which every decision records), so listing the
queue does not read the whole orders topic.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.markup import escape
from rich.table import Table

from streams.codec import CodecError, SchemaRegistry
from streams.errors import UserError
from streams.settings import Settings

REVIEWER = "REVIEWER"
REVIEW = "REVIEW"
VERDICT_KINDS = {"fraud": "FRAUD_CONFIRMED", "legit": "LEGIT_CONFIRMED"}
MASK = "***"
MIN_PHONE_DIGITS = 8  # shorter numbers would be mostly revealed by their last 4 digits
INGEST_MARGIN_MS = 60_000  # decisions round times to the ms; any slack is cheap
CLOCK_MARGIN_MS = 2 * 3600 * 1000  # intake accepts event times up to 1 h ahead of its clock


# ---------------------------------------------------------------- masking (pure)


def mask_name(name: str | None) -> str | None:
    """The initial only: enough to tell 山… from 佐… on a call, not enough to read the name."""
    text = unicodedata.normalize("NFKC", name or "").strip()  # ﾀﾞ → ダ, full-width space → " "
    if not text:
        return None
    return f"{text[0].upper()}{MASK}"


def mask_phone(phone: str | None) -> str | None:
    """The last 4 digits, whatever the format (hyphens, brackets, +81, full-width digits)."""
    text = unicodedata.normalize("NFKC", phone or "")
    digits = "".join(c for c in text if c in "0123456789")
    if not digits:
        return None
    if len(digits) < MIN_PHONE_DIGITS:
        return MASK
    return f"{MASK}-{digits[-4:]}"


def mask_email(email: str | None) -> str | None:
    """The first character and the domain (the domain tells a carrier from a free mailbox)."""
    text = unicodedata.normalize("NFKC", email or "").strip()
    if not text:
        return None
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        return MASK
    return f"{local[0]}{MASK}@{domain.lower()}"


def masked_buyer(order: Mapping[str, Any] | None) -> dict[str, str | None]:
    """The buyer of an Order datum, masked; all None when the order was not found."""
    buyer = (order or {}).get("buyer") or {}
    return {
        "buyer": mask_name(buyer.get("name")),
        "phone": mask_phone(buyer.get("phone")),
        "email": mask_email(buyer.get("email")),
    }


# ---------------------------------------------------------------- the queue (pure)


def newest_decisions(decisions: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """One decision per order: the newest (a re-sent order may be decided again)."""
    newest: dict[str, Mapping[str, Any]] = {}
    for d in decisions:
        seen = newest.get(d["order_id"])
        if seen is None or d["decided_at"] >= seen["decided_at"]:
            newest[d["order_id"]] = d
    return newest


def reviewer_verdicts(outcomes: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Order id → its newest reviewer verdict (by event time); other outcomes are not verdicts."""
    verdicts: dict[str, Mapping[str, Any]] = {}
    for o in outcomes:
        if o["source"] != REVIEWER or o["kind"] not in VERDICT_KINDS.values():
            continue
        seen = verdicts.get(o["order_id"])
        if seen is None or o["event_time"] >= seen["event_time"]:
            verdicts[o["order_id"]] = o
    return verdicts


def awaiting_review(
    decisions: Iterable[Mapping[str, Any]], verdicts: Container[str]
) -> list[Mapping[str, Any]]:
    """Orders whose newest decision is REVIEW and that have no verdict, oldest first."""
    waiting = [
        d
        for d in newest_decisions(decisions).values()
        if d["decision"] == REVIEW and d["order_id"] not in verdicts
    ]
    return sorted(waiting, key=lambda d: (d["decided_at"], d["order_id"]))


def order_ingest_ms(decision: Mapping[str, Any]) -> int:
    """The Kafka timestamp of the order message: the decision's time minus its ingest latency."""
    decided_ms = decision["decided_at"].timestamp() * 1000
    return int(decided_ms - decision["latency_ingest_ms"])


def review_row(decision: Mapping[str, Any], order: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a reviewer sees of one order (no unmasked PII)."""
    return {
        "order_id": decision["order_id"],
        "decided_at": decision["decided_at"],
        "merchant_id": decision["merchant_id"],
        "merchant_category": decision["merchant_category"],
        "amount": decision["amount"],
        "score": decision["score"],
        "reasons": list(decision["reasons"]),
        "identity_id": decision["identity_id"],
        "order_found": order is not None,
        **masked_buyer(order),
    }


def row_json(row: Mapping[str, Any]) -> str:
    return orjson.dumps(row).decode()


def review_table(rows: list[dict[str, Any]], total: int) -> Table:
    shown = f", the oldest {len(rows)} shown" if len(rows) < total else ""
    table = Table(title=f"{total} orders awaiting review{shown}")
    table.add_column("order", no_wrap=True)
    for name in ("decided at (UTC)", "merchant", "amount (¥)", "score", "reasons", "identity"):
        table.add_column(name, justify="right" if name in ("amount (¥)", "score") else "left")
    table.add_column("buyer (masked)", no_wrap=True)
    for r in rows:
        buyer = [r["buyer"], r["phone"], r["email"]]
        cells = [
            r["order_id"],
            r["decided_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            f"{r['merchant_id']} {r['merchant_category'] or ''}".strip(),
            f"{r['amount']:,}",
            f"{r['score']:.2f}",
            "\n".join(r["reasons"]),
            r["identity_id"] or "—",
            "\n".join(b for b in buyer if b) if r["order_found"] else "(order not on the topic)",
        ]
        table.add_row(*map(escape, cells))  # ids and buyer details are data, not markup
    return table


# ---------------------------------------------------------------- verdicts (pure)


def check_resolvable(order_id: str, snapshot: Mapping[str, Any] | None, force: bool) -> str:
    """The order's decision if a verdict may be published for it, else a UserError saying why."""
    if snapshot is None:
        raise UserError(
            f"order {order_id!r} is unknown: it has no feature snapshot in Redis (it was never "
            "screened here, or its snapshot expired after SHINSA_SNAPSHOT_TTL_DAYS days)"
        )
    decision = snapshot.get("d")
    if decision != REVIEW and not force:
        said = f"decided {decision}" if decision else "of an unrecorded decision"
        raise UserError(
            f"order {order_id!r} was {said}, not REVIEW: a verdict would relabel an automatic "
            "decision for the model and the exposure table; pass --force to publish it anyway"
        )
    return decision or "unknown"


def verdict_outcome(order_id: str, verdict: str, note: str | None, now: datetime) -> dict[str, Any]:
    """The Outcome (natural JSON) a reviewer's verdict publishes."""
    if verdict not in VERDICT_KINDS:
        raise UserError(f"--verdict must be one of {', '.join(VERDICT_KINDS)}, not {verdict!r}")
    return {
        "order_id": order_id,
        "event_time": int(now.timestamp() * 1000),
        "kind": VERDICT_KINDS[verdict],
        "source": REVIEWER,
        "note": note,
    }


# ---------------------------------------------------------------- reading keys where they are


def key_partition(key: bytes, partitions: int) -> int:
    """The partition our producers (murmur2, like Java clients and aiokafka) put `key` on."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def start_offsets(
    settings: Settings, topic: str, ends: Mapping[int, int], since: Mapping[int, int]
) -> dict[int, int]:
    """Per partition, the first offset at or after the Kafka time `since[p]` (ms); the end
    offset for partitions not asked for, so nothing is read there."""
    from confluent_kafka import TopicPartition

    from streams.clients import consumer

    start = dict(ends)
    if not since:
        return start
    c = consumer(settings)
    try:
        asked = [TopicPartition(topic, p, max(0, ms)) for p, ms in since.items()]
        for tp in c.offsets_for_times(asked, timeout=10):
            start[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition]
    finally:
        c.close()
    return start


def read_keys(settings: Settings, topic: str, since: Mapping[bytes, int]) -> Iterator[Any]:
    """Messages with one of the keys of `since`, each written at or after its Kafka time (ms;
    0: from the beginning), reading only the partitions those keys map to."""
    from streams.clients import end_offsets, read_topic

    ends = end_offsets(settings, topic)
    earliest: dict[int, int] = {}
    for key, ms in since.items():
        p = key_partition(key, len(ends))
        earliest[p] = min(earliest.get(p, ms), ms)
    start = start_offsets(settings, topic, ends, earliest)
    with contextlib.closing(read_topic(settings, topic, start=start)) as messages:
        for msg in messages:
            if msg.key() in since:
                yield msg


def decode_all(registry: SchemaRegistry, name: str, messages: Iterable[Any]) -> Iterator[dict]:
    """Decoded values; undecodable ones are skipped (the worker dead-letters them)."""
    for msg in messages:
        if msg.value() is None:
            continue
        with contextlib.suppress(CodecError):
            yield registry.decode(name, msg.value())


# ---------------------------------------------------------------- the commands' work


def find_orders(
    settings: Settings, registry: SchemaRegistry, ingested: Mapping[str, int]
) -> dict[str, dict[str, Any]]:
    """Order id → Order datum, for orders that reached Kafka at `ingested[id]` (ms)."""
    since = {oid.encode(): ms - INGEST_MARGIN_MS for oid, ms in ingested.items()}
    found: dict[str, dict[str, Any]] = {}
    if not since:
        return found
    messages = read_keys(settings, settings.topic("orders"), since)
    with contextlib.closing(messages):
        for order in decode_all(registry, "Order", messages):
            if order["order_id"] in ingested:
                found.setdefault(order["order_id"], order)
            if len(found) == len(ingested):
                break
    return found


def review_queue(settings: Settings, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The oldest `limit` orders awaiting review as rows, and how many wait in all."""
    from streams.clients import read_topic

    registry = SchemaRegistry(settings.schema_dir)
    decisions = decode_all(registry, "Decision", read_topic(settings, settings.topic("decisions")))
    outcomes = decode_all(registry, "Outcome", read_topic(settings, settings.topic("outcomes")))
    waiting = awaiting_review(decisions, reviewer_verdicts(outcomes))
    shown = waiting[:limit]
    orders = find_orders(settings, registry, {d["order_id"]: order_ingest_ms(d) for d in shown})
    return [review_row(d, orders.get(d["order_id"])) for d in shown], len(waiting)


def load_snapshot(settings: Settings, order_id: str) -> dict[str, Any] | None:
    """The order's feature snapshot (agents/state.py), as stored: written once it was screened."""
    import redis

    from agents.state import Keys

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=5)
    try:
        raw = client.get(Keys(settings.identity_namespace).snapshot(order_id))
    finally:
        client.close()
    return orjson.loads(raw) if raw is not None else None


@dataclass(frozen=True)
class Resolution:
    outcome: dict[str, Any]
    decision: str  # what the order was decided
    topic: str
    partition: int
    offset: int
    previous: Mapping[str, Any] | None  # the verdict this one corrects, if any


def publish(settings: Settings, registry: SchemaRegistry, outcome: dict[str, Any]) -> Any:
    """Send one Outcome (Avro, keyed by order id) and wait until Kafka acknowledges it."""
    from streams.clients import DeliveryTracker, make_producer, prepare, produce_one

    prepared = prepare(registry, "outcomes", outcome)
    tracker = DeliveryTracker()
    delivered: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        tracker(err, msg)
        delivered.append(msg)

    producer = make_producer(settings)
    produce_one(producer, settings.topic("outcomes"), prepared.key, prepared.value, report)
    if producer.flush(30) or tracker.failed or not delivered:
        raise UserError(
            f"Kafka did not acknowledge the verdict ({'; '.join(tracker.failed) or 'timed out'}): "
            "if the order is still in `shinsa review list`, resolve it again (a repeated verdict "
            "is learned once)"
        )
    return delivered[0]


def resolve(
    settings: Settings, order_id: str, verdict: str, note: str | None, *, force: bool = False
) -> Resolution:
    """Check the order awaits a verdict, then publish the reviewer's outcome for it."""
    outcome = verdict_outcome(order_id, verdict, note, datetime.now(UTC))
    snapshot = load_snapshot(settings, order_id)
    decision = check_resolvable(order_id, snapshot, force)
    registry = SchemaRegistry(settings.schema_dir)
    # a verdict follows its decision, which follows the order's event time (give or take 1 h)
    since = {order_id.encode(): int((snapshot or {}).get("t", 0)) - CLOCK_MARGIN_MS}
    earlier = decode_all(
        registry, "Outcome", read_keys(settings, settings.topic("outcomes"), since)
    )
    previous = reviewer_verdicts(o for o in earlier if o["order_id"] == order_id).get(order_id)
    msg = publish(settings, registry, outcome)
    return Resolution(outcome, decision, msg.topic(), msg.partition(), msg.offset(), previous)
