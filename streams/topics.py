"""The Faust topics of the pipeline, made from the topic catalogue (streams/settings.py TOPICS)
for one app, in the order events flow through them.

Values are raw bytes on the wire (Avro single-object or JSON); agents decode with the codec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from streams.settings import TOPICS, Settings


@dataclass(frozen=True, slots=True)
class Topics:
    # Inputs, from producers.
    orders: Any
    payments: Any
    accounts: Any
    logins: Any
    outcomes: Any
    merchants: Any  # read whole by every worker
    policies: Any
    # Internal hop: repayments and outcomes keyed by the identity they settle (exposure.py).
    account_events: Any
    # One channel over the event topics that are validated and counted (agents/ingest.py).
    checked_events: Any
    # Payments and outcomes: what settles deferred orders (agents/exposure.py).
    settlement_sources: Any
    # Outputs, to consumers.
    decisions: Any  # key: order_id
    traces: Any  # key: order_id; why each decision was made (no PII)
    dlq: Any  # original bytes; reason and source in headers
    models: Any


def build_topics(app: faust.App, settings: Settings) -> Topics:
    def topic(name: str) -> Any:
        return app.topic(
            settings.topic(name),
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            compacting=TOPICS[name].compacted or None,
        )

    def channel(*names: str) -> Any:
        """One stream over several topics."""
        return app.topic(*(settings.topic(n) for n in names), key_type=bytes, value_type=bytes)

    return Topics(
        orders=topic("orders"),
        payments=topic("payments"),
        accounts=topic("accounts"),
        logins=topic("logins"),
        outcomes=topic("outcomes"),
        merchants=topic("merchants"),
        policies=topic("policies"),
        account_events=topic("account-events"),
        checked_events=channel("payments", "accounts", "logins", "outcomes", "merchants"),
        settlement_sources=channel("payments", "outcomes"),
        decisions=topic("decisions"),
        traces=topic("traces"),
        dlq=topic("dlq"),
        models=topic("models"),
    )
