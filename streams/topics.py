"""Every topic of the pipeline, declared in the order events flow through it.

Values are raw bytes on the wire (Avro single-object or JSON); agents decode with the codec.
"""

from __future__ import annotations

from streams.app import app, settings
from streams.settings import TOPICS


def _topic(name: str) -> object:
    """The Faust topic of a catalogue entry (streams/settings.py TOPICS)."""
    return app.topic(
        settings.topic(name),
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        compacting=TOPICS[name].compacted or None,
    )


# Inputs, from producers.
orders_topic = _topic("orders")
payments_topic = _topic("payments")
accounts_topic = _topic("accounts")
logins_topic = _topic("logins")
outcomes_topic = _topic("outcomes")
merchants_topic = _topic("merchants")  # read whole by every worker
policies_topic = _topic("policies")
# Internal hop: repayments and outcomes keyed by the identity they settle (agents/exposure.py).
account_events_topic = _topic("account-events")
# One channel over the event topics that are validated and counted (agents/ingest.py).
checked_events_topic = app.topic(
    *(
        t.get_topic_name()
        for t in (payments_topic, accounts_topic, logins_topic, outcomes_topic, merchants_topic)
    ),
    key_type=bytes,
    value_type=bytes,
)
# Outputs, to consumers.
decisions_topic = _topic("decisions")  # key: order_id
traces_topic = _topic("traces")  # key: order_id; why each decision was made (no PII)
dlq_topic = _topic("dlq")  # original bytes; reason and source in headers
models_topic = _topic("models")
