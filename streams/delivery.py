"""Send a batch's results and wait until every one is on the broker.

Faust acknowledges a `take_events` batch when the loop moves on, even if the body raised, and
never raises on a failed send by itself. So a batch's sends are awaited inside the loop body,
and failed sends are retried (with backoff, logged and counted) until the broker takes them:
the pipeline stalls rather than commits an offset whose result was lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streams.metrics import EVENTS_OUT, SEND_RETRIES, logical_topic

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


async def send_all(producer: Any, outgoing: list[Outgoing], max_backoff: float = 5.0) -> None:
    pending = outgoing
    backoff = 0.1
    while pending:
        futures = [
            await producer.send(o.topic, o.key, o.value, None, None, o.headers) for o in pending
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [o for o, r in zip(pending, results, strict=True) if isinstance(r, BaseException)]
        count_sent(
            o.topic
            for o, r in zip(pending, results, strict=True)
            if not isinstance(r, BaseException)
        )
        if failed:
            errors = {type(r).__name__ for r in results if isinstance(r, BaseException)}
            log.error(
                "%d of %d sends failed (%s); retrying in %.1fs",
                len(failed),
                len(pending),
                ", ".join(sorted(errors)),
                backoff,
            )
            for o in failed:
                SEND_RETRIES.labels(o.topic).inc()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
        pending = failed


def count_sent(topics: Iterable[str]) -> None:
    """Count acknowledged sends per logical topic: once per topic and batch, not per message
    (a bound `labels()` call costs microseconds and a batch holds up to a thousand sends)."""
    for topic, n in Tally(topics).items():
        EVENTS_OUT.labels(logical_topic(topic) or "other").inc(n)
