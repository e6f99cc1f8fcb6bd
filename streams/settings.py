"""The one reader of the environment: every setting, its SHINSA_* variable and its default.

Defaults fit the local stack started by `shinsa stack up`; everything else in the code gets
values from a `Settings` object passed in, never from `os.environ`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
# From a checkout, the contracts and monitoring files sit at the repository's top; installed
# from a wheel, inside this package (pyproject.toml maps them there) and state goes to the
# working directory.
CHECKOUT = (ROOT / "pyproject.toml").is_file()
SCHEMA_DIR = ROOT / "schemas" if CHECKOUT else Path(__file__).resolve().parent / "schemas"
MONITORING_DIR = ROOT / "monitoring" if CHECKOUT else Path(__file__).resolve().parent / "monitoring"
DATA_DIR = ROOT / ".shinsa" if CHECKOUT else Path.cwd() / ".shinsa"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic of the pipeline, as every part of the code sees it."""

    record: str | None = None  # the Avro record of its values (None: bytes of our own)
    keys: tuple[str, ...] = ()  # the record's field(s) whose value keys a message (first set)
    compacted: bool = False  # a table (the newest value per key), not a stream
    flow: str = ""  # "in": an input counted by shinsa_events_in_total; "out": by …_out_total


# The topic catalogue: every topic, in the order events flow through the pipeline (logical
# names: SHINSA_TOPIC_PREFIX is prepended; streams/topics.py makes the Faust topics of it).
TOPICS: dict[str, TopicSpec] = {
    "orders": TopicSpec("Order", ("order_id",), flow="in"),
    "payments": TopicSpec("Payment", ("order_id", "payment_id"), flow="in"),
    # wallet accounts: opened, KYC verified, limits, frozen, closed
    "accounts": TopicSpec("Account", ("account_id",), flow="in"),
    "logins": TopicSpec("Login", ("account_id",), flow="in"),
    "outcomes": TopicSpec("Outcome", ("order_id",), flow="in"),
    "merchants": TopicSpec("Merchant", ("merchant_id",), compacted=True, flow="in"),
    "policies": TopicSpec(compacted=True),  # `shinsa policy apply`: YAML, signed by version
    "decisions": TopicSpec("Decision", ("order_id",), flow="out"),
    # decision traces for audit (`shinsa explain`), keyed by order id
    "traces": TopicSpec("DecisionTrace", ("order_id",), flow="out"),
    "dlq": TopicSpec(flow="out"),  # the original bytes; reason and source in headers
    "models": TopicSpec(compacted=True),  # signed checkpoints, archive, kill switch
    # internal: repayments and outcomes re-keyed by identity (exposure)
    "account-events": TopicSpec(flow="out"),
    # campaign definitions (`shinsa campaign apply`), keyed by campaign id
    "campaigns": TopicSpec(compacted=True),
    "campaign-tickets": TopicSpec(),  # the ticket ledger: issued / revoked, by purchase id
    "campaign-draws": TopicSpec(compacted=True),  # draw commitments and results
    "campaign-winners": TopicSpec(),  # each month's winners, keyed by campaign:month:identity
}
TOPIC_NAMES = tuple(TOPICS)
COMPACTED_TOPICS = frozenset(name for name, spec in TOPICS.items() if spec.compacted)
MODEL_MESSAGE_BYTES = 8 * 1024 * 1024  # largest model checkpoint (models topic, producer)


class Settings(BaseSettings):
    """Shinsa configuration; each field is read from SHINSA_<FIELD NAME>."""

    model_config = SettingsConfigDict(env_prefix="SHINSA_", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field(
        "", description="Kafka bootstrap servers; empty means the local broker on kafka_port."
    )
    kafka_port: int = Field(9092, description="Port of the local broker started by `stack up`.")
    kafka_controller_port: int = Field(
        9093, description="KRaft controller port of the local broker."
    )
    kafka_version: str = Field("3.9.1", description="Apache Kafka release fetched from Maven.")
    kafka_heap: str = Field("768m", description="Max Java heap of the local broker.")
    redis_url: str = Field("", description="Redis URL; empty means the local Redis on redis_port.")
    redis_port: int = Field(6379, description="Port of the local Redis started by `stack up`.")
    topic_prefix: str = Field("shinsa.", description="Prepended to every topic name.")
    partitions: int = Field(
        4, ge=1, description="Partitions of event topics created by `stack up`."
    )
    app_id: str = Field(
        "shinsa", description="Faust application id (consumer group, internal topics)."
    )
    data_dir: Path = Field(
        DATA_DIR,
        description="Local stack data, logs and pid files (a checkout's .shinsa/, else the "
        "working directory's).",
    )
    cache_dir: Path = Field(
        Path.home() / ".cache" / "shinsa", description="Downloaded Kafka jars, reused across runs."
    )
    schema_dir: Path = Field(SCHEMA_DIR, description="Avro schemas (*.avsc).")
    max_event_bytes: int = Field(
        65536, ge=1024, description="Events larger than this go to the DLQ as oversized."
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        description="Worker /metrics port; 0 picks a free one (several workers per host).",
    )
    campaign_metrics_port: int = Field(
        9465,
        ge=0,
        description="/metrics port of `shinsa worker --role campaign`; 0 picks a free one.",
    )
    api_port: int = Field(
        8470,
        ge=0,
        description="Worker HTTP API port (merchant audience segments); 0 picks a free one.",
    )
    api_host: str = Field(
        "127.0.0.1", description="Interface the worker's HTTP API listens on (0.0.0.0: all)."
    )
    lag_interval: float = Field(
        5.0, gt=0, description="Seconds between consumer-lag measurements of a worker."
    )
    prometheus_port: int = Field(
        9090, ge=1, description="Port of the Prometheus `stack up --monitoring` starts."
    )
    alertmanager_port: int = Field(
        9095,
        ge=1,
        description="Port of the Alertmanager `stack up --monitoring` starts (9093, its "
        "default, is the Kafka controller's here).",
    )
    alert_webhook_url: SecretStr = Field(
        SecretStr(""),
        description="Chat incoming-webhook URL (Slack-compatible) Alertmanager posts pages "
        "to (and tickets, without SHINSA_TICKET_WEBHOOK_URL); empty: alerts are evaluated "
        "but not sent.",
    )
    ticket_webhook_url: SecretStr = Field(
        SecretStr(""),
        description="Incoming-webhook URL of the working-hours channel for ticket alerts; "
        "empty: tickets go to SHINSA_ALERT_WEBHOOK_URL's channel.",
    )
    web_port: int = Field(0, ge=0, description="Faust web UI port; 0 disables it.")
    hash_key: SecretStr = Field(
        SecretStr("shinsa-local-development-key"),
        description="Secret of the keyed hashes (HMAC) of match keys and of model "
        "checkpoint signatures; set it in production.",
    )
    identity_namespace: str = Field(
        "",
        description="Redis key prefix of the identity graph, feature snapshots and learner "
        "lease; empty means shinsa:<app id>.",
    )
    identity_fanout_limit: int = Field(
        3, ge=1, description="Distinct names a match key may link before it stops merging."
    )
    model_estimator: Literal["logreg", "tree", "forest"] = Field(
        "logreg", description="River estimator of a new model: logreg, tree or forest."
    )
    model_challenger: Literal["", "logreg", "tree", "forest"] = Field(
        "",
        description="Estimator of a challenger that learns beside the model and scores in "
        "shadow until `shinsa model promote` (empty: none).",
    )
    model_min_labels: int = Field(
        500, ge=0, description="Labels the model must learn before it decides (cold start)."
    )
    model_min_positives: int = Field(
        20, ge=0, description="Fraud labels among them before the model decides."
    )
    model_checkpoint_labels: int = Field(
        500, ge=1, description="The learner publishes a checkpoint every this many labels …"
    )
    model_checkpoint_seconds: float = Field(
        30.0, gt=0, description="… or this many seconds after the last, if it learned anything."
    )
    model_history: int = Field(
        100,
        ge=1,
        description="Checkpoints kept on the models topic for `shinsa model history` and "
        "`rollback` (older ones are deleted).",
    )
    snapshot_ttl_days: float = Field(
        60.0, gt=0, description="How long an order's feature snapshot waits for its outcome."
    )
    label_grace_seconds: float = Field(
        3600.0,
        ge=0,
        description="How long a label that arrives before its order's snapshot waits for it.",
    )
    learner: Literal["auto", "off"] = Field(
        "auto",
        description="auto: this worker may become the one learner (Redis lease); off: never.",
    )
    learner_lease_seconds: float = Field(
        15.0, gt=1, description="The learner's lease; a standby takes over after it lapses."
    )
    batch_size: int = Field(
        1000, ge=1, description="Most events per batch (the hot path: per Kafka transaction)."
    )
    batch_timeout: float = Field(
        0.05,
        gt=0,
        description="Control agents: seconds to wait to fill a batch; the hot path waits this "
        "long for a first message and never to fill a batch.",
    )

    @model_validator(mode="after")
    def _local_defaults(self) -> Settings:
        # frozen model: fill derived defaults once, at construction
        if not self.kafka_bootstrap:
            object.__setattr__(self, "kafka_bootstrap", f"127.0.0.1:{self.kafka_port}")
        if not self.identity_namespace:
            object.__setattr__(self, "identity_namespace", f"shinsa:{self.app_id}")
        if not self.redis_url:
            object.__setattr__(self, "redis_url", f"redis://127.0.0.1:{self.redis_port}/0")
        return self

    def topic(self, name: str) -> str:
        """Full topic name for a logical name such as 'orders'."""
        return f"{self.topic_prefix}{name}"

    @property
    def redis_host_port(self) -> tuple[str, int]:
        from urllib.parse import urlparse

        url = urlparse(self.redis_url)
        return url.hostname or "127.0.0.1", url.port or 6379


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (for the CLI and tests)."""
    return Settings(**overrides)  # type: ignore[arg-type]


def settings_for_cli() -> Settings:
    """Settings for a command: a bad SHINSA_* variable is a message to the user, not a trace."""
    from streams.errors import UserError

    try:
        return load_settings()
    except Exception as exc:  # pydantic ValidationError
        message = f"invalid configuration in SHINSA_* environment variables:\n{exc}"
        raise UserError(message) from None
