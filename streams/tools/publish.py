"""Events out to Kafka or to a file, with progress: shared by `shinsa produce`, `simulate` and
the demo."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console

from streams.errors import UserError
from streams.settings import Settings
from streams.tools.progress import progress_for


def send_prepared(
    s: Settings, events: list[tuple[str, bytes | None, bytes]], what: str, rate: float = 0.0
) -> int:
    """Send (logical topic, key, value) with progress; returns how many the broker acknowledged."""
    from streams.clients import DeliveryTracker, make_producer, produce_one

    producer = make_producer(s)
    tracker = DeliveryTracker()
    started = time.monotonic()
    with progress_for(Console(stderr=True)) as bar:
        task = bar.add_task(what, total=len(events), rate="")
        for i, (topic, key, value) in enumerate(events, 1):
            produce_one(producer, s.topic(topic), key, value, tracker)
            if rate:
                ahead = i / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if i % 500 == 0 or i == len(events):
                producer.poll(0)
                elapsed = max(time.monotonic() - started, 1e-6)
                bar.update(task, completed=i, rate=f"{i / elapsed:,.0f} ev/s")
        remaining = producer.flush(60)
    if remaining or tracker.failed:
        raise UserError(
            f"{remaining + len(tracker.failed)} events were not acknowledged by Kafka "
            f"({'; '.join(tracker.failed[:3]) or 'flush timed out'})"
        )
    return tracker.delivered


def write_events(events: list[Any], output: Path) -> None:
    import orjson

    with output.open("wb") as out:
        for e in events:
            if e.raw is None:
                line = {"topic": e.topic, "value": e.value}
                if e.fraud_pattern is not None:  # the truth, for `shinsa eval --payments`
                    line["pattern"] = e.fraud_pattern
                out.write(orjson.dumps(line) + b"\n")


def encode_events(s: Settings, events: list[Any]) -> list[tuple[str, bytes | None, bytes]]:
    """Simulated events as (topic, key, bytes): valid ones Avro, broken ones JSON or raw bytes."""
    import orjson

    from streams.clients import event_key, prepare
    from streams.codec import CodecError, SchemaRegistry

    registry = SchemaRegistry(s.schema_dir)
    out = []
    for e in events:
        if e.raw is not None:
            out.append((e.topic, None, e.raw))
            continue
        try:
            p = prepare(registry, e.topic, e.value)
            out.append((p.topic, p.key, p.value))
        except CodecError:  # deliberately invalid: send as JSON so the worker rejects it
            key = None
            with contextlib.suppress(KeyError, TypeError):
                key = event_key(e.topic, e.value)
            out.append((e.topic, key, orjson.dumps(e.value)))
    return out


def summarize_topics(events: list[Any]) -> str:
    counts = Counter(e.topic for e in events)
    return ", ".join(f"{n} {t}" for t, n in counts.most_common())
