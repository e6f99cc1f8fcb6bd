"""payments (failed card authorisations) → per-device record in Redis → a feature of orders.

Card testing: a fraudster tries many stolen cards with tiny authorisations from one device, most
declined, then places a real order. Orders are keyed by identity and devices cross identities,
so the record is shared through Redis: one sorted set per device (keyed hash of the device id,
no PII), scored by the authorisation's event time. The screen agent counts, for each order of a
batch in one pipelined round trip, the failures from its device in the hour before the order's
own event time — never later ones, so a replayed backlog does not leak the future into the
feature. A record expires two days after the device's last failure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redis import asyncio as aioredis

from agents.identity import keyed_hash
from agents.snapshots import retrying
from agents.validate import Rejection, decode_event
from streams.app import app, registry, settings
from streams.topics import payments_topic

log = logging.getLogger(__name__)

WINDOW_MS = 3_600_000
KEEP_MS = 2 * 86_400_000


def device_key(namespace: str, secret: bytes, device_id: str) -> str:
    return f"{namespace}:devfail:{keyed_hash(secret, 'device', device_id)}"


class DeviceFailures:
    def __init__(self, client: aioredis.Redis, namespace: str, secret: bytes) -> None:
        self.client, self.namespace, self.secret = client, namespace, secret

    async def record(self, failures: Sequence[tuple[str, str, int]]) -> None:
        """(device id, payment id, event ms) of failed authorisations, one round trip."""
        if not failures:
            return

        async def write() -> None:
            pipe = self.client.pipeline(transaction=False)
            for device_id, payment_id, at_ms in failures:
                key = device_key(self.namespace, self.secret, device_id)
                pipe.zadd(key, {payment_id: at_ms})
                pipe.zremrangebyscore(key, "-inf", at_ms - KEEP_MS)
                pipe.pexpire(key, KEEP_MS)
            await pipe.execute()

        await retrying(write, "device failures")

    async def counts(self, orders: Sequence[tuple[str | None, int]]) -> list[int]:
        """For each (device id, order event ms): failures in the hour up to the order."""
        asked = [(d, t) for d, t in orders if d]
        if not asked:
            return [0] * len(orders)

        async def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for device_id, at_ms in asked:
                key = device_key(self.namespace, self.secret, device_id)
                pipe.zcount(key, f"({at_ms - WINDOW_MS}", at_ms)
            return await pipe.execute()

        found = iter(await retrying(read, "device failures"))
        return [int(next(found)) if d else 0 for d, _ in orders]


def failed_auth(value: bytes | None) -> tuple[str, str, int] | None:
    """(device id, payment id, event ms) if the payment is a failed card authorisation."""
    payment = decode_event(registry, "Payment", value, settings.max_event_bytes)
    if isinstance(payment, Rejection):  # agents/ingest.py dead-letters it
        return None
    if payment.kind != "CARD_AUTH" or payment.status != "FAILED" or not payment.device_id:
        return None
    return payment.device_id, payment.payment_id, int(payment.event_time.timestamp() * 1000)


@app.agent(payments_topic)
async def watch_card_auths(stream: Any) -> None:
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
    failures = DeviceFailures(
        client, settings.identity_namespace, settings.hash_key.get_secret_value().encode()
    )
    async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
        found = []
        for event in events:
            msg = event.message
            try:
                failure = failed_auth(msg.value)
            except Exception:  # a bug must not lose the batch
                log.exception("card auth watch failed at %s[%d]", msg.topic, msg.offset)
                continue
            if failure is not None:
                found.append(failure)
        await failures.record(found)
