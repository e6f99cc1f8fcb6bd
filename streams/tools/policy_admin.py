"""What `shinsa policy …` does: validate, diff, publish and read policies on the `policies` topic.

The topic is compacted and keyed `active` / `shadow`; its newest value per key is what every
worker decides with (agents/policies.py). Documents are published as canonical JSON after
validation, so a worker never has to parse YAML or guess at defaults.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import fields
from typing import Any

import orjson
import yaml

from agents.decide import Policy
from agents.policy import DEFAULT_POLICY_SET, PolicySet, policy_from_json
from streams.clients import DeliveryTracker, make_producer, produce_one, read_topic
from streams.codec import SchemaRegistry
from streams.errors import UserError
from streams.settings import Settings

ACTIVE, SHADOW = "active", "shadow"


def published(settings: Settings) -> dict[str, PolicySet | None]:
    """The newest policy under each key (None: none published, or the shadow was stopped)."""
    found: dict[str, PolicySet | None] = {ACTIVE: None, SHADOW: None}
    for msg in read_topic(settings, settings.topic("policies")):
        key = (msg.key() or b"").decode()
        if key not in found:
            continue
        value = msg.value()
        try:
            found[key] = policy_from_json(orjson.loads(value)) if value is not None else None
        except Exception:  # refused by the workers too (agents/policies.py): keep the previous
            continue
    return found


def active_policy(settings: Settings) -> PolicySet:
    return published(settings)[ACTIVE] or DEFAULT_POLICY_SET


def publish(settings: Settings, key: str, policy: PolicySet | None) -> None:
    """Publish (or, for the shadow, stop with a tombstone) and wait until Kafka has it."""
    producer = make_producer(settings)
    tracker = DeliveryTracker()
    value = orjson.dumps(policy.canonical()) if policy is not None else None
    produce_one(producer, settings.topic("policies"), key.encode(), value, tracker)
    if producer.flush(30) or tracker.failed:
        raise UserError(f"publishing the policy failed: {tracker.failed or 'timed out'}")


def rules_dict(policy: Policy) -> dict[str, Any]:
    values = {f.name: getattr(policy, f.name) for f in fields(policy) if f.name != "name"}
    if values["allowed_methods"] is not None:
        values["allowed_methods"] = list(values["allowed_methods"])
    return values


def effective(policy: PolicySet) -> dict[str, Any]:
    """Everything a policy decides with, defaults filled in: what a diff should compare."""
    return {
        "name": policy.document.name,
        "default": rules_dict(policy.default),
        "merchants": {mid: rules_dict(p) for mid, p in sorted(policy.merchants.items())},
        "block": [e.model_dump(exclude_none=True) for e in policy.document.block],
        "allow": [e.model_dump(exclude_none=True) for e in policy.document.allow],
    }


def as_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=True, allow_unicode=True, default_flow_style=False)


def diff(old: PolicySet, new: PolicySet) -> str:
    """A unified diff of the effective policies; empty when they decide alike."""
    lines = difflib.unified_diff(
        as_yaml(effective(old)).splitlines(keepends=True),
        as_yaml(effective(new)).splitlines(keepends=True),
        fromfile=f"in force: {old.version}",
        tofile=f"new: {new.version}",
    )
    return "".join(lines)


def shadow_report(settings: Settings, registry: SchemaRegistry, shadow_version: str) -> Counter:
    """(active decision, shadow decision) → orders, from the traces of the shadow's run."""
    pairs: Counter = Counter()
    for msg in read_topic(settings, settings.topic("traces")):
        trace = registry.decode("DecisionTrace", msg.value())
        shadow = trace.get("shadow")
        if shadow and shadow["policy_version"] == shadow_version:
            pairs[(trace["decision"], shadow["decision"])] += 1
    return pairs
