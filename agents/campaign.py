"""お月玉 campaign (the card seed): lottery tickets earned in the stream, in a worker role of
their own so that a campaign surge never delays screening.

    campaigns (compacted; `shinsa campaign apply FILE`) ──> CampaignBook, re-read every batch
    logins, decisions, outcomes ──> the "campaign" transactional loop (its own consumer group;
      `shinsa worker --role campaign`, never the screening worker):
        a successful login → its account's identity (KYC)        ─┐
        an approved card purchase ≥ the minimum → its identity   ─┤ campaign.lua, one call a
        FRAUD_CONFIRMED, CHARGEBACK, CANCELLED → its purchase    ─┘ batch (atomic)
      → campaign-tickets (the ledger: ISSUED / REVOKED, keyed by purchase id), produced with the
        input offsets in one Kafka transaction
    agents/draw.py: the monthly draw (commit, draw, verify)

Rules (the seed's, fixed): a member who logged in successfully at least once in a JST calendar
month earns one ticket per approved card purchase of at least `min_amount_yen` (tax included)
that month, at most `daily_cap` a JST day. A purchase made before the month's first login earns
when the login arrives, capped by its own day. A purchase later confirmed fraud, charged back
or cancelled loses its ticket; its daily slot stays used (a slot freed by a revocation is not
refilled, so buying again after a chargeback earns nothing more that day). Each purchase is
counted once, however often it is delivered or sent, even under an identity merged since.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis import asyncio as aioredis

from agents.identity import IdentityGraph
from agents.policy import load_yaml_document, validation_problems
from agents.segments import JST, jst_date
from agents.state import Keys, lua, redis_client, retrying
from streams.clients import consumer
from streams.codec import SchemaRegistry
from streams.delivery import Outgoing
from streams.metrics import CAMPAIGN_EVENTS, CAMPAIGN_INFO, CAMPAIGN_MONTH, CAMPAIGN_TICKETS
from streams.settings import Settings
from streams.txloop import Received, Stopwatch, TransactionalLoop

log = logging.getLogger(__name__)

METHODS = ("DEFERRED", "CARD", "WALLET", "BANK_TRANSFER", "CONVENIENCE_STORE", "CARRIER_BILLING")
REVOKING = frozenset({"FRAUD_CONFIRMED", "CHARGEBACK", "CANCELLED"})
RECORDS = {"logins": "Login", "decisions": "Decision", "outcomes": "Outcome"}
MONTH_EVERY_SECONDS = 5.0  # how often the month figures are read from Redis for the gauges
STATE_TTL_SECONDS = 400 * 86_400  # a month's state outlives the next draw and a year's MoM
SCRIPT = lua("campaign.lua")
for _action in ("ISSUED", "REVOKED"):  # at 0 from the start, so increase() counts the first
    CAMPAIGN_TICKETS.labels(_action)
for _topic in RECORDS:
    for _result in ("used", "ignored"):
        CAMPAIGN_EVENTS.labels(_topic, _result)
CAMPAIGN_EVENTS.labels("logins", "unlinked")


# ---------------------------------------------------------------- the campaign (pure)
class CampaignError(ValueError):
    """An invalid campaign file; the message names every bad line and field."""


class Campaign(BaseModel):
    """A campaign as its YAML file says it (README "The お月玉 campaign")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    name: str = ""
    months: tuple[str, ...] = Field(min_length=1)  # JST calendar months, YYYY-MM
    min_amount_yen: int = Field(500, ge=1)  # tax included
    methods: tuple[str, ...] = ("CARD",)
    daily_cap: int = Field(3, ge=1, le=100)
    winners_per_month: int = Field(10_000, ge=1)
    prize_yen: int = Field(10_000, ge=1)

    @field_validator("months", mode="before")
    @classmethod
    def _months(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            for month in value:
                text = str(month)
                year, _, mon = text.partition("-")
                if not (
                    len(text) == 7 and year.isdigit() and mon.isdigit() and 1 <= int(mon) <= 12
                ):
                    raise ValueError(f"{month!r} is not a month (YYYY-MM, e.g. 2026-11)")
            return tuple(sorted({str(m) for m in value}))
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in value if m not in METHODS]
        if unknown or not value:
            raise ValueError(f"unknown payment methods {unknown} (one of {', '.join(METHODS)})")
        return value

    @property
    def version(self) -> str:
        """A short hash of the definition: what dashboards annotate when it changes."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:8]

    def runs_in(self, month: str) -> bool:
        return month in self.months

    def earns(self, decision: Mapping[str, Any]) -> bool:
        """Whether a decided purchase earns a ticket here (eligibility apart): approved, paid
        by an accepted method, at least the minimum, an order or a shop (PAY) payment."""
        return (
            decision["decision"] == "APPROVE"
            and decision["amount"] >= self.min_amount_yen
            and decision.get("payment_method") in self.methods
            and bool(decision.get("identity_id"))
            and (
                decision.get("subject", "ORDER") == "ORDER" or decision.get("payment_kind") == "PAY"
            )
        )


def load_campaign_yaml(text: str, source: str = "campaign") -> Campaign:
    """Parse and validate a campaign file; CampaignError lists every problem with its line."""
    root, data = load_yaml_document(
        text, source, CampaignError, "a campaign is a mapping with at least `id:` and `months:`"
    )
    if isinstance(data.get("months"), list):  # YAML reads 2026-11 as text, 2026-11-01 as a date
        data["months"] = [str(m) for m in data["months"]]
    try:
        return Campaign.model_validate(data)
    except ValidationError as exc:
        unknown = "see README's campaign section"
        raise CampaignError(validation_problems(exc, root, source, unknown)) from None


def jst_month(at_ms: int) -> str:
    return jst_date(at_ms).strftime("%Y-%m")


def jst_day_text(at_ms: int) -> str:
    return jst_date(at_ms).isoformat()


def month_closes(month: str) -> datetime:
    """The first instant after a JST month (UTC)."""
    year, mon = (int(x) for x in month.split("-"))
    first_next = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC)
    return first_next - JST


def previous_month(month: str) -> str:
    year, mon = (int(x) for x in month.split("-"))
    return f"{year - 1}-12" if mon == 1 else f"{year}-{mon - 1:02d}"


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(slots=True)
class Seen:
    """One event of a batch, as the ticket engine needs it."""

    kind: str  # P (purchase), L (login), R (revocation)
    at_ms: int
    ref: str  # purchase id, login id
    identity: str = ""
    account: str = ""  # a login's account, resolved to its identity by the handler


def read_event(message: Received, registry: SchemaRegistry, topics: Mapping[str, str]) -> Any:
    """The decoded datum of a message of the loop's topics, or None for what is not ours
    (a declined decision, a failed login, an outcome that revokes nothing, bad input)."""
    logical = topics.get(message.topic)
    if message.value is None or logical is None:
        return None
    try:
        datum = registry.decode(RECORDS[logical], message.value)
    except Exception:  # bad input: agents/ingest.py dead-letters logins and outcomes
        return None
    return logical, datum


def seen_of(logical: str, datum: Mapping[str, Any]) -> Seen | None:
    if logical == "logins":
        if not datum["success"]:
            return None
        return Seen("L", to_ms(datum["event_time"]), datum["login_id"], account=datum["account_id"])
    if logical == "decisions":
        if datum["decision"] != "APPROVE" or not datum.get("identity_id"):
            return None
        purchase = datum.get("payment_id") or datum["order_id"]
        return Seen("P", to_ms(datum["event_time"]), purchase, identity=datum["identity_id"])
    if logical == "outcomes" and datum["kind"] in REVOKING:
        return Seen("R", to_ms(datum["event_time"]), datum["order_id"])
    return None


def script_args(
    events: Iterable[tuple[Seen, Mapping[str, Any] | None]], campaigns: Sequence[Campaign]
) -> list[str | int]:
    """campaign.lua's events for a batch: each purchase and login once per campaign running in
    its JST month (a purchase only where it earns), each revocation once."""
    args: list[str | int] = []
    for seen, decision in events:
        if seen.kind == "R":
            args += ("R", "", "", "", seen.ref, "", "")
            continue
        if not seen.identity:
            continue
        month = jst_month(seen.at_ms)
        for campaign in campaigns:
            if not campaign.runs_in(month):
                continue
            if seen.kind == "P" and decision is not None and campaign.earns(decision):
                day = jst_day_text(seen.at_ms)
                args += ("P", campaign.id, month, seen.identity, seen.ref, day, campaign.daily_cap)
            elif seen.kind == "L":
                args += ("L", campaign.id, month, seen.identity, seen.ref, "", campaign.daily_cap)
    return args


# ---------------------------------------------------------------- campaigns topic
class CampaignBook:
    """The campaigns in force: the compacted `campaigns` topic, read to its end at each batch
    (a non-blocking drain of a directly assigned consumer: changes apply without restart)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic("campaigns")
        self.campaigns: dict[str, Campaign] = {}
        self._consumer: Consumer | None = None
        self._published: list[tuple[str, str]] | None = None  # what publish_info last set

    def _open(self) -> Consumer:
        c = consumer(self.settings)
        meta = c.list_topics(self.topic, timeout=10).topics[self.topic]
        c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        return c

    def catch_up(self, timeout: float = 30.0) -> list[Campaign]:
        """Read the topic to its current end (at start: no batch runs without its campaigns)."""
        if self._consumer is None:
            self._consumer = self._open()
        c = self._consumer
        ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in c.assignment()}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = c.position([TopicPartition(self.topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions):
                break
            self.refresh(0.2)
        return list(self.campaigns.values())

    def refresh(self, wait: float = 0.0) -> list[Campaign]:
        """What changed since the last call (non-blocking unless `wait`)."""
        if self._consumer is None:
            self._consumer = self._open()
        while True:
            msg = self._consumer.poll(wait)
            wait = 0.0
            if msg is None:
                break
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("campaigns topic: %s", msg.error())
                continue
            key = (msg.key() or b"").decode()
            if msg.value() is None:
                if self.campaigns.pop(key, None) is not None:
                    log.info("campaign %s withdrawn", key)
                continue
            try:
                campaign = Campaign.model_validate(orjson.loads(msg.value()))
            except Exception as exc:  # validated by `campaign apply`; keep the previous one
                log.error("campaign %s refused: %s", key, exc)
                continue
            if self.campaigns.get(campaign.id) != campaign:
                log.info("campaign %s in force: months %s", campaign.id, ", ".join(campaign.months))
            self.campaigns[campaign.id] = campaign
        return list(self.campaigns.values())

    def publish_info(self) -> None:
        """The campaigns in force as an info gauge, rewritten only when they change: a scrape
        between clearing and setting would see none, and the dashboards annotate a change."""
        versions = sorted((c.id, c.version) for c in self.campaigns.values())
        if versions == self._published:
            return
        CAMPAIGN_INFO.clear()
        for campaign_id, version in versions:
            CAMPAIGN_INFO.labels(campaign_id, version).set(1)
        self._published = versions

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


# ---------------------------------------------------------------- the ticket engine (I/O)
class CampaignState:
    """campaign.lua, the month statistics and a person's month, in one Redis namespace."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client, self.keys = client, Keys(namespace)
        self._script = client.register_script(SCRIPT)

    async def apply(self, args: Sequence[str | int]) -> list[tuple[str, ...]]:
        if not args:
            return []
        flat = await retrying(
            lambda: self._script(args=[self.keys.namespace, STATE_TTL_SECONDS, *args]), "campaign"
        )
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
        return [tuple(values[i : i + 6]) for i in range(0, len(values), 6)]

    async def identities_of_accounts(self, accounts: Sequence[str]) -> list[str | None]:
        pipe = self.client.pipeline(transaction=False)
        for account in accounts:
            pipe.hget(self.keys.wallet_account(account), "identity")
        found = await retrying(pipe.execute, "campaign")
        return [f.decode() if f else None for f in found]

    async def month_stats(self, campaign_id: str, month: str) -> dict[str, int]:
        raw = await self.client.hgetall(self.keys.campaign_stats(campaign_id, month))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def person(self, campaign_id: str, month: str, identity: str) -> dict[str, str]:
        raw = await self.client.hgetall(self.keys.campaign_person(campaign_id, month, identity))
        return {k.decode(): v.decode() for k, v in raw.items()}


class TicketEngine:
    """logins, decisions, outcomes → campaign.lua → the ledger (the campaign loop's handler)."""

    def __init__(
        self,
        settings: Settings,
        registry: SchemaRegistry,
        state: CampaignState,
        graph: IdentityGraph,
        book: CampaignBook,
    ) -> None:
        self.registry, self.state, self.graph, self.book = registry, state, graph, book
        self._month_read = -MONTH_EVERY_SECONDS  # monotonic time the month figures were read
        self.ledger = settings.topic("campaign-tickets")
        self.topics = {settings.topic(t): t for t in ("logins", "decisions", "outcomes")}

    async def __call__(self, batch: list[Received]) -> list[Outgoing]:
        watch = Stopwatch("campaign")
        campaigns = self.book.refresh()
        self.book.publish_info()
        events: list[tuple[Seen, Mapping[str, Any] | None]] = []
        for message in batch:
            read = read_event(message, self.registry, self.topics)
            seen = seen_of(*read) if read is not None else None
            topic = read[0] if read is not None else "other"
            CAMPAIGN_EVENTS.labels(topic, "used" if seen else "ignored").inc()
            if seen is not None and read is not None:
                events.append((seen, read[1] if topic == "decisions" else None))
        await self.resolve(events)
        watch.lap("read")
        records = await self.state.apply(script_args(events, campaigns))
        watch.lap("tickets")
        now = datetime.now(UTC)
        out = []
        for action, cid, month, identity, purchase, day in records:
            CAMPAIGN_TICKETS.labels(action).inc()
            datum = {
                "campaign_id": cid,
                "month": month,
                "purchase_id": purchase,
                "identity_id": identity,
                "day": day,
                "action": action,
                "at": now,
            }
            value = self.registry.encode("CampaignTicket", datum)
            out.append(Outgoing(self.ledger, purchase.encode(), value))
        if time.monotonic() - self._month_read >= MONTH_EVERY_SECONDS:  # not every batch
            await self.publish_month(campaigns, now)
            self._month_read = time.monotonic()
        watch.log_if_slow("handler", len(batch))
        return out

    async def resolve(self, events: Sequence[tuple[Seen, Any]]) -> None:
        """Logins to their account's identity; every identity to the one it belongs to now."""
        logins = [s for s, _ in events if s.kind == "L"]
        found = await self.state.identities_of_accounts([s.account for s in logins])
        for seen, identity in zip(logins, found, strict=True):
            seen.identity = identity or ""
            if not identity:
                CAMPAIGN_EVENTS.labels("logins", "unlinked").inc()
        people = [s for s, _ in events if s.identity]
        roots = await self.graph.roots([s.identity for s in people]) if people else []
        for seen, root in zip(people, roots, strict=True):
            seen.identity = root or seen.identity

    async def publish_month(self, campaigns: Sequence[Campaign], now: datetime) -> None:
        """This month's and last month's figures as gauges (month over month on one panel)."""
        month = jst_month(to_ms(now))
        for campaign in campaigns:
            for which, m in (("current", month), ("previous", previous_month(month))):
                stats = await self.state.month_stats(campaign.id, m)
                for kind in ("purchases", "issued", "revoked", "participants", "eligible"):
                    CAMPAIGN_MONTH.labels(campaign.id, which, kind).set(stats.get(kind, 0))


def campaign_loop(settings: Settings, registry: SchemaRegistry) -> TransactionalLoop:
    """The campaign role's loop: its own consumer group (`<app id>.campaign`)."""
    client = redis_client(settings)
    engine = TicketEngine(
        settings,
        registry,
        CampaignState(client, settings.identity_namespace),
        IdentityGraph(client, settings.identity_namespace, settings.identity_fanout_limit),
        CampaignBook(settings),
    )
    return TransactionalLoop(
        settings,
        "campaign",
        [settings.topic(t) for t in ("logins", "decisions", "outcomes")],
        engine,
        ready=partial(asyncio.to_thread, engine.book.catch_up),
        on_fatal=lambda reason: os.kill(os.getpid(), signal.SIGTERM),
    )
