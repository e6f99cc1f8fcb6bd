"""Benchmark: one screening worker against a bare aiokafka and a bare Faust forwarder.

    .venv/bin/python -m tests.bench.bench_pipeline [--orders 30000]      (`make bench`)

Needs the local stack (`shinsa stack up`). Every run uses a fresh topic prefix
(`bench-<unix time>.`). The simulated orders are produced once, before any consumer starts, so
each contender reads the same pre-loaded backlog, one contender at a time:

- aiokafka: consume → produce passthrough in this process, on uvloop; timed from the first
  message received to the last send acknowledged.
- faust forwarder: tests/bench/faust_forwarder.py in a subprocess (the product's Faust app and
  agent shape, minus the screening); timed by the Kafka timestamps of its first and last
  output message.
- pipeline: a real `shinsa worker` subprocess; timed by the `decided_at` of the first and last
  decision. With a backlog, `latency_ingest_ms` is mostly queueing, so a paced phase then
  produces more orders below capacity and reports their decision latency on its own.

Also times the per-order work of both agents (intake, screen) in-process, without Kafka.
Prints a table, the ratios and the targets of the issue, and as the last line one JSON object
with every number. The run's topics and consumer groups are deleted at the end unless
`--keep-topics`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rich import box
from rich.console import Console
from rich.table import Column, Table

from streams import stack
from streams.cli import progress
from streams.clients import Prepared, make_producer, prepare, produce_one, read_topic
from streams.codec import SchemaRegistry
from streams.demo import percentile, start_worker, stop_worker
from streams.settings import Settings, load_settings
from streams.simulate import SimConfig, Simulator

REPO = Path(__file__).resolve().parents[2]
SEED = 1
PACED_SEED = 2  # another seed: fresh order ids (o-2-…) on the same merchant ids (m0000…)
TARGET_RATIO = 0.5  # pipeline ≥ 0.5 × the Faust forwarder
TARGET_RATE = 5000.0  # orders/s per worker process
SCREEN_SAMPLE = 3000  # orders timed through screen_order in-process
STALL_MS = 500  # a longer pause between decisions in the paced phase is flagged

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


def delete_run(settings: Settings, run: str, groups: Sequence[str]) -> list[str]:
    """Delete every topic whose name starts with `run` (ours and Faust's internal ones)."""
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


def produce(
    settings: Settings, topic: str, items: Sequence[Prepared], what: str, rate: float = 0.0
) -> dict[bytes, int]:
    """Send to `topic` (at `rate` per second if given); each key's Kafka timestamp (ms)."""
    producer = make_producer(settings)
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
    watch: EndOffsets,
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


@dataclass
class PipelineRun:
    backlog: list[dict[str, Any]]  # decoded decisions of the backlog orders
    backlog_stamps: list[int]  # their Kafka timestamps
    paced: list[dict[str, Any]]
    paced_e2e_ms: list[float]  # decision's Kafka timestamp − the order's
    paced_start_ms: int  # Kafka timestamp of the first paced order
    paced_rate: float
    dead_letters: int
    startup_s: float


def run_pipeline(
    settings: Settings,
    registry: SchemaRegistry,
    n: int,
    paced_orders: Sequence[Prepared],
    rate: float,
    log: Path,
    procs: list[subprocess.Popen],
    timeout: float,
) -> PipelineRun:
    env = {
        "SHINSA_TOPIC_PREFIX": settings.topic_prefix,
        "SHINSA_APP_ID": settings.app_id,
        "SHINSA_METRICS_PORT": "0",
    }
    worker = start_worker(settings, log, env=env)
    procs.append(worker)
    watch = EndOffsets(settings, [settings.topic("decisions"), settings.topic("dlq")])
    try:
        startup = wait_for(watch, n, "pipeline: backlog", timeout, worker, log)
        time.sleep(0.5)  # idle before the paced phase; no stray decision is expected
        if watch.total() != n:
            raise BenchError(f"pipeline: {watch.total():,} results for {n:,} orders; see {log}")
        started = time.monotonic()
        order_stamps = produce(
            settings,
            settings.topic("orders"),
            paced_orders,
            f"pipeline: paced orders at {rate:,.0f}/s",
            rate=rate,
        )
        paced_rate = len(paced_orders) / (time.monotonic() - started)
        wait_for(watch, n + len(paced_orders), "pipeline: paced decisions", timeout, worker, log, n)
    finally:
        watch.close()
    stop_worker(worker)

    paced_ids = {p.key.decode() for p in paced_orders if p.key}
    backlog, stamps, paced, e2e = [], [], [], []
    for msg in read_topic(settings, settings.topic("decisions")):
        decision = registry.decode("Decision", msg.value())
        if decision["order_id"] in paced_ids:
            paced.append(decision)
            e2e.append(msg.timestamp()[1] - order_stamps[msg.key()])
        else:
            backlog.append(decision)
            stamps.append(msg.timestamp()[1])
    dead = sum(1 for _ in read_topic(settings, settings.topic("dlq")))
    for what, got, want in (("backlog", backlog, n), ("paced", paced, len(paced_orders))):
        distinct = len({d["order_id"] for d in got})
        if distinct + (dead if what == "backlog" else 0) != want or distinct != len(got):
            raise BenchError(
                f"pipeline {what}: {len(got):,} decisions ({distinct:,} distinct) and "
                f"{dead} dead letters for {want:,} orders"
            )
    first_order = min(order_stamps.values())
    return PipelineRun(backlog, stamps, paced, e2e, first_order, paced_rate, dead, startup)


def pipeline_measured(run: PipelineRun) -> Measured:
    decided = [d["decided_at"] for d in run.backlog]
    seconds = (max(decided) - min(decided)).total_seconds()
    backlog_lat = [d["latency_ingest_ms"] for d in run.backlog]
    paced_lat = [d["latency_ingest_ms"] for d in run.paced]
    by_stamps = span_seconds(run.backlog_stamps)
    # Below capacity a batch follows the first order or the previous batch within ~0.1 s; a
    # longer pause is a stall (seen intermittently in the Faust forwarder too).
    paced_at = [run.paced_start_ms / 1000]
    paced_at += sorted({d["decided_at"].timestamp() for d in run.paced})
    pause = max((b - a for a, b in pairwise(paced_at)), default=0.0)
    return Measured(
        "shinsa pipeline",
        len(run.backlog),
        seconds,
        "decided_at of the first and last decision",
        {
            "msgs_per_s_by_kafka_timestamps": round(len(run.backlog) / by_stamps, 1),
            "dead_letters": run.dead_letters,
            "startup_s": round(run.startup_s, 2),
            "backlog_latency_ingest_ms": {
                "p50": round(percentile(backlog_lat, 0.5), 1),
                "p99": round(percentile(backlog_lat, 0.99), 1),
            },
            "paced": {
                "orders": len(run.paced),
                "rate_per_s": round(run.paced_rate, 1),
                "latency_ingest_ms": {
                    "p50": round(percentile(paced_lat, 0.5), 1),
                    "p99": round(percentile(paced_lat, 0.99), 1),
                },
                "end_to_end_ms": {
                    "p50": round(percentile(run.paced_e2e_ms, 0.5), 1),
                    "p99": round(percentile(run.paced_e2e_ms, 0.99), 1),
                },
                "longest_pause_ms": round(pause * 1000, 1),
            },
        },
    )


# ---------------------------------------------------------------- in-process screening cost


def screen_cost(
    settings: Settings, orders: Sequence[Prepared], merchants: Sequence[Prepared]
) -> Measured:
    """µs per order of both agents' per-message work (intake then screen), without Kafka,
    Faust or the Redis call of identity resolution (tests/bench/bench_identity.py times that)."""
    from agents.attributes import order_attributes
    from agents.decide import Policy
    from agents.enrich import enrich_order
    from agents.exposure import empty_account
    from agents.features import order_features
    from agents.identity import person_keys
    from agents.merchants import apply_merchant
    from agents.model import ModelState
    from agents.policy import DEFAULT_POLICY_SET
    from agents.screen import record_decision_metrics, screen_order
    from agents.validate import check_order, decode_event

    registry = SchemaRegistry(settings.schema_dir)
    table: dict[str, Any] = {}
    for m in merchants:
        apply_merchant(table, m.key, decode_event(registry, "Merchant", m.value, 65536))
    policy = Policy()
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

    def screen_all(encode: bool) -> float:
        now = datetime.now(UTC)
        ingest_ms = now.timestamp() * 1000
        started = time.perf_counter()
        for raw in raws:
            order = decode_event(registry, "Order", raw, settings.max_event_bytes)  # intake
            assert check_order(order, now) is None
            person_keys(order.buyer, secret)
            attributes = order_attributes(order)
            order = decode_event(registry, "Order", raw, None)  # screen, after the hop
            result = screen_order(
                order,
                identity=identity,
                attributes=attributes,
                ingest_ms=ingest_ms,
                now=now,
                merchants=table,
                policies=DEFAULT_POLICY_SET,
                history=[],
                account=empty_account(),
                model=model,
                warm=True,
                secret=secret,
            ).decision
            if encode:
                registry.encode("Decision", result)
                record_decision_metrics(result)
        return (time.perf_counter() - started) / len(raws) * 1e6

    screen_all(True)  # warm up
    screen_us = screen_all(False)
    total_us = screen_all(True)
    started = time.perf_counter()
    for raw in raws:
        registry.decode("Order", raw)
    decode_us = (time.perf_counter() - started) / len(raws) * 1e6
    started = time.perf_counter()
    for _ in raws:
        _ = policy.version
    version_us = (time.perf_counter() - started) / len(raws) * 1e6
    return Measured(
        "intake + screen in-process",
        len(raws),
        total_us * len(raws) / 1e6,
        f"{len(raws):,} orders, intake + screen work + Decision encode + metrics, one thread, "
        "no Kafka, no Redis",
        {
            "us_per_order": round(total_us, 1),
            "screen_order_us": round(screen_us, 1),
            "order_decode_us": round(decode_us, 1),
            "policy_version_us": round(version_us, 1),
        },
    )


# ---------------------------------------------------------------- report


def fmt_p(lat: dict[str, float]) -> str:
    return f"{lat['p50']:,.0f} / {lat['p99']:,.0f}"


def report(results: dict[str, Measured], args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    aio, faust, pipe, screen = (
        results["aiokafka"],
        results["faust_forwarder"],
        results["pipeline"],
        results["screen_order"],
    )
    paced = pipe.extra["paced"]
    table = Table(
        "contender",
        Column("messages", justify="right"),
        Column("seconds", justify="right"),
        Column("msgs/s", justify="right"),
        Column("µs/msg", justify="right"),
        Column("p50 / p99 ms\nbacklog", justify="right"),
        Column(f"p50 / p99 ms\npaced {paced['rate_per_s']:,.0f}/s", justify="right"),
        title=f"Shinsa pipeline benchmark: {args.orders:,} orders, topics {prefix}*",
        box=box.SIMPLE_HEAD,
    )
    for m in (aio, faust, pipe, screen):
        is_pipe = m is pipe
        table.add_row(
            m.contender,
            f"{m.messages:,}",
            f"{m.seconds:.2f}",
            f"{m.rate:,.0f}",
            f"{1e6 / m.rate:,.0f}",
            fmt_p(m.extra["backlog_latency_ingest_ms"]) if is_pipe else "",
            fmt_p(paced["latency_ingest_ms"]) if is_pipe else "",
        )
    console.print(table)

    vs_faust = pipe.rate / faust.rate
    vs_aio = pipe.rate / aio.rate
    ratio_ok = vs_faust >= TARGET_RATIO
    rate_ok = pipe.rate >= TARGET_RATE

    def mark(ok: bool) -> str:
        return "[green]met[/green]" if ok else "[red]NOT met[/red]"

    stalled = paced["longest_pause_ms"] > STALL_MS
    notes = [
        *(f"[dim]timed by[/dim] {m.contender}: {m.timed_by}" for m in (aio, faust, pipe, screen)),
        "[dim]latency[/dim] latency_ingest_ms of the decisions (decided_at − the order's Kafka "
        "timestamp); with a backlog it is mostly queueing",
        f"[dim]paced[/dim] {paced['orders']:,} orders at {paced['rate_per_s']:,.0f}/s: "
        f"order → decision Kafka timestamps p50 / p99 {fmt_p(paced['end_to_end_ms'])} ms; "
        f"longest pause (first order → first decision, then between decisions) "
        f"{paced['longest_pause_ms']:,.0f} ms"
        + (" [yellow](a stall: latency of this run is not typical)[/yellow]" if stalled else ""),
        f"[dim]pipeline[/dim] by Kafka timestamps of the decisions "
        f"{pipe.extra['msgs_per_s_by_kafka_timestamps']:,.0f} msgs/s; dead letters "
        f"{pipe.extra['dead_letters']}; worker start → first decision "
        f"{pipe.extra['startup_s']:.1f}s",
        f"[dim]intake + screen[/dim] {screen.extra['screen_order_us']:.0f} µs/order (Avro "
        f"decode of the order {screen.extra['order_decode_us']:.0f} µs, Policy.version "
        f"{screen.extra['policy_version_us']:.0f} µs); {screen.extra['us_per_order']:.0f} µs "
        "with the Decision encode and metrics",
        f"[bold]ratios[/bold] pipeline / faust forwarder [bold]{vs_faust:.2f}[/bold], "
        f"pipeline / aiokafka [bold]{vs_aio:.2f}[/bold]",
        f"[bold]targets[/bold] pipeline ≥ {TARGET_RATIO} × faust forwarder: {mark(ratio_ok)}; "
        f"≥ {TARGET_RATE:,.0f} orders/s per worker process: {mark(rate_ok)} "
        f"({pipe.rate:,.0f}/s)",
    ]
    for note in notes:
        console.print(note)
    return {
        "orders": args.orders,
        "topic_prefix": prefix,
        "aiokafka": aio.as_json(),
        "faust_forwarder": faust.as_json(),
        "pipeline": pipe.as_json(),
        "screen_order": screen.as_json(),
        "ratios": {
            "pipeline_vs_faust_forwarder": round(vs_faust, 3),
            "pipeline_vs_aiokafka": round(vs_aio, 3),
        },
        "targets": {
            "pipeline_ge_half_faust_forwarder": ratio_ok,
            "pipeline_ge_5000_per_s": rate_ok,
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
    parser.add_argument("--paced", type=positive, default=5_000, help="orders of the paced phase")
    parser.add_argument("--rate", type=float, default=2_000.0, help="paced orders per second")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per phase")
    parser.add_argument("--keep-topics", action="store_true", help="keep the run's topics")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = f"bench-{int(time.time())}"
    prefix = f"{run}."
    settings = load_settings(topic_prefix=prefix, app_id=f"{run}-shinsa")
    aio_out, faust_out = f"{prefix}bench-aiokafka-out", f"{prefix}bench-faust-out"
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
    try:
        stack.create_topics(settings)
        create_output_topics(settings, [aio_out, faust_out])
        registry = SchemaRegistry(settings.schema_dir)
        merchants, orders = generate(registry, args.orders, SEED, "backlog")
        _, paced_orders = generate(registry, args.paced, PACED_SEED, "paced phase")
        produce(settings, settings.topic("merchants"), merchants, "producing merchants")
        produce(settings, settings.topic("orders"), orders, "producing the backlog")

        results["screen_order"] = screen_cost(settings, orders[:SCREEN_SAMPLE], merchants)
        results["aiokafka"] = run_aiokafka(settings, aio_out, len(orders), aio_group, args.timeout)

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
            paced_orders,
            args.rate,
            logs / f"{run}-worker.log",
            procs,
            args.timeout,
        )
        results["pipeline"] = pipeline_measured(pipeline)
        summary = report(results, args, prefix)
    except BenchError as exc:
        console.print(f"[red]benchmark failed:[/red] {exc}")
        return 1
    finally:
        for proc in procs:
            stop_worker(proc)
        if not args.keep_topics:
            with contextlib.suppress(Exception):
                delete_run(settings, run, [aio_group, faust_app, settings.app_id])
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
