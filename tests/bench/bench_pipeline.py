"""Benchmark: one screening worker against bare forwarders, then its latency at paced rates.

    .venv/bin/python -m tests.bench.bench_pipeline [--orders 30000]      (`make bench`)

Needs the local stack (`shinsa stack up`). Every run uses a fresh topic prefix
(`bench-<unix time>.`). The simulated orders are produced once, before any consumer starts, so
each contender reads the same pre-loaded backlog, one contender at a time:

- aiokafka: consume → produce passthrough in this process, on uvloop; timed from the first
  message received to the last send acknowledged.
- confluent-kafka: the same passthrough as a plain batch loop on librdkafka (no transactions).
- faust forwarder: tests/bench/faust_forwarder.py in a subprocess (the product's Faust app and
  agent shape, minus the screening); timed by the Kafka timestamps of its first and last
  output message.
- pipeline: a real `shinsa worker` subprocess (transactional hot path, identity, Redis state,
  model, policy, traces); timed by the `decided_at` of the first and last decision.

Then the same worker gets paced phases, each below capacity: 200 orders/s, 1,000/s and 80 % of
the capacity the backlog measured. Latency is the wall-clock moment a read_committed consumer
sees an order's decision minus the order's Kafka timestamp (one host, one clock), with
p50 / p99 / p99.9 and the longest pause between two visible decisions.

Also times the hot path's own per-order work in-process (the worker's functions, no Kafka, no
Redis). Prints tables, the ratios and the targets of the issue, and as the last line one JSON
object with every number. The run's topics, consumer groups and Redis keys are deleted at the end
unless `--keep-topics`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rich import box
from rich.console import Console
from rich.table import Column, Table

from streams.clients import (
    Prepared,
    end_offsets,
    make_producer,
    prepare,
    produce_one,
    read_topic,
)
from streams.codec import SchemaRegistry
from streams.records import WALLET_KINDS
from streams.settings import Settings, load_settings
from streams.tools import stack
from streams.tools.cli.common import progress
from streams.tools.demo import percentile, start_worker, stop_worker, worker_env
from streams.tools.simulate import SimConfig, Simulator

REPO = Path(__file__).resolve().parents[2]
WARMUP_TOPIC = "bench-warmup"  # a paced producer's first message goes here (ready_producer)
SEED = 1  # paced phases use other seeds: fresh order ids (o-2-…) on the same merchant ids
TARGET_RATE = 5000.0  # orders/s per worker process
TARGET_P99_MS = 50.0  # order → decision at 1,000 orders/s
TARGET_PAUSE_MS = 200.0
SCREEN_SAMPLE = 3000  # orders timed through screen_order in-process

# a log or pipe gets 110 columns instead of rich's 80, which would wrap the table
console = Console(width=None if sys.stdout.isatty() else 110)


class BenchError(RuntimeError):
    """A phase of the benchmark failed; the message says which and where to look."""


@dataclass
class Measured:
    contender: str
    messages: int
    seconds: float
    timed_by: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "seconds": round(self.seconds, 4),
            "msgs_per_s": round(self.rate, 1),
            "timed_by": self.timed_by,
            **self.extra,
        }


# ---------------------------------------------------------------- setup


def create_output_topics(settings: Settings, names: Sequence[str]) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    new = [NewTopic(n, num_partitions=settings.partitions, replication_factor=1) for n in names]
    for topic, future in admin.create_topics(new, operation_timeout=30).items():
        try:
            future.result()
        except Exception as exc:
            raise BenchError(f"creating topic {topic} failed: {exc}") from None


def delete_run(
    settings: Settings, run: str | tuple[str, ...], groups: Sequence[str] = ()
) -> list[str]:
    """Delete every topic whose name starts with `run` (a prefix, or any of several: ours and
    Faust's internal ones) and the consumer `groups`."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    with contextlib.suppress(Exception):
        for future in admin.delete_consumer_groups(list(groups), request_timeout=15).values():
            with contextlib.suppress(Exception):
                future.result()
    topics = [t for t in admin.list_topics(timeout=15).topics if t.startswith(run)]
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result()
    return topics


def drop_redis_namespace(settings: Settings) -> int:
    """Delete the run's Redis keys (graph, state, snapshots, decisions): a run leaves ~150,000."""
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        keys = list(client.scan_iter(f"{settings.identity_namespace}:*", count=10_000))
        for start in range(0, len(keys), 5000):
            client.delete(*keys[start : start + 5000])
        return len(keys)
    finally:
        client.close()


def generate(
    registry: SchemaRegistry, orders: int, seed: int, what: str
) -> tuple[list[Prepared], list[Prepared]]:
    """Merchants and orders of the simulator (no payments, logins, outcomes), Avro-encoded."""
    with console.status(f"{what}: simulating {orders:,} orders (seed {seed})"):
        sim = Simulator(SimConfig(orders=orders, fraud_rate=0.05, seed=seed))
        values = [e.value for e in sim.events() if e.topic == "orders"]
    merchants = [prepare(registry, "merchants", m) for m in sim.merchants]
    encoded = []
    with progress() as bar:
        task = bar.add_task(f"{what}: encoding", total=len(values), rate="")
        for i, value in enumerate(values, 1):
            encoded.append(prepare(registry, "orders", value))
            if i % 1000 == 0 or i == len(values):
                bar.update(task, completed=i)
    return merchants, encoded


def generate_wallet(
    registry: SchemaRegistry, payments: int, seed: int
) -> tuple[list[Prepared], list[Prepared], list[Prepared]]:
    """Simulated wallet traffic, Avro-encoded: (accounts, logins, wallet payments)."""
    with console.status(f"wallet: simulating {payments:,} payments (seed {seed})"):
        cfg = SimConfig(orders=max(300, payments // 3), seed=seed, wallet_payments=payments)
        events = [
            e
            for e in Simulator(cfg).events()
            if e.topic in ("accounts", "logins")
            or (e.topic == "payments" and e.value["kind"] in WALLET_KINDS)
        ]
        out: dict[str, list[Prepared]] = {"accounts": [], "logins": [], "payments": []}
        for e in events:
            out[e.topic].append(prepare(registry, e.topic, e.value))
    return out["accounts"], out["logins"], out["payments"]


def ready_producer(settings: Settings) -> Producer:
    """A producer already connected and holding its idempotent producer id. A new producer's
    first messages wait ~0.5 s for both after their timestamps were taken: measured, that was
    the whole p99 of the 200/s phase, a delay of the bench's producer, not of the worker."""
    topic = settings.topic(WARMUP_TOPIC)
    if (
        topic
        not in AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        .list_topics(timeout=15)
        .topics
    ):
        create_output_topics(settings, [topic])
    producer = make_producer(settings)
    produce_one(producer, topic, b"warm-up", b"", lambda *_: None)
    if producer.flush(30):
        raise BenchError(f"the warm-up message to {topic} was not acked")
    return producer


def produce(
    settings: Settings,
    topic: str,
    items: Sequence[Prepared],
    what: str,
    rate: float = 0.0,
    producer: Producer | None = None,
) -> dict[bytes, int]:
    """Send to `topic` (at `rate` per second if given); each key's Kafka timestamp (ms)."""
    producer = producer or make_producer(settings)
    stamps: dict[bytes, int] = {}
    failed: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(str(err))
        else:
            stamps[msg.key()] = msg.timestamp()[1]

    started = time.monotonic()
    with progress() as bar:
        task = bar.add_task(what, total=len(items), rate="")
        for i, item in enumerate(items, 1):
            if rate:
                ahead = (i - 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            produce_one(producer, topic, item.key, item.value, delivered)  # type: ignore[arg-type]
            if i % 250 == 0 or i == len(items):
                producer.poll(0)
                elapsed = max(time.monotonic() - started, 1e-6)
                bar.update(task, completed=i, rate=f"{i / elapsed:,.0f} msg/s")
        remaining = producer.flush(60)
    if remaining or failed:
        raise BenchError(
            f"{remaining + len(failed)} messages to {topic} not acknowledged "
            f"({'; '.join(failed[:3]) or 'flush timed out'})"
        )
    return stamps


# ---------------------------------------------------------------- watching topics


class EndOffsets:
    """Messages on some topics, from their partitions' end offsets: counts without reading."""

    def __init__(self, settings: Settings, topics: Sequence[str]) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": settings.kafka_bootstrap, "group.id": "bench-watch"}
        )
        meta = self.consumer.list_topics(timeout=15).topics
        self.partitions = [TopicPartition(t, p) for t in topics for p in sorted(meta[t].partitions)]

    def by_partition(self) -> dict[tuple[str, int], int]:
        return {
            (tp.topic, tp.partition): self.consumer.get_watermark_offsets(tp, timeout=10)[1]
            for tp in self.partitions
        }

    def total(self) -> int:
        return sum(self.by_partition().values())

    def close(self) -> None:
        self.consumer.close()


def wait_for(
    watch: EndOffsets | CommittedCount,
    target: int,
    what: str,
    timeout: float,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
    base: int = 0,
) -> float:
    """Poll until `target` messages are on the watched topics (`base` of them already were);
    returns the seconds until the first new one appeared."""
    started = time.monotonic()
    first_seen = None
    with progress() as bar:
        task = bar.add_task(what, total=target - base, rate="")
        while True:
            done = watch.total() - base
            now = time.monotonic()
            if done and first_seen is None:
                first_seen = now
            rate = done / (now - first_seen) if first_seen and now > first_seen else 0
            bar.update(task, completed=min(done, target - base), rate=f"{rate:,.0f} msg/s")
            if done >= target - base:
                return (first_seen or now) - started
            if proc is not None and proc.poll() is not None:
                raise BenchError(f"{what}: process exited with code {proc.returncode}; see {log}")
            if now - started > timeout:
                raise BenchError(
                    f"{what}: only {done:,} of {target - base:,} in {timeout:.0f}s; see {log}"
                )
            time.sleep(0.25)


# ---------------------------------------------------------------- reference A: aiokafka


async def aiokafka_passthrough(
    settings: Settings, source: str, target: str, n: int, group: str, timeout: float
) -> float:
    """Forward `n` messages source → target (same key); seconds from first receipt to last ack."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    # acks=all as the worker's producer (producer_acks=-1), linger as its producer_linger
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    forwarded, first = 0, None
    deadline = time.monotonic() + timeout
    try:
        with progress() as bar:
            task = bar.add_task("aiokafka passthrough", total=n, rate="")
            while forwarded < n:
                if time.monotonic() > deadline:
                    raise BenchError(f"aiokafka: only {forwarded:,} of {n:,} in {timeout:.0f}s")
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                if not batches:
                    continue
                if first is None:
                    first = time.perf_counter()
                futures = [
                    await producer.send(target, m.value, key=m.key)
                    for messages in batches.values()
                    for m in messages
                ]
                await asyncio.gather(*futures)
                forwarded += len(futures)
                elapsed = time.perf_counter() - first
                bar.update(task, completed=forwarded, rate=f"{forwarded / elapsed:,.0f} msg/s")
        last = time.perf_counter()
    finally:
        await consumer.stop()
        await producer.stop()
    if forwarded != n:
        raise BenchError(f"aiokafka: forwarded {forwarded:,}, expected {n:,} (stray messages?)")
    assert first is not None
    return last - first


def run_aiokafka(settings: Settings, target: str, n: int, group: str, timeout: float) -> Measured:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        seconds = runner.run(
            aiokafka_passthrough(settings, settings.topic("orders"), target, n, group, timeout)
        )
    return Measured(
        "aiokafka passthrough", n, seconds, "first message received → last send acked (wall clock)"
    )


# ---------------------------------------------------------------- reference C: confluent-kafka


def run_confluent(settings: Settings, target: str, n: int, group: str, timeout: float) -> Measured:
    """Forward `n` messages orders → target with plain confluent-kafka (consume a batch, produce
    each, commit offsets): the floor of what a Python batch loop on librdkafka costs here."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    producer = make_producer(settings)
    consumer.subscribe([settings.topic("orders")])
    forwarded, first = 0, None
    deadline = time.monotonic() + timeout
    try:
        with progress() as bar:
            task = bar.add_task("confluent-kafka passthrough", total=n, rate="")
            while forwarded < n:
                if time.monotonic() > deadline:
                    raise BenchError(f"confluent: only {forwarded:,} of {n:,} in {timeout:.0f}s")
                messages = consumer.consume(1000, 0.5)
                if not messages:
                    continue
                if first is None:
                    first = time.perf_counter()
                for m in messages:
                    while True:
                        try:
                            producer.produce(target, m.value(), m.key())
                            break
                        except BufferError:
                            producer.poll(0.01)
                producer.poll(0)
                consumer.commit(asynchronous=True)
                forwarded += len(messages)
                elapsed = time.perf_counter() - first
                bar.update(task, completed=forwarded, rate=f"{forwarded / elapsed:,.0f} msg/s")
            if producer.flush(60):
                raise BenchError("confluent: messages not acknowledged")
        last = time.perf_counter()
    finally:
        consumer.close()
    assert first is not None
    return Measured(
        "confluent-kafka passthrough",
        n,
        last - first,
        "first message received → last send acked (wall clock)",
    )


# ---------------------------------------------------------------- reference B: Faust forwarder


def start_forwarder(prefix: str, app_id: str, target: str, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "SHINSA_TOPIC_PREFIX": prefix,
        "SHINSA_APP_ID": app_id,
        "SHINSA_METRICS_PORT": "0",
        "BENCH_FORWARD_TO": target,
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.bench.faust_forwarder"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def output_timestamps(settings: Settings, topic: str, n: int) -> list[int]:
    """Kafka timestamps of the `n` forwarded messages, checking each order came once."""
    messages = [(msg.key(), msg.timestamp()[1]) for msg in read_topic(settings, topic)]
    distinct = len({key for key, _ in messages})
    if len(messages) != n or distinct != n:
        raise BenchError(f"{topic}: {len(messages):,} messages, {distinct:,} keys; expected {n:,}")
    return [stamp for _, stamp in messages]


def span_seconds(stamps_ms: Sequence[float]) -> float:
    return (max(stamps_ms) - min(stamps_ms)) / 1000 if stamps_ms else float("nan")


# ---------------------------------------------------------------- the pipeline


class CommittedCount:
    """Messages on some topics as a read_committed consumer sees them. End offsets would
    over-count a transactional producer's topics: each commit adds a marker to every partition
    it wrote."""

    def __init__(self, settings: Settings, topics: Sequence[str]) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": "bench-count",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        meta = self.consumer.list_topics(timeout=15).topics
        self.consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in meta[t].partitions]
        )
        self.count = 0

    def total(self) -> int:
        while True:
            got = [m for m in self.consumer.consume(10_000, 0.05) if m.error() is None]
            self.count += len(got)
            if not got:
                return self.count

    def close(self) -> None:
        self.consumer.close()


class Receipts(threading.Thread):
    """A read_committed consumer of the decisions topic from its current end: the wall-clock
    moment each order's decision became visible to a consumer (the latency a checkout sees)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        topic = settings.topic("decisions")
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": "bench-receipts",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                # a fetch waiting in the broker is not woken when a transaction commits (the
                # stable offset moves, no bytes arrive): it waits all of fetch.wait.max.ms
                # (500 ms by default). A checkout reading decisions sets it low, as here.
                "fetch.wait.max.ms": 5,
            }
        )
        meta = self.consumer.list_topics(topic, timeout=15).topics[topic]
        ends = [
            TopicPartition(
                topic,
                p,
                self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1],
            )
            for p in sorted(meta.partitions)
        ]
        self.consumer.assign(ends)
        self.seen: dict[bytes, float] = {}  # order id → ms when first visible
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            # poll returns at the first message; consume(n, t) would wait t to fill n
            first = self.consumer.poll(0.05)
            if first is None:
                continue
            for msg in (first, *self.consumer.consume(1000, 0)):
                if msg.error() is None:
                    self.seen.setdefault(msg.key(), time.time() * 1000)
        self.consumer.close()

    def stop(self) -> None:
        self.stopping = True
        self.join(10)


@dataclass
class Phase:
    """Orders produced at a steady rate below capacity, and when their decisions were seen."""

    name: str
    rate: float
    orders: int
    achieved_rate: float
    latency_ms: list[float]  # decision visible (read_committed) − the order's Kafka timestamp
    longest_pause_ms: float  # between consecutive decisions becoming visible

    def as_json(self) -> dict[str, Any]:
        lat = self.latency_ms
        return {
            "target_rate_per_s": round(self.rate, 1),
            "achieved_rate_per_s": round(self.achieved_rate, 1),
            "orders": self.orders,
            "p50_ms": round(percentile(lat, 0.5), 1),
            "p99_ms": round(percentile(lat, 0.99), 1),
            "p999_ms": round(percentile(lat, 0.999), 1),
            "max_ms": round(max(lat), 1) if lat else float("nan"),
            "longest_pause_ms": round(self.longest_pause_ms, 1),
        }


@dataclass
class PipelineRun:
    backlog: list[dict[str, Any]]  # decoded decisions of the backlog orders
    backlog_stamps: list[int]  # their Kafka timestamps
    dead_letters: int
    startup_s: float
    phases: list[Phase] = field(default_factory=list)
    wallet: list[dict[str, Any]] = field(default_factory=list)  # a backlog of wallet payments


def paced_phase(
    settings: Settings,
    watch: CommittedCount,
    base: int,
    name: str,
    orders: Sequence[Prepared],
    rate: float,
    worker: subprocess.Popen,
    log: Path,
    timeout: float,
) -> Phase:
    receipts = Receipts(settings)
    receipts.start()
    try:
        producer = ready_producer(settings)
        started = time.monotonic()
        stamps = produce(
            settings,
            settings.topic("orders"),
            orders,
            f"{name}: orders at {rate:,.0f}/s",
            rate,
            producer,
        )
        achieved = len(orders) / (time.monotonic() - started)
        wait_for(watch, base + len(orders), f"{name}: decisions", timeout, worker, log, base)
        deadline = time.monotonic() + 30
        while len(receipts.seen) < len(stamps) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        receipts.stop()
    seen = receipts.seen
    if len(seen) < len(stamps):
        raise BenchError(f"{name}: {len(seen):,} of {len(stamps):,} decisions seen; see {log}")
    latency = [seen[key] - stamp for key, stamp in stamps.items()]
    moments = sorted([min(stamps.values()), *seen.values()])
    pause = max((b - a for a, b in pairwise(moments)), default=0.0)
    return Phase(name, rate, len(orders), achieved, latency, pause)


def run_pipeline(
    settings: Settings,
    registry: SchemaRegistry,
    n: int,
    phases: Sequence[tuple[str, float, int, int]],
    log: Path,
    procs: list[subprocess.Popen],
    timeout: float,
    wallet: int = 0,
) -> PipelineRun:
    """The backlog at full speed, then each paced phase (name, rate, orders, seed) in turn; a
    rate of 0 means 80 % of the capacity the backlog measured; then a backlog of `wallet`
    wallet payments."""
    worker = start_worker(settings, log, env=worker_env(settings))
    procs.append(worker)
    watch = CommittedCount(settings, [settings.topic("decisions"), settings.topic("dlq")])
    try:
        startup = wait_for(watch, n, "pipeline: backlog", timeout, worker, log)
        time.sleep(0.5)  # idle before the paced phase; no stray decision is expected
        if watch.total() != n:
            raise BenchError(f"pipeline: {watch.total():,} results for {n:,} orders; see {log}")
        backlog, stamps = [], []
        for msg in read_topic(settings, settings.topic("decisions")):
            backlog.append(registry.decode("Decision", msg.value()))
            stamps.append(msg.timestamp()[1])
        dead = watch.total() - len(backlog)
        distinct = len({d["order_id"] for d in backlog})
        if distinct != len(backlog) or distinct + dead != n:
            raise BenchError(
                f"pipeline backlog: {len(backlog):,} decisions ({distinct:,} distinct) and "
                f"{dead} dead letters for {n:,} orders"
            )
        run = PipelineRun(backlog, stamps, dead, startup)
        capacity = len(backlog) / max(backlog_seconds(backlog), 1e-3)
        for name, rate, count, seed in phases:
            rate = rate or round(0.8 * capacity, -1)
            count = count or int(rate * 10)
            _, orders = generate(registry, count, seed, name)
            base = watch.total()
            run.phases.append(
                paced_phase(settings, watch, base, name, orders, rate, worker, log, timeout)
            )
        if wallet:
            run.wallet = wallet_backlog(settings, registry, watch, wallet, worker, log, timeout)
    finally:
        watch.close()
    stop_worker(worker)
    return run


def wallet_backlog(
    settings: Settings,
    registry: SchemaRegistry,
    watch: CommittedCount,
    n: int,
    worker: subprocess.Popen,
    log: Path,
    timeout: float,
) -> list[dict[str, Any]]:
    """Accounts and logins first (the agents keep them in Redis), then `n` wallet payments at
    once: their decisions (subject PAYMENT)."""
    accounts, logins, payments = generate_wallet(registry, n, SEED + 7)
    produce(settings, settings.topic("accounts"), accounts, "wallet: accounts")
    produce(settings, settings.topic("logins"), logins, "wallet: logins")
    time.sleep(5)  # the accounts and logins agents apply them (a Faust batch each)
    start = end_offsets(settings, settings.topic("decisions"))
    base = watch.total()
    produce(settings, settings.topic("payments"), payments, "wallet: payments backlog")
    wait_for(watch, base + len(payments), "wallet: decisions", timeout, worker, log, base)
    decided = [
        registry.decode("Decision", m.value())
        for m in read_topic(settings, settings.topic("decisions"), start=start)
    ]
    decided = [d for d in decided if d["subject"] == "PAYMENT"]
    if len({d["payment_id"] for d in decided}) != len(payments):
        raise BenchError(f"wallet: {len(decided):,} decisions for {len(payments):,} payments")
    return decided


def backlog_seconds(backlog: Sequence[dict[str, Any]]) -> float:
    decided = [d["decided_at"] for d in backlog]
    return (max(decided) - min(decided)).total_seconds()


def pipeline_measured(run: PipelineRun) -> Measured:
    backlog_lat = [d["latency_ingest_ms"] for d in run.backlog]
    by_stamps = span_seconds(run.backlog_stamps)
    return Measured(
        "shinsa pipeline",
        len(run.backlog),
        backlog_seconds(run.backlog),
        "decided_at of the first and last decision",
        {
            "msgs_per_s_by_kafka_timestamps": round(len(run.backlog) / by_stamps, 1),
            "dead_letters": run.dead_letters,
            "startup_s": round(run.startup_s, 2),
            "backlog_latency_ingest_ms": {
                "p50": round(percentile(backlog_lat, 0.5), 1),
                "p99": round(percentile(backlog_lat, 0.99), 1),
            },
            "paced": {p.name: p.as_json() for p in run.phases},
        },
    )


# ---------------------------------------------------------------- in-process screening cost


def screen_cost(
    settings: Settings, orders: Sequence[Prepared], merchants: Sequence[Prepared]
) -> Measured:
    """µs per order of the hot path's own work, through the same functions the worker runs
    (accept_order, identity_lookup, screen_batch: decode, validate, attributes, identity keys,
    features, score, contributions, decide, trace, Decision + trace encode, metrics), without
    Kafka and without Redis (the identity script and state round trips)."""
    from agents.attributes import order_attributes
    from agents.enrich import enrich_order
    from agents.features import order_features
    from agents.intake import Accepted, accept_order, identity_lookup
    from agents.merchants import apply_merchant
    from agents.model import ModelState
    from agents.policy import DEFAULT_POLICY_SET
    from agents.screen import Candidate, Outputs, Rules, screen_batch
    from agents.state import Loaded
    from agents.validate import decode_event
    from streams.txloop import Received

    registry = SchemaRegistry(settings.schema_dir)
    table: dict[str, Any] = {}
    for m in merchants:
        apply_merchant(table, m.key, decode_event(registry, "Merchant", m.value, 65536))
    raws = [o.value for o in orders]
    secret = b"bench"
    identity = {
        "identity_id": "i1",
        "new": False,
        "merged": 0,
        "first_seen_ms": 0,
        "orders": 2,
        "names": 1,
        "addresses": 1,
        "phones": 1,
        "emails": 1,
        "new_variation": False,
        "saturated_keys": 0,
    }
    # a model that has learned (so contributions are computed, as in a warm worker)
    model = ModelState()
    for i, raw in enumerate(raws[:1000]):
        order = decode_event(registry, "Order", raw, None)
        x = order_features(enrich_order(order, table, identity, order_attributes(order)))
        model.learn(x, int(i % 50 == 0), 0.5)
    out = Outputs(registry, "decisions", "traces", "dlq")
    stamp = int(time.time() * 1000)
    messages = [Received("orders", 0, i, b"k", raw, stamp) for i, raw in enumerate(raws)]

    def run_all() -> float:
        now = datetime.now(UTC)
        rules = Rules(now, table, DEFAULT_POLICY_SET, None, model, True, secret)
        dead: list[Any] = []
        started = time.perf_counter()
        candidates = []
        for msg in messages:
            accepted = accept_order(msg, now, registry, settings.max_event_bytes, "dlq")
            assert isinstance(accepted, Accepted)
            lookup = identity_lookup(accepted, secret, dead, "dlq")
            assert lookup is not None
            candidates.append(Candidate(msg, accepted.order, identity, accepted.attributes or {}))
        # one identity per 50 orders: per-identity velocity as in a real batch
        for i, c in enumerate(candidates):
            c.identity = {**identity, "identity_id": f"i{i // 50}"}
        sent, _ = screen_batch(candidates, Loaded({}, {}, [0] * len(candidates)), rules, out)
        assert len(sent) == 2 * len(candidates)
        return (time.perf_counter() - started) / len(raws) * 1e6

    run_all()  # warm up
    total_us = min(run_all() for _ in range(3))
    return Measured(
        "hot path in-process",
        len(raws),
        total_us * len(raws) / 1e6,
        f"{len(raws):,} orders through accept_order, identity_lookup and screen_batch, one "
        "thread, no Kafka, no Redis (best of 3)",
        {"us_per_order": round(total_us, 1)},
    )


# ---------------------------------------------------------------- report


def fmt_p(lat: dict[str, float]) -> str:
    return f"{lat['p50']:,.0f} / {lat['p99']:,.0f}"


def report(results: dict[str, Measured], args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    aio, conf, faust, pipe, screen = (
        results["aiokafka"],
        results["confluent"],
        results["faust_forwarder"],
        results["pipeline"],
        results["screen_order"],
    )
    table = Table(
        "contender",
        Column("messages", justify="right"),
        Column("seconds", justify="right"),
        Column("msgs/s", justify="right"),
        Column("µs/msg", justify="right"),
        title=f"Shinsa pipeline benchmark: {args.orders:,} orders, topics {prefix}*",
        box=box.SIMPLE_HEAD,
    )
    for m in (
        aio,
        conf,
        faust,
        pipe,
        *([results["wallet"]] if "wallet" in results else []),
        screen,
    ):
        table.add_row(
            m.contender,
            f"{m.messages:,}",
            f"{m.seconds:.2f}",
            f"{m.rate:,.0f}",
            f"{1e6 / m.rate:,.0f}",
        )
    console.print(table)
    paced = pipe.extra["paced"]
    latency = Table(
        "paced phase",
        Column("target/s", justify="right"),
        Column("achieved/s", justify="right"),
        Column("orders", justify="right"),
        Column("p50 ms", justify="right"),
        Column("p99 ms", justify="right"),
        Column("p99.9 ms", justify="right"),
        Column("max ms", justify="right"),
        Column("longest pause ms", justify="right"),
        title="order → decision visible to a read_committed consumer (wall clock, one host)",
        box=box.SIMPLE_HEAD,
    )
    for name, p in paced.items():
        latency.add_row(
            name,
            f"{p['target_rate_per_s']:,.0f}",
            f"{p['achieved_rate_per_s']:,.0f}",
            f"{p['orders']:,}",
            f"{p['p50_ms']:,.1f}",
            f"{p['p99_ms']:,.1f}",
            f"{p['p999_ms']:,.1f}",
            f"{p['max_ms']:,.1f}",
            f"{p['longest_pause_ms']:,.0f}",
        )
    console.print(latency)

    vs_faust, vs_conf, vs_aio = pipe.rate / faust.rate, pipe.rate / conf.rate, pipe.rate / aio.rate
    rate_ok = pipe.rate >= TARGET_RATE
    at_1000 = paced.get("1000/s")
    p99_ok = at_1000 is not None and at_1000["p99_ms"] < TARGET_P99_MS
    pause_ok = all(p["longest_pause_ms"] <= TARGET_PAUSE_MS for p in paced.values())

    def mark(ok: bool) -> str:
        return "[green]met[/green]" if ok else "[red]NOT met[/red]"

    notes = [
        *(
            f"[dim]timed by[/dim] {m.contender}: {m.timed_by}"
            for m in (aio, conf, faust, pipe, screen)
        ),
        f"[dim]pipeline[/dim] backlog by Kafka timestamps of the decisions "
        f"{pipe.extra['msgs_per_s_by_kafka_timestamps']:,.0f} msgs/s; dead letters "
        f"{pipe.extra['dead_letters']}; worker start → first decision "
        f"{pipe.extra['startup_s']:.1f}s; backlog latency_ingest p50 / p99 "
        f"{fmt_p(pipe.extra['backlog_latency_ingest_ms'])} ms (queueing)",
        f"[dim]in-process[/dim] {screen.extra['us_per_order']:.0f} µs/order: intake, identity "
        f"keys, screen, Decision + trace encode, metrics (no Kafka, no Redis)",
        f"[bold]ratios[/bold] pipeline / faust forwarder [bold]{vs_faust:.2f}[/bold], "
        f"pipeline / confluent-kafka passthrough [bold]{vs_conf:.2f}[/bold], "
        f"pipeline / aiokafka [bold]{vs_aio:.2f}[/bold]",
        f"[bold]targets[/bold] ≥ {TARGET_RATE:,.0f} orders/s per worker process: "
        f"{mark(rate_ok)} ({pipe.rate:,.0f}/s); p99 < {TARGET_P99_MS:.0f} ms at 1,000/s: "
        f"{mark(p99_ok)}; no pause over {TARGET_PAUSE_MS:.0f} ms: {mark(pause_ok)}",
    ]
    for note in notes:
        console.print(note)
    return {
        "orders": args.orders,
        "topic_prefix": prefix,
        "aiokafka": aio.as_json(),
        "confluent": conf.as_json(),
        "faust_forwarder": faust.as_json(),
        "pipeline": pipe.as_json(),
        "screen_order": screen.as_json(),
        "ratios": {
            "pipeline_vs_faust_forwarder": round(vs_faust, 3),
            "pipeline_vs_confluent": round(vs_conf, 3),
            "pipeline_vs_aiokafka": round(vs_aio, 3),
        },
        "targets": {
            "pipeline_ge_5000_per_s": rate_ok,
            "p99_lt_50ms_at_1000_per_s": p99_ok,
            "no_pause_over_200ms": pause_ok,
        },
    }


# ---------------------------------------------------------------- main


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=positive, default=30_000, help="backlog orders (30000)")
    parser.add_argument(
        "--phase-seconds", type=positive, default=10, help="seconds of each paced phase (10)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per phase")
    parser.add_argument(
        "--wallet", type=int, default=10_000, help="wallet payments backlog (10000; 0: none)"
    )
    parser.add_argument("--keep-topics", action="store_true", help="keep the run's topics")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = f"bench-{int(time.time())}"
    prefix = f"{run}."
    settings = load_settings(topic_prefix=prefix, app_id=f"{run}-shinsa")
    aio_out, faust_out = f"{prefix}bench-aiokafka-out", f"{prefix}bench-faust-out"
    conf_out, conf_group = f"{prefix}bench-confluent-out", f"{run}-confluent"
    aio_group, faust_app = f"{run}-aiokafka", f"{run}-faust-forwarder"
    logs = settings.data_dir / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    results: dict[str, Measured] = {}
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    if not stack.port_open(host, int(port)):
        console.print(
            f"[red]Kafka does not answer on {settings.kafka_bootstrap}[/red]: run "
            "`.venv/bin/shinsa stack up` first"
        )
        return 2
    console.rule(f"[bold]Shinsa benchmark: {args.orders:,} orders, topics {prefix}*")
    s = args.phase_seconds
    phases = [
        ("200/s", 200.0, 200 * s, 2),
        ("1000/s", 1000.0, 1000 * s, 3),
        ("80% capacity", 0, 0, 4),
    ]
    try:
        stack.create_topics(settings)
        create_output_topics(settings, [aio_out, faust_out, conf_out])
        registry = SchemaRegistry(settings.schema_dir)
        merchants, orders = generate(registry, args.orders, SEED, "backlog")
        produce(settings, settings.topic("merchants"), merchants, "producing merchants")
        produce(settings, settings.topic("orders"), orders, "producing the backlog")

        results["screen_order"] = screen_cost(settings, orders[:SCREEN_SAMPLE], merchants)
        results["aiokafka"] = run_aiokafka(settings, aio_out, len(orders), aio_group, args.timeout)
        results["confluent"] = run_confluent(
            settings, conf_out, len(orders), conf_group, args.timeout
        )

        log = logs / f"{run}-faust-forwarder.log"
        forwarder = start_forwarder(prefix, faust_app, faust_out, log)
        procs.append(forwarder)
        watch = EndOffsets(settings, [faust_out])
        try:
            wait_for(watch, len(orders), "faust forwarder", args.timeout, forwarder, log)
        finally:
            watch.close()
        stop_worker(forwarder)
        stamps = output_timestamps(settings, faust_out, len(orders))
        results["faust_forwarder"] = Measured(
            "faust forwarder",
            len(stamps),
            span_seconds(stamps),
            "Kafka timestamps of the first and last output message",
        )

        pipeline = run_pipeline(
            settings,
            registry,
            len(orders),
            phases,
            logs / f"{run}-worker.log",
            procs,
            args.timeout,
            args.wallet,
        )
        results["pipeline"] = pipeline_measured(pipeline)
        if pipeline.wallet:
            results["wallet"] = Measured(
                "shinsa wallet payments",
                len(pipeline.wallet),
                backlog_seconds(pipeline.wallet),
                "decided_at of the first and last payment decision (a backlog)",
            )
        summary = report(results, args, prefix)
    except BenchError as exc:
        console.print(f"[red]benchmark failed:[/red] {exc}")
        return 1
    finally:
        for proc in procs:
            stop_worker(proc)
        if not args.keep_topics:
            with contextlib.suppress(Exception):
                drop_redis_namespace(settings)
            with contextlib.suppress(Exception):
                delete_run(
                    settings,
                    run,
                    [
                        aio_group,
                        conf_group,
                        faust_app,
                        settings.app_id,
                        f"{settings.app_id}.screen",
                    ],
                )
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
