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
from typing import Any

from agents.state import DeviceFailures, redis_client
from agents.validate import Rejection, decode_event
from streams.app import Runtime
from streams.codec import SchemaRegistry

log = logging.getLogger(__name__)


def failed_auth(
    value: bytes | None, registry: SchemaRegistry, max_bytes: int
) -> tuple[str, str, int] | None:
    """(device id, payment id, event ms) if the payment is a failed card authorisation."""
    payment = decode_event(registry, "Payment", value, max_bytes)
    if isinstance(payment, Rejection):  # agents/ingest.py dead-letters it
        return None
    if payment.kind != "CARD_AUTH" or payment.status != "FAILED" or not payment.device_id:
        return None
    return payment.device_id, payment.payment_id, int(payment.event_time.timestamp() * 1000)


def register(rt: Runtime) -> None:
    """payments → failed card authorisations per device, in this worker's app."""
    settings = rt.settings

    async def watch_card_auths(stream: Any) -> None:
        failures = DeviceFailures(redis_client(settings), settings.identity_namespace, rt.secret)
        async for events in stream.take_events(settings.batch_size, settings.batch_timeout):
            found = []
            for event in events:
                msg = event.message
                try:
                    failure = failed_auth(msg.value, rt.registry, settings.max_event_bytes)
                except Exception:  # a bug must not lose the batch
                    log.exception("card auth watch failed at %s[%d]", msg.topic, msg.offset)
                    continue
                if failure is not None:
                    found.append(failure)
            await failures.record(found)

    rt.app.agent(rt.topics.payments, name="agents.devices.watch_card_auths")(watch_card_auths)
