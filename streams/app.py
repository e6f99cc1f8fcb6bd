"""The Faust app, configured for throughput (see DESIGN.md's measured pitfalls).

Agents take batches (`take_events`), values stay raw bytes and are decoded by our codec inside
the agent, so an undecodable event becomes a dead letter with its offset instead of a
deserializer error that Faust would only log.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from streams.codec import SchemaRegistry
from streams.records import register_codecs
from streams.settings import MODEL_MESSAGE_BYTES, Settings
from streams.topics import Topics, build_topics


@dataclass(frozen=True, slots=True)
class Runtime:
    """What every agent is given: built once by the composition root (streams/tools/worker.py)
    and passed in, never read from a module global."""

    settings: Settings
    registry: SchemaRegistry
    app: faust.App
    topics: Topics

    @property
    def secret(self) -> bytes:
        """The key of the keyed hashes and of the checkpoints' signatures."""
        return self.settings.hash_key.get_secret_value().encode()


def build_runtime(settings: Settings) -> Runtime:
    registry = SchemaRegistry(settings.schema_dir)
    register_codecs(registry)
    app = create_app(settings)
    return Runtime(settings, registry, app, build_topics(app, settings))


def create_app(settings: Settings) -> faust.App:
    datadir = settings.data_dir / "faust" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        # Faust's default is ./<app id>-data in the working directory: keep it in the stack's data.
        datadir=str(datadir),
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        stream_buffer_maxsize=16384,
        broker_max_poll_records=2000,
        producer_linger=0.005,
        producer_acks=-1,
        producer_max_request_size=MODEL_MESSAGE_BYTES,  # model checkpoints are one message
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        web_host="127.0.0.1",
        consumer_auto_offset_reset="earliest",
        # A crashed worker's partitions wait this long before the group moves them (Faust's
        # default, 60 s, held a restarted worker's tables and screening for a minute).
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        # A batch of 1000 screened orders takes well under a second; a stalled agent is a bug.
        broker_commit_every=1000,
        broker_commit_interval=1.0,
    )
