"""Producer and consumer clients for people and scripts (confluent-kafka).

Producers use the murmur2 partitioner so a keyed event lands on the partition the Java clients
and aiokafka (Faust) compute for the same key; librdkafka's default (consistent_random, CRC32)
would put it elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from streams.codec import CodecError, SchemaRegistry
from streams.settings import TOPICS, Settings

# What a producer may send: the input topics of the catalogue (streams/settings.py TOPICS).
INPUT_TOPICS = {name: spec for name, spec in TOPICS.items() if spec.flow == "in"}


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
    }


def make_producer(settings: Settings) -> Producer:
    return Producer(producer_config(settings))


def event_key(topic: str, datum: Mapping[str, Any]) -> bytes | None:
    for field in TOPICS[topic].keys:
        if datum.get(field):
            return str(datum[field]).encode()
    return None


@dataclass(frozen=True)
class Prepared:
    """An event validated and encoded, ready to send."""

    topic: str
    key: bytes | None
    value: bytes


def prepare(registry: SchemaRegistry, topic: str, value: Mapping[str, Any]) -> Prepared:
    """Validate natural JSON against the topic's schema and encode it as Avro single-object."""
    spec = INPUT_TOPICS.get(topic)
    if spec is None or spec.record is None:
        raise CodecError(
            "unknown_topic", f"cannot produce to {topic!r}; one of {', '.join(INPUT_TOPICS)}"
        )
    record = spec.record
    datum = registry.from_json(record, value)
    return Prepared(topic, event_key(topic, datum), registry.encode(record, datum))


class DeliveryTracker:
    """Counts delivery reports; producing is only done when every message is acknowledged."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed: list[str] = []

    def __call__(self, err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed.append(str(err))


def produce_one(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    on_delivery: Callable[[KafkaError | None, Any], None],
) -> None:
    """Produce, waiting for queue space instead of failing when the local queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


def consumer(
    settings: Settings, group: str | None = None, *, from_beginning: bool = True
) -> Consumer:
    config = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group or f"shinsa-cli-{id(settings)}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        # decisions are written in transactions: never show an aborted attempt, and do not
        # park fetches for 500 ms (a commit does not wake them)
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": 10,
    }
    return Consumer(config)


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The next offset of every partition of `topic` (where a reader starting now begins)."""
    c = consumer(settings)
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaException(f"topic {topic} does not exist; run `shinsa stack up`")
        return {p: _high_watermark(c, TopicPartition(topic, p)) for p in sorted(meta.partitions)}
    finally:
        c.close()


ELECTION_ERRORS = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def _high_watermark(c: Consumer, tp: TopicPartition, timeout: float = 20.0) -> int:
    """The partition's end offset, waiting out a leader election (e.g. of a new topic)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return c.get_watermark_offsets(tp, timeout=10)[1]
        except KafkaException as exc:
            if exc.args[0].code() not in ELECTION_ERRORS or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_topic(
    settings: Settings,
    topic: str,
    *,
    follow: bool = False,
    start: dict[int, int] | None = None,
) -> Iterator[Any]:
    """Messages of `topic` from the beginning (or from `start` offsets), up to the end offsets
    seen when called; with `follow`, forever.

    Partitions are assigned directly (no consumer group), so reading never disturbs anyone.
    """
    ends = end_offsets(settings, topic)
    start = start or {}
    c = consumer(settings)
    try:
        c.assign([TopicPartition(topic, p, start.get(p, OFFSET_BEGINNING)) for p in ends])
        pending = {p for p, end in ends.items() if end > start.get(p, 0)}
        while follow or pending:
            msg = c.poll(0.5)
            if msg is None:
                # offsets can have gaps (compaction, transaction markers): ask where we are
                for tp in c.position([TopicPartition(topic, p) for p in pending]):
                    if tp.offset >= ends[tp.partition]:
                        pending.discard(tp.partition)
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            yield msg
            if msg.offset() + 1 >= ends[msg.partition()]:
                pending.discard(msg.partition())
    finally:
        c.close()
