"""The policies in force: the compacted `policies` topic, followed whole by every worker.

`shinsa policy apply` publishes a validated document under the key `active` (or `shadow`, for
a candidate that runs beside the active one without deciding anything). Every worker swaps it
in as soon as it arrives — no restart — and every decision records the version that made it.
Screening starts after the first catch-up, so a restarted worker never decides with a stale
policy. A published document that does not validate (written by hand, or by an older Shinsa)
is refused, logged and counted, and the previous policy stays in force. A tombstone under
`shadow` stops the shadow run; the active policy can only be replaced, never removed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import orjson

from agents.policy import DEFAULT_POLICY_SET, PolicySet, policy_from_json
from streams.app import Runtime
from streams.follow import follow_in_app
from streams.metrics import POLICY_INFO, POLICY_LOAD_FAILURES

log = logging.getLogger(__name__)

ACTIVE, SHADOW = b"active", b"shadow"


@dataclass
class Policies:
    """The policies in force in this worker, and whether the first catch-up is done."""

    active: PolicySet = DEFAULT_POLICY_SET
    shadow: PolicySet | None = None
    loaded: asyncio.Event = field(default_factory=asyncio.Event)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key == SHADOW and value is None:
            if self.shadow is not None:
                log.info("shadow policy %s stopped", self.shadow.version)
            self.shadow = None
            return
        if key not in (ACTIVE, SHADOW) or value is None:
            return
        try:
            policy = policy_from_json(orjson.loads(value))
        except Exception as exc:  # invalid JSON or schema: keep what is in force
            POLICY_LOAD_FAILURES.inc()
            log.error("published %s policy refused: %s", key.decode(), str(exc).splitlines()[0])
            return
        if key == ACTIVE:
            self.active = policy
            POLICY_INFO.clear()
            POLICY_INFO.labels(policy.version).set(1)
            log.info("deciding with policy %s", policy.version)
        else:
            self.shadow = policy
            log.info("shadow policy %s runs beside %s", policy.version, self.active.version)


def register(rt: Runtime) -> Policies:
    """Follow the policies topic in this worker's app; returns the policies it keeps."""
    policies = Policies()
    POLICY_INFO.labels(policies.active.version).set(1)

    def apply_messages(messages: list) -> None:
        for msg in messages:
            policies.apply(msg.key, msg.value)

    topic = rt.topics.policies.get_topic_name()
    follow_in_app(
        rt.app, rt.settings.kafka_bootstrap, topic, apply_messages, policies.loaded, "policies"
    )
    return policies
