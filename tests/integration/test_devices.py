"""agents/devices.py on the real Redis: failed card authorisations per device, counted in the
hour up to each order's own event time (never later ones), with no device id in the keys."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from redis import asyncio as aioredis

from agents.state import DeviceFailures, HotPathState

pytestmark = pytest.mark.integration

HOUR = 3_600_000
T = 1_790_000_000_000


def test_failures_are_counted_per_device_in_the_hour_before_the_order(local_stack):
    namespace = f"it-dev-{uuid.uuid4().hex[:8]}"

    async def run() -> list[int]:
        client = aioredis.Redis.from_url(local_stack.redis_url)
        try:
            watch = DeviceFailures(client, namespace, b"secret")
            await watch.record(
                [
                    ("dev-a", "p1", T - 2 * HOUR),
                    ("dev-a", "p2", T - 30 * 60_000),
                    ("dev-a", "p3", T - 60_000),
                    ("dev-a", "p3", T - 60_000),  # a redelivered payment counts once
                    ("dev-a", "p4", T + 60_000),  # after the order
                    ("dev-b", "p5", T - 60_000),
                ]
            )
            state = HotPathState(client, namespace, b"secret", 3600)
            probes = [("dev-a", T), (None, T), ("dev-b", T), ("dev-c", T)]
            return (await state.load([], probes)).device_failures
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [2, 0, 1, 0]
    keys = [k.decode() for k in redis.Redis.from_url(local_stack.redis_url).keys(f"{namespace}:*")]
    suffixes = [k[len(namespace) :] for k in keys]  # the namespace's hex may spell "dev-b"
    assert len(keys) == 2 and not any(d in k for k in suffixes for d in ("dev-a", "dev-b")), (
        "device ids are hashed"
    )
    assert all(redis.Redis.from_url(local_stack.redis_url).pttl(k) > 0 for k in keys)
