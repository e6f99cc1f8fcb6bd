"""Follow a compacted topic whole, in every worker: the merchants table, the newest model.

Like a Kafka Streams GlobalKTable: a consumer without a group is assigned every partition,
reads from the beginning (the compacted topic is its own changelog, so a restarted worker
rebuilds its view), sets `loaded` once it has caught up with the end offsets seen at start,
then keeps following. A failure crashes the worker: Faust logs a failing app task only as
"cancelled", and a worker without its merchants or its model must not keep screening.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from streams.settings import MODEL_MESSAGE_BYTES

log = logging.getLogger(__name__)


def whole_topic_consumer(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A consumer of every partition of `topic` from the beginning, without a group (it never
    commits, never rebalances; whoever reads keeps its own offsets)."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,  # no group: aiokafka assigns every partition of the topic
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MODEL_MESSAGE_BYTES,  # a model checkpoint is one message
    )


async def caught_up(consumer: AIOKafkaConsumer, ends: dict) -> bool:
    positions = [await consumer.position(tp) for tp in ends]
    return all(pos >= end for pos, end in zip(positions, ends.values(), strict=True))


def follow_in_app(
    app: Any,
    bootstrap: str,
    topic: str,
    handle: Callable[[list[ConsumerRecord]], None],
    loaded: asyncio.Event,
    what: str,
) -> None:
    """Feed every message batch of `topic` to `handle`, forever, as a task of `app` (started,
    run and stopped with the worker); crash the app on failure."""

    async def follow() -> None:
        consumer = whole_topic_consumer(bootstrap, topic)
        await consumer.start()
        try:
            catch_up = await consumer.end_offsets(list(consumer.assignment()))
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                for messages in batches.values():
                    handle(messages)
                if not loaded.is_set() and await caught_up(consumer, catch_up):
                    loaded.set()
                    log.info("%s loaded", what)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("following %s failed", what)
            await app.crash(exc)
        finally:
            await consumer.stop()

    app.task(follow)
