"""Merchant attributes (加盟店属性): the compacted `merchants` topic as a table in every worker.

Orders are not keyed by merchant, so every worker needs every merchant: like a Kafka Streams
GlobalKTable, each worker reads all partitions of the compacted topic from the beginning (the
topic is its own changelog, so a restarted worker rebuilds the table), then follows it.
Screening waits until the first catch-up is done, so no order is judged against a half-loaded
table. A null value (tombstone) deletes the merchant; invalid merchant events are skipped here
and dead-lettered once by the group consumer in agents/ingest.py (every worker reads every
partition here, so dead-lettering here would repeat them per worker and per restart).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from agents.validate import Rejection, decode_event
from streams.app import Runtime
from streams.codec import SchemaRegistry
from streams.follow import follow_in_app
from streams.metrics import MERCHANTS_KNOWN
from streams.records import Merchant

log = logging.getLogger(__name__)


def apply_merchant(table: dict[str, Merchant], key: bytes | None, value: Merchant | None) -> None:
    """Upsert, or delete on a tombstone (the key names the merchant)."""
    if value is not None:
        table[value.merchant_id] = value
    elif key is not None:
        table.pop(key.decode("utf-8", "replace"), None)


@dataclass
class Merchants:
    """The merchant table of this worker, and whether its first catch-up is done."""

    by_id: dict[str, Merchant] = field(default_factory=dict)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)

    def apply(self, messages: list, registry: SchemaRegistry, max_bytes: int) -> None:
        for msg in messages:
            merchant = None
            if msg.value is not None:
                merchant = decode_event(registry, "Merchant", msg.value, max_bytes)
            # invalid ones are dead-lettered once by agents/ingest.py, not per worker
            if not isinstance(merchant, Rejection):
                apply_merchant(self.by_id, msg.key, merchant)
        MERCHANTS_KNOWN.set(len(self.by_id))


def register(rt: Runtime) -> Merchants:
    """Follow the merchants topic in this worker's app; returns the table it keeps."""
    merchants = Merchants()

    def apply_messages(messages: list) -> None:
        merchants.apply(messages, rt.registry, rt.settings.max_event_bytes)

    topic = rt.topics.merchants.get_topic_name()
    bootstrap = rt.settings.kafka_bootstrap
    follow_in_app(rt.app, bootstrap, topic, apply_messages, merchants.loaded, "merchant table")
    return merchants
