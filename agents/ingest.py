"""payments, logins, outcomes, merchants → validate → counted (bad input → dlq).

Nothing downstream reads these yet beyond this check: credit exposure (payments), campaign
and device features (logins) and the learner (outcomes) plug in here in later stages.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from agents import reasons
from agents.validate import Rejection, check_any, decode_event
from streams.app import app, registry, settings
from streams.delivery import send_all
from streams.dlq import dead_letter
from streams.metrics import EVENTS_IN
from streams.settings import TOPICS
from streams.topics import (
    accounts_topic,
    checked_events_topic,
    dlq_topic,
    logins_topic,
    merchants_topic,
    outcomes_topic,
    payments_topic,
)

log = logging.getLogger(__name__)

# full topic name → (logical topic, record name), from the one topic → record table
RECORD_OF_TOPIC = {
    topic.get_topic_name(): (logical, TOPICS[logical].record)
    for logical, topic in (
        ("payments", payments_topic),
        ("accounts", accounts_topic),
        ("logins", logins_topic),
        ("outcomes", outcomes_topic),
        ("merchants", merchants_topic),
    )
}


def check_event(raw: bytes | None, record_name: str, now: datetime) -> Any | Rejection:
    """Decode and validate one payment, login or outcome message."""
    record = decode_event(registry, record_name, raw, settings.max_event_bytes)
    if isinstance(record, Rejection):
        return record
    return check_any(record, now) or record


@app.agent(checked_events_topic)
async def check_events(stream: Any) -> None:
    dead_letters = dlq_topic.get_topic_name()
    async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
        outgoing = []
        now = datetime.now(UTC)
        for event in events:
            msg = event.message
            logical, record_name = RECORD_OF_TOPIC[msg.topic]
            EVENTS_IN.labels(logical).inc()
            if msg.value is None and logical == "merchants":
                continue  # a tombstone deletes a merchant: valid on a compacted topic
            try:
                result = check_event(msg.value, record_name, now)
            except Exception as exc:  # a bug must not lose the rest of the batch
                log.exception("checking failed at %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                result = Rejection(reasons.PROCESSING_ERROR, type(exc).__name__)
            if isinstance(result, Rejection):
                outgoing.append(
                    dead_letter(dead_letters, msg, logical, result.reason, result.detail)
                )
        await send_all(app.producer, outgoing)
