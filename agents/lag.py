"""Consumer lag of this worker's partitions: how far screening is behind the producers.

Every `SHINSA_LAG_INTERVAL` seconds the worker asks the broker for the end offset of each
partition the group assigned to it and compares it with the offset Faust last committed for
that partition (what a restarted worker would resume from). Lag counts what is neither screened
nor committed yet, so it includes up to one commit interval (1 s) of finished work. Growing lag
is the early warning that the pipeline cannot keep up; it shows before latency does.

Only this worker's assignment is reported, so the sum over workers is the group's lag with no
partition counted twice. Partitions taken away by a rebalance stop being reported.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from streams.app import Runtime
from streams.metrics import CONSUMER_LAG, logical_topic

log = logging.getLogger(__name__)

Series = tuple[str, str, str]  # (logical topic, partition, loop) label values
AGENTS = "agents"  # the loop label of Faust's own group (the control streams)


def partition_lags(
    assigned: Iterable[Any],
    ends: Mapping[Any, int],
    committed: Mapping[Any, int | None],
    starts: Mapping[Any, int],
) -> dict[Series, int]:
    """Lag per (logical topic, partition, "agents") of the pipeline's topics among `assigned`.

    Partitions are Kafka TopicPartitions (anything with .topic and .partition). A partition
    with nothing committed yet lags by everything from its log start; Faust's own topics
    (leader election) are not ours and are left out.
    """
    lags: dict[Series, int] = {}
    for tp in assigned:
        topic = logical_topic(tp.topic)
        if topic is None or tp not in ends:
            continue
        position = committed.get(tp)
        if position is None:
            position = starts.get(tp, 0)
        lags[(topic, str(tp.partition), AGENTS)] = max(ends[tp] - position, 0)
    return lags


def publish(lags: Mapping[Series, int], previous: set[Series]) -> set[Series]:
    """Set the gauge for `lags`, drop series of partitions no longer assigned; returns the set."""
    for series, lag in lags.items():
        CONSUMER_LAG.labels(*series).set(lag)
    for gone in previous - lags.keys():
        CONSUMER_LAG.remove(*gone)
    return set(lags)


async def hot_path_lags(hot_paths: Iterable[Any]) -> dict[Series, int]:
    """The hot paths' partitions (streams/txloop.py loops measure their own lag), measured off
    their loop's thread (they are broker calls)."""
    lags: dict[Series, int] = {}
    for loop in hot_paths:
        for (topic, partition), lag in (await asyncio.to_thread(loop.measure_lag)).items():
            name = logical_topic(topic)
            if name is not None:
                lags[(name, str(partition), loop.loop_name)] = lag
    return lags


async def measure(consumer: Any, hot_paths: Iterable[Any]) -> dict[Series, int]:
    """One measurement against the broker (ListOffsets for the end and start offsets)."""
    assigned = [tp for tp in consumer.assignment() if logical_topic(tp.topic) is not None]
    if not assigned:
        return await hot_path_lags(hot_paths)
    ends = await consumer.highwaters(*assigned)
    # Faust's record of what it committed (next offset to read) per partition: the lag a
    # restart would see. It has no public accessor.
    committed = {tp: consumer._committed_offset.get(tp) for tp in assigned}
    missing = [tp for tp, offset in committed.items() if offset is None]
    starts = await consumer.earliest_offsets(*missing) if missing else {}
    return partition_lags(assigned, ends, committed, starts) | await hot_path_lags(hot_paths)


def register(rt: Runtime, hot_paths: Iterable[Any]) -> None:
    """Report the lag of the app's agents and of the hot paths, in this worker's app."""

    async def report_consumer_lag() -> None:
        """Measure lag periodically. A failed measurement (a rebalance, a broker hiccup) is
        logged and retried at the next tick: lag is a symptom to report, never a reason to stop
        screening."""
        reported: set[Series] = set()
        while True:
            await asyncio.sleep(rt.settings.lag_interval)
            try:
                reported = publish(await measure(rt.app.consumer, hot_paths), reported)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer lag not measured this time: %s: %s", type(exc).__name__, exc)

    rt.app.task(report_consumer_lag)
