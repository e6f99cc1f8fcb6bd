"""Dead letters: the original bytes, with why and where they came from in headers."""

from __future__ import annotations

from typing import Any

from streams.delivery import Outgoing
from streams.metrics import DLQ

REASON = "shinsa.reason"
DETAIL = "shinsa.detail"
SOURCE_TOPIC = "shinsa.source.topic"
SOURCE_PARTITION = "shinsa.source.partition"
SOURCE_OFFSET = "shinsa.source.offset"


def dead_letter(
    dlq_topic: str, message: Any, logical_topic: str, reason: str, detail: str
) -> Outgoing:
    """The DLQ message for a rejected Kafka message (counted here, by source and reason).

    `message` is a Faust Message or an aiokafka ConsumerRecord: anything with topic, partition,
    offset, key and value.
    """
    DLQ.labels(logical_topic, reason).inc()
    headers = [
        (REASON, reason.encode()),
        (DETAIL, detail.encode()),
        (SOURCE_TOPIC, message.topic.encode()),
        (SOURCE_PARTITION, str(message.partition).encode()),
        (SOURCE_OFFSET, str(message.offset).encode()),
    ]
    return Outgoing(dlq_topic, message.key, message.value, headers)
