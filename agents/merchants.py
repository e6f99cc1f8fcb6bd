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

from agents.validate import Rejection, decode_event
from streams.app import app, registry, settings
from streams.follow import follow_topic
from streams.metrics import MERCHANTS_KNOWN
from streams.records import Merchant
from streams.topics import merchants_topic

log = logging.getLogger(__name__)

merchant_by_id: dict[str, Merchant] = {}
merchants_loaded = asyncio.Event()


def apply_merchant(table: dict[str, Merchant], key: bytes | None, value: Merchant | None) -> None:
    """Upsert, or delete on a tombstone (the key names the merchant)."""
    if value is not None:
        table[value.merchant_id] = value
    elif key is not None:
        table.pop(key.decode("utf-8", "replace"), None)


def apply_messages(messages: list) -> None:
    for msg in messages:
        merchant = None
        if msg.value is not None:
            merchant = decode_event(registry, "Merchant", msg.value, settings.max_event_bytes)
        # invalid ones are dead-lettered once by agents/ingest.py, not per worker
        if not isinstance(merchant, Rejection):
            apply_merchant(merchant_by_id, msg.key, merchant)
    MERCHANTS_KNOWN.set(len(merchant_by_id))


@app.task
async def follow_merchants() -> None:
    await follow_topic(
        app,
        settings.kafka_bootstrap,
        merchants_topic.get_topic_name(),
        apply_messages,
        merchants_loaded,
        "merchant table",
    )
