"""payments, accounts, logins, outcomes, merchants → validate → counted (bad input → dlq).

The one place these topics' bad input is dead-lettered, once per event, by the worker group.
The stages that use them read them on their own (exposure.py and devices.py: payments and
outcomes; wallet.py: accounts and logins; learn.py: outcomes; merchants.py: merchants) and
skip what does not decode, without dead-lettering it again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from agents import reasons
from agents.validate import Rejection, check_any, decode_event
from streams.app import Runtime
from streams.codec import SchemaRegistry
from streams.delivery import send_all
from streams.dlq import dead_letter
from streams.metrics import EVENTS_IN
from streams.settings import TOPICS

log = logging.getLogger(__name__)

CHECKED = ("payments", "accounts", "logins", "outcomes", "merchants")  # Topics.checked_events


def check_event(
    raw: bytes | None, record_name: str, now: datetime, registry: SchemaRegistry, max_bytes: int
) -> Any | Rejection:
    """Decode and validate one payment, login or outcome message."""
    record = decode_event(registry, record_name, raw, max_bytes)
    if isinstance(record, Rejection):
        return record
    return check_any(record, now) or record


def register(rt: Runtime) -> None:
    """The checked event topics → validated and counted, bad input dead-lettered."""
    settings = rt.settings
    # full topic name → (logical topic, record name), from the topic catalogue
    record_of_topic = {settings.topic(name): (name, TOPICS[name].record) for name in CHECKED}
    dead_letters = rt.topics.dlq.get_topic_name()

    async def check_events(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
            outgoing = []
            now = datetime.now(UTC)
            for event in events:
                msg = event.message
                logical, record_name = record_of_topic[msg.topic]
                EVENTS_IN.labels(logical).inc()
                if msg.value is None and logical == "merchants":
                    continue  # a tombstone deletes a merchant: valid on a compacted topic
                try:
                    result = check_event(
                        msg.value, record_name, now, rt.registry, settings.max_event_bytes
                    )
                except Exception as exc:  # a bug must not lose the rest of the batch
                    where = (msg.topic, msg.partition, msg.offset)
                    log.exception("checking failed at %s[%d]@%d", *where)
                    result = Rejection(reasons.PROCESSING_ERROR, type(exc).__name__)
                if isinstance(result, Rejection):
                    outgoing.append(
                        dead_letter(dead_letters, msg, logical, result.reason, result.detail)
                    )
            await send_all(rt.app.producer, outgoing)

    rt.app.agent(rt.topics.checked_events, name="agents.ingest.check_events")(check_events)
