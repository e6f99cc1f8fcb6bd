"""Feature snapshots: the exact features an order was scored with, kept until its label arrives.

The screen agent writes one per decision (keyed by order id, with a TTL, one pipelined round
trip per batch); the learner joins each outcome to its snapshot, so the model learns from the
features as they were at decision time — never from features computed later (no leakage).
A snapshot also keeps the score the order got, for progressive validation, and, once learned,
the label, so a repeated outcome is not learned twice and a changed one (paid, then charged
back) corrects the model once. Snapshots hold no PII: features are numbers and flags.
While Redis is unreachable, callers wait and retry (logged, counted) rather than lose work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
from prometheus_client import Counter
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

REDIS_RETRIES = Counter(
    "shinsa_snapshot_redis_retries_total",
    "Snapshot reads or writes retried because Redis did not answer (nothing is lost).",
)


async def retrying(call: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a Redis call until Redis answers, backing off up to 5 s between attempts."""
    backoff = 0.1
    while True:
        try:
            return await call()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            REDIS_RETRIES.inc()
            reason = type(exc).__name__
            log.warning("Redis unavailable for %s (%s); retrying in %.1fs", what, reason, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


class SnapshotStore:
    def __init__(self, client: aioredis.Redis, namespace: str, ttl_seconds: float) -> None:
        self.client = client
        self.prefix = f"{namespace}:snap:"
        self.ttl = max(1, int(ttl_seconds))

    async def save(self, snapshots: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Write a batch of (order id, snapshot) in one round trip."""
        await self._write(snapshots, keep_ttl=False)

    async def load(self, order_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        if not order_ids:
            return []
        raw = await retrying(
            lambda: self.client.mget([self.prefix + o for o in order_ids]), "feature snapshots"
        )
        return [orjson.loads(r) if r is not None else None for r in raw]

    async def mark_learned(self, learned: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Store the label learned into each snapshot, keeping its TTL."""
        await self._write(learned, keep_ttl=True)

    async def _write(self, items: Sequence[tuple[str, dict[str, Any]]], keep_ttl: bool) -> None:
        if not items:
            return
        expiry: dict[str, Any] = {"keepttl": True} if keep_ttl else {"ex": self.ttl}

        async def write() -> None:
            pipe = self.client.pipeline(transaction=False)
            for order_id, snapshot in items:
                pipe.set(self.prefix + order_id, orjson.dumps(snapshot), **expiry)
            await pipe.execute()

        await retrying(write, "feature snapshots")
