"""Chaos run: orders stream in while the worker is SIGKILLed, Redis and the broker restarted.

    .venv/bin/python -m tests.bench.chaos [--orders 50000 --rate 1000 --kills 5 --seed N]

Needs the local stack started by `shinsa stack up` (Redis and Kafka are restarted through
streams/tools/stack.py, so they must be the ones it started; the stack is left up at the end). Every
run uses a fresh topic prefix and app id (`chaos-<unix time>.`, Redis namespace
`shinsa:chaos-<unix time>-shinsa`). The simulated merchants are produced first, then a worker
starts and the orders are produced at `--rate` per second from a background thread, while at
seeded random moments:

- the worker is SIGKILLed and restarted (`--kills` times);
- Redis is shut down gracefully (SHUTDOWN: its append-only file is flushed) and started again;
- the Kafka broker is stopped (SIGTERM, a controlled shutdown) and started again.

Each event waits until the worker has decided some orders since the previous one, so every
event hits a working worker mid-stream (a SIGKILLed worker's successor waits out the session
timeout, ~15 s, so later events often fall in the catch-up after the last order was produced).
Restarting Redis or the broker also waits while other Shinsa workers or test sessions run on
this machine (it would break them; `--force` does not wait). A worker that exits on its own
(or hangs after its hot path stopped it) is restarted and counted; a pause of more than 60 s
without a decision is reported. `--no-redis` / `--no-kafka` leave those services alone.
Once every order has a decision or a dead letter (or `--timeout` seconds after the orders
started), the worker is stopped gracefully and `decisions` and `dlq` are read whole with
isolation.level=read_committed, then counted: missing orders (neither a decision nor a dead
letter), duplicates (an order with more than one committed decision), verdict changes (an
order whose decisions differ in `decision`). The Redis side is checked too: each resolved order
counted once in the identity graph, the decision kept in Redis equal to the one on Kafka, each
order in at most one velocity set.

Prints a table and, as the last line, one JSON object. Exit code 0 when nothing is missing,
duplicated or changed, 1 otherwise (2 if the stack is not usable). The run's topics, consumer
groups and Redis keys are deleted at the end unless `--keep-topics`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from rich import box
from rich.console import Console
from rich.table import Column, Table

from streams.clients import Prepared, produce_one, producer_config
from streams.codec import SchemaRegistry
from streams.dlq import REASON
from streams.settings import Settings, load_settings
from streams.tools import stack
from streams.tools.cli.common import progress
from streams.tools.demo import start_worker, stop_worker, worker_env
from tests.bench.bench_pipeline import delete_run, drop_redis_namespace, generate, positive

# a log or pipe gets 110 columns instead of rich's 80, which would wrap the table
console = Console(width=None if sys.stdout.isatty() else 110)

READY = "hot path screen consuming"  # the worker's hot path polls from now on
ERROR_LINE = re.compile(r"\[ERROR\]|Traceback|Crashed reason")  # as tests/integration/conftest
MIN_PROGRESS = 100  # orders decided since the previous event before the next one
STALL_S = 60.0  # no order decided for this long while orders wait: said, and reported
MAX_CRASHES = 20  # a worker exiting on its own more often than this ends the run
FATAL = "stopping the worker:"  # agents/screen.py: the hot path stops the worker (SIGTERM)
HUNG_AFTER_FATAL_S = 30.0  # a worker still alive this long after saying FATAL is killed
QUIET = 2  # librdkafka log level of this script's clients: no "Connection refused" per retry


class ChaosError(RuntimeError):
    """The run could not go on; the message says why and where to look."""


# ---------------------------------------------------------------- counting (pure)


@dataclass
class Tally:
    """What `decisions` and `dlq` say about the produced orders."""

    orders_produced: int
    decided: int  # distinct produced orders with at least one decision
    decision_messages: int
    dead_lettered: int  # distinct produced orders with a dead letter
    dead_letters: int  # dead-letter messages (any key)
    missing: list[str]  # produced orders with neither a decision nor a dead letter
    duplicates: list[str]  # orders with more than one decision message
    duplicate_messages: int  # decision messages beyond the first per order
    redecided: list[str]  # duplicates whose messages are not byte-identical
    verdict_changes: list[str]  # orders whose decisions differ in `decision`
    decided_and_dead: list[str]  # orders with both a decision and a dead letter
    unexpected: list[str]  # decisions of order ids that were not produced

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.verdict_changes)

    def counts(self) -> dict[str, int]:
        """Every field as a number (lists by their length)."""
        return {k: len(v) if isinstance(v, list) else v for k, v in asdict(self).items()}


def tally(
    produced: Collection[str],
    decisions: Iterable[tuple[str, str, bytes]],
    dead_letters: Iterable[str | None],
) -> Tally:
    """Count `decisions` ((order id, verdict, encoded Decision) per message) and the order ids
    of the dead letters against the `produced` order ids."""
    produced = set(produced)
    verdicts: dict[str, list[str]] = defaultdict(list)
    encoded: dict[str, set[bytes]] = defaultdict(set)
    messages = 0
    for order_id, verdict, value in decisions:
        messages += 1
        verdicts[order_id].append(verdict)
        encoded[order_id].add(value)
    dead = Counter(dead_letters)
    dead_ids = {k for k in dead if k is not None} & produced
    decided = set(verdicts) & produced
    duplicates = sorted(o for o, v in verdicts.items() if len(v) > 1)
    return Tally(
        orders_produced=len(produced),
        decided=len(decided),
        decision_messages=messages,
        dead_lettered=len(dead_ids),
        dead_letters=sum(dead.values()),
        missing=sorted(produced - decided - dead_ids),
        duplicates=duplicates,
        duplicate_messages=sum(len(verdicts[o]) - 1 for o in duplicates),
        redecided=[o for o in duplicates if len(encoded[o]) > 1],
        verdict_changes=sorted(o for o, v in verdicts.items() if len(set(v)) > 1),
        decided_and_dead=sorted(decided & dead_ids),
        unexpected=sorted(set(verdicts) - produced),
    )


@dataclass
class GraphCheck:
    """The identity graph and hot-path state of a namespace, against the decided orders."""

    identities_live: int  # `<ns>:id:<identity>` hashes (merged-away ones are deleted)
    identities_created: int  # `<ns>:stats` identities
    merges: int  # `<ns>:stats` merges
    identity_orders: int  # sum of `orders` over the live identities
    orders_resolved: int  # produced orders with an `<ns>:o:<order id>` marker
    decisions_kept: int  # produced orders with `<ns>:dec:<order id>`
    decisions_differ: list[str]  # orders whose kept decision is not the one on Kafka
    velocity_members: int  # members of every `<ns>:vel:<identity>` set
    velocity_in_several: list[str]  # orders in more than one identity's velocity set
    velocity_undecided: list[str]  # orders in a velocity set without a decision on Kafka

    @property
    def consistent(self) -> bool:
        return (
            self.identity_orders == self.orders_resolved
            and self.identities_live == self.identities_created - self.merges
            and not self.decisions_differ
            and not self.velocity_in_several
            and not self.velocity_undecided
        )

    def counts(self) -> dict[str, int]:
        return {k: len(v) if isinstance(v, list) else v for k, v in asdict(self).items()}


def graph_check(
    stats: dict[str, int],
    identity_orders: dict[str, int],
    resolved: Collection[str],
    kept: dict[str, bytes],
    kafka: dict[str, bytes],
    velocity: dict[str, list[str]],
) -> GraphCheck:
    """Check what was read from Redis: `stats` (the `<ns>:stats` hash), `identity_orders`
    (live identity → its `orders`), the `resolved` order ids, the `kept` decisions (order id →
    bytes), the last decision on Kafka per order, `velocity` (identity → order ids)."""
    sets_of: dict[str, int] = Counter(o for members in velocity.values() for o in set(members))
    return GraphCheck(
        identities_live=len(identity_orders),
        identities_created=stats.get("identities", 0),
        merges=stats.get("merges", 0),
        identity_orders=sum(identity_orders.values()),
        orders_resolved=len(resolved),
        decisions_kept=len(kept),
        decisions_differ=sorted(o for o, v in kept.items() if o in kafka and kafka[o] != v),
        velocity_members=sum(len(m) for m in velocity.values()),
        velocity_in_several=sorted(o for o, n in sets_of.items() if n > 1),
        velocity_undecided=sorted(o for o in sets_of if o not in kafka),
    )


def velocity_order_id(member: bytes | str) -> str:
    """The order id of a velocity member `<amount>:<order id>` (agents/state.py)."""
    text = member.decode() if isinstance(member, bytes) else member
    return text.partition(":")[2]


# ---------------------------------------------------------------- reading results


def reader_config(settings: Settings, group: str, committed: bool = True) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group,  # never joined (partitions are assigned) nor committed
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed" if committed else "read_uncommitted",
        "enable.partition.eof": True,  # the position moves past trailing transaction markers
        "log_level": QUIET,
    }


class Results:
    """Committed decisions and dead letters of a namespace, read (read_committed) as they come.

    Partitions are assigned directly, so reading never joins or disturbs a consumer group.
    """

    def __init__(self, settings: Settings, registry: SchemaRegistry, group: str) -> None:
        self.settings, self.registry, self.group = settings, registry, group
        self.consumer = Consumer(reader_config(settings, group))
        self.topics = [settings.topic("decisions"), settings.topic("dlq")]
        meta = self.consumer.list_topics(timeout=30).topics
        self.partitions = [
            TopicPartition(t, p, OFFSET_BEGINNING) for t in self.topics for p in meta[t].partitions
        ]
        self.consumer.assign(self.partitions)
        self.decisions: list[tuple[str, str, bytes]] = []  # (order id, verdict, bytes)
        self.last: dict[str, bytes] = {}  # order id → its last decision's bytes
        self.dead: list[str | None] = []  # order id (key) of each dead letter
        self.reasons: Counter[str] = Counter()
        self.done: set[str] = set()  # order ids with a decision or a dead letter

    def poll(self, budget: float = 0.2) -> int:
        """Read what is committed, for up to `budget` seconds; how many messages were read."""
        deadline = time.monotonic() + budget
        read = 0
        while True:
            left = deadline - time.monotonic()
            messages = self.consumer.consume(5000, max(left, 0.0))
            for msg in messages:
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        console.print(f"[yellow]reader: {msg.error()}")
                    continue
                read += 1
                self.add(msg)
            if not messages or time.monotonic() >= deadline:
                return read

    def add(self, msg: Any) -> None:
        key = msg.key().decode() if msg.key() is not None else None
        if msg.topic() == self.topics[0]:
            decision = self.registry.decode("Decision", msg.value())
            order_id = decision["order_id"]
            if key != order_id:
                console.print(f"[yellow]decision of {order_id} keyed {key!r}")
            self.decisions.append((order_id, decision["decision"], msg.value()))
            self.last[order_id] = msg.value()
            self.done.add(order_id)
        else:
            self.dead.append(key)
            headers = dict(msg.headers() or [])
            self.reasons[headers.get(REASON, b"?").decode()] += 1
            if key is not None:
                self.done.add(key)

    def read_all(self, timeout: float) -> bool:
        """Read until the committed position of every partition reaches its high watermark:
        every transaction written so far is resolved and read. False if that took too long
        (a transaction still open: a killed worker's is aborted after transaction.timeout.ms)."""
        deadline = time.monotonic() + timeout
        watch = Consumer(reader_config(self.settings, f"{self.group}-ends", committed=False))
        try:
            marks = {
                (tp.topic, tp.partition): watch.get_watermark_offsets(tp, timeout=15)
                for tp in self.partitions
            }
        finally:
            watch.close()
        # an empty partition has no position to compare (librdkafka reports OFFSET_INVALID)
        ends = {tp: high for tp, (low, high) in marks.items() if high > low}
        while True:
            self.poll(0.5)
            positions = self.consumer.position([TopicPartition(t, p) for t, p in ends])
            behind = [tp for tp in positions if tp.offset < ends[(tp.topic, tp.partition)]]
            if not behind:
                return True
            if time.monotonic() > deadline:
                return False

    def close(self) -> None:
        self.consumer.close()


# ---------------------------------------------------------------- producing


class PacedProducer(threading.Thread):
    """Produces prepared events at `rate` per second (all at once if 0) in the background.

    While the broker is down, librdkafka keeps the messages and retries (idempotent producer:
    a retry never duplicates); each is acknowledged or failed within `message.timeout.ms`.
    """

    def __init__(
        self,
        settings: Settings,
        items: Sequence[Prepared],
        rate: float,
        deadline: float | None = None,
    ) -> None:
        super().__init__(name="chaos-producer", daemon=True)
        self.settings, self.items, self.rate = settings, items, rate
        self.deadline = deadline  # time.monotonic() after which it gives up
        self.sent = 0  # handed to the producer
        self.acked: set[bytes] = set()  # keys acknowledged by the broker
        self.failed: list[str] = []
        self.error: BaseException | None = None
        self.seconds = 0.0  # producing, without the final flush
        self.stopping = threading.Event()

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is None:
            self.acked.add(msg.key())
        else:
            self.failed.append(f"{msg.key()!r}: {err}")

    def _late(self) -> bool:
        return self.stopping.is_set() or (
            self.deadline is not None and time.monotonic() > self.deadline
        )

    def run(self) -> None:
        try:
            config = {
                **producer_config(self.settings),
                "message.timeout.ms": 600_000,
                "log_level": QUIET,
            }
            producer = Producer(config)
            started = time.monotonic()
            for i, item in enumerate(self.items, 1):
                if self.rate:
                    ahead = (i - 1) / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                if self._late():
                    break
                topic = self.settings.topic(item.topic)
                produce_one(producer, topic, item.key, item.value, self._delivered)
                self.sent = i
                if i % 100 == 0:
                    producer.poll(0)
            self.seconds = time.monotonic() - started
            while producer.flush(1.0) > 0 and not self._late():
                pass
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def acked_ids(self) -> set[str]:
        return {k.decode() for k in self.acked if k is not None}


# ---------------------------------------------------------------- the services


@dataclass
class Workers:
    """The run's `shinsa worker` processes, one at a time, each with its own log."""

    settings: Settings
    logs: Path
    run: str
    proc: subprocess.Popen | None = None
    log: Path | None = None
    started_at: float = 0.0
    starts: int = 0
    kills: int = 0
    crashes: list[dict[str, Any]] = field(default_factory=list)  # exited on their own
    all_logs: list[Path] = field(default_factory=list)
    fatal_seen: float | None = None  # when the running worker's log first said FATAL

    def start(self) -> None:
        self.starts += 1
        self.log = self.logs / f"{self.run}-worker-{self.starts}.log"
        self.all_logs.append(self.log)
        self.proc = start_worker(self.settings, self.log, worker_env(self.settings))
        self.started_at = time.monotonic()
        self.fatal_seen = None

    def text(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text("utf-8", "replace")

    def ready(self) -> bool:
        return READY in self.text()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def exited(self) -> int | str | None:
        """The exit code if the worker exited by itself (counted; the caller restarts it), or
        "hung" if it stopped its hot path but did not exit within HUNG_AFTER_FATAL_S (killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if self.fatal_seen is None and FATAL in self.text():
                self.fatal_seen = time.monotonic()
            if self.fatal_seen is None or time.monotonic() - self.fatal_seen < HUNG_AFTER_FATAL_S:
                return None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            code: int | str = "hung"
        else:
            code = self.proc.returncode
        reason = [line for line in self.text().splitlines() if FATAL in line][:1]
        self.crashes.append({"log": str(self.log), "code": code, "reason": " ".join(reason)})
        self.proc = None
        return code

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = stop_worker(self.proc, timeout=60)
        self.proc = None
        return code


def ancestors() -> set[int]:
    """This process and its parents (a `timeout … pytest` wrapper is not another user)."""
    found, pid = set(), os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])
    return found


def other_users(own: Collection[int] = ()) -> list[str]:
    """Other processes using the local stack (Shinsa workers, test sessions), from /proc: a
    restart of Redis or of the broker would break them, so it waits until they are done."""
    mine = ancestors() | set(own)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if "streams.tools.cli worker" in cmd or "pytest" in cmd or "tests.bench" in cmd:
            found.append(f"{entry.name}: {cmd.strip()[:100]}")
    return found


def redis_pid_file(settings: Settings) -> Path:
    return stack.redis_dir(settings) / "redis.pid"


def kafka_pid_file(settings: Settings) -> Path:
    return stack.kafka_dir(settings) / "kafka.pid"


def wait_exit(pid_file: Path, timeout: float, what: str) -> None:
    """Wait until the process of `pid_file` is gone (reaped if it is our child)."""
    pid = stack.read_pid(pid_file)
    deadline = time.monotonic() + timeout
    while pid is not None and stack.read_pid(pid_file) is not None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            raise ChaosError(f"{what} (pid {pid}) did not exit within {timeout:.0f}s")
        time.sleep(0.1)
    pid_file.unlink(missing_ok=True)


def restart_redis(
    settings: Settings, namespace: str, say: Callable[[str], None], pause: float = 0.0
) -> float:
    """SHUTDOWN Redis (it flushes its append-only file), wait `pause`, start it again, check a
    key written before survived; the seconds it was down (until it had loaded its data)."""
    if stack.read_pid(redis_pid_file(settings)) is None:
        raise ChaosError("Redis was not started by `shinsa stack up`: cannot restart it")
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10)
    probe, token = f"{namespace}:chaos:probe", str(time.time_ns())
    client.set(probe, token)
    began = time.monotonic()
    client.shutdown()  # SHUTDOWN: with appendonly yes, the AOF is flushed and fsynced
    wait_exit(redis_pid_file(settings), 30, "Redis")
    time.sleep(pause)
    stack.redis_up(settings, say=say)

    def loaded() -> bool:  # the port answers before the append-only file is loaded
        try:
            return bool(client.ping())
        except redis.exceptions.BusyLoadingError:
            return False

    stack.wait_until(loaded, 120, "Redis loading its data")
    down = time.monotonic() - began
    kept = client.get(probe)
    client.delete(probe)
    client.close()
    if kept is None or kept.decode() != token:
        raise ChaosError(f"Redis lost its data across a SHUTDOWN; see {stack.redis_dir(settings)}")
    return down


def restart_kafka(settings: Settings, pause: float, say: Callable[[str], None]) -> float:
    """Stop the broker (SIGTERM: a controlled shutdown), wait `pause`, start it again; the
    seconds it was down."""
    if stack.read_pid(kafka_pid_file(settings)) is None:
        raise ChaosError("Kafka was not started by `shinsa stack up`: cannot restart it")
    began = time.monotonic()
    stack.stop_pid(kafka_pid_file(settings), timeout=60)
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    stack.wait_until(lambda: not stack.port_open(host, int(port)), 30, "the broker's stop")
    time.sleep(pause)
    stack.kafka_up(settings, say=say)
    stack.wait_until(lambda: stack._kafka_metadata_ok(settings), 90, "Kafka metadata")
    return time.monotonic() - began


def read_graph(
    settings: Settings, order_ids: Collection[str], kafka: dict[str, bytes]
) -> GraphCheck:
    """Read the namespace's identity graph and hot-path state and check them."""
    ns = settings.identity_namespace
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=30)
    try:
        stats = {k.decode(): int(v) for k, v in client.hgetall(f"{ns}:stats").items()}
        depth = ns.count(":") + 2  # `<ns>:id:<identity>`, not `<ns>:id:<identity>:<attr>`
        identities = [
            k for k in client.scan_iter(f"{ns}:id:*", count=1000) if k.count(b":") == depth
        ]
        identity_orders: dict[str, int] = {}
        for start in range(0, len(identities), 1000):
            chunk = identities[start : start + 1000]
            pipe = client.pipeline(transaction=False)
            for key in chunk:
                pipe.hget(key, "orders")
            for key, value in zip(chunk, pipe.execute(), strict=True):
                identity_orders[key.decode()] = int(value or 0)
        ids = sorted(order_ids)
        resolved, kept = [], {}
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            seen = client.mget([f"{ns}:o:{o}" for o in chunk])
            decided = client.mget([f"{ns}:dec:{o}" for o in chunk])
            resolved += [o for o, s in zip(chunk, seen, strict=True) if s is not None]
            kept |= {o: d for o, d in zip(chunk, decided, strict=True) if d is not None}
        sets = list(client.scan_iter(f"{ns}:vel:*", count=1000))
        velocity: dict[str, list[str]] = {}
        for start in range(0, len(sets), 500):
            chunk = sets[start : start + 500]
            pipe = client.pipeline(transaction=False)
            for key in chunk:
                pipe.zrange(key, 0, -1)
            for key, members in zip(chunk, pipe.execute(), strict=True):
                velocity[key.decode()] = [velocity_order_id(m) for m in members]
    finally:
        client.close()
    return graph_check(stats, identity_orders, resolved, kept, kafka, velocity)


def log_errors(paths: Iterable[Path]) -> dict[str, list[str]]:
    """Lines of each worker log that show an error (the integration tests fail on these)."""
    out = {}
    for path in paths:
        text = path.read_text("utf-8", "replace") if path.exists() else ""
        out[str(path)] = [line for line in text.splitlines() if ERROR_LINE.search(line)]
    return out


def count_lines(paths: Iterable[Path], pattern: str) -> int:
    found = re.compile(pattern)
    return sum(len(found.findall(p.read_text("utf-8", "replace"))) for p in paths if p.exists())


# ---------------------------------------------------------------- the run


@dataclass
class Event:
    at: float  # seconds after the orders started
    kind: str  # kill, redis, kafka
    done_at: float | None = None
    detail: str = ""


def schedule(
    rng: random.Random, kills: int, window: float, redis: bool, kafka: bool
) -> list[Event]:
    """Random moments within the middle 90 % of the producing window."""
    kinds = ["kill"] * kills + (["redis"] if redis else []) + (["kafka"] if kafka else [])
    rng.shuffle(kinds)
    moments = sorted(rng.uniform(0.05 * window, 0.95 * window) for _ in kinds)
    return [Event(at, kind) for at, kind in zip(moments, kinds, strict=True)]


def chaos(args: argparse.Namespace, settings: Settings, run: str) -> dict[str, Any]:
    rng = random.Random(args.seed)
    registry = SchemaRegistry(settings.schema_dir)
    logs = settings.data_dir / "chaos"
    logs.mkdir(parents=True, exist_ok=True)
    stack.create_topics(settings)
    merchants, orders = generate(registry, args.orders, args.seed, "chaos")
    ids = {o.key.decode() for o in orders if o.key is not None}
    merchant_producer = PacedProducer(settings, merchants, 0)
    merchant_producer.run()
    if merchant_producer.error or len(merchant_producer.acked) != len(merchants):
        raise ChaosError(f"merchants not produced: {merchant_producer.error or 'not acked'}")

    workers = Workers(settings, logs, run)
    workers.start()
    window = args.orders / args.rate
    events = schedule(rng, args.kills, window, not args.no_redis, not args.no_kafka)
    results = Results(settings, registry, f"{run}-reader")
    started = time.monotonic()
    deadline = started + args.timeout
    producer = PacedProducer(settings, orders, args.rate, deadline)
    producer.start()
    timed_out = False
    acked: set[str] | None = None  # once the producer is done
    last_event_count = 0  # orders done when the previous event (or restart) happened
    pending = list(events)
    downtime: dict[str, float] = {}
    last_done, last_progress, longest_stall, stall_noted = 0, time.monotonic(), 0.0, False
    waited_for: set[str] = set()  # other users of the stack a restart waited for
    try:
        with progress() as bar:
            sent_task = bar.add_task("orders produced", total=len(orders), rate="")
            done_task = bar.add_task("decided or dead-lettered", total=len(orders), rate="")
            say = bar.console.print

            def note(text: str) -> None:
                say(f"[dim]{time.monotonic() - started:6.1f}s[/dim] {text}")

            while True:
                results.poll(0.2)
                done = len(results.done & ids)
                elapsed = time.monotonic() - started
                bar.update(
                    sent_task, completed=producer.sent, rate=f"{len(producer.acked):,} acked"
                )
                bar.update(done_task, completed=done, rate=f"{len(workers.crashes)} crashes")
                now = time.monotonic()
                if done > last_done or done >= len(producer.acked):  # progress, or idle
                    last_done, last_progress, stall_noted = done, now, False
                longest_stall = max(longest_stall, now - last_progress)
                if now - last_progress > STALL_S and not stall_noted:
                    stall_noted = True
                    note(
                        f"[yellow]no order decided for {STALL_S:.0f}s "
                        f"({len(producer.acked) - done:,} waiting); see {workers.log}[/yellow]"
                    )
                code = workers.exited()
                if code is not None:
                    note(f"[yellow]worker exited on its own (code {code}); restarting[/yellow]")
                    if len(workers.crashes) > MAX_CRASHES:
                        raise ChaosError(f"the worker crashed {len(workers.crashes)} times")
                    workers.start()
                if acked is None and not producer.is_alive():
                    acked = producer.acked_ids()
                if acked is not None and not pending and len(results.done & acked) >= len(acked):
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    note(f"[red]timed out after {args.timeout:.0f}s[/red]")
                    break
                if not pending or elapsed < pending[0].at or not workers.ready():
                    continue
                remaining = len(ids) - done
                if done - last_event_count < min(MIN_PROGRESS, remaining):
                    continue  # let the worker decide some orders since the previous event
                if pending[0].kind != "kill" and not args.force:
                    others = other_users(workers.pids())
                    if others:  # a restart would break their run: wait until they are done
                        if not set(others) <= waited_for:
                            note(f"{pending[0].kind} restart waits for: {'; '.join(others)}")
                        waited_for |= set(others)
                        continue
                event = pending.pop(0)
                if event.kind == "kill":
                    workers.kill()
                    pause = rng.uniform(0.0, 2.0)
                    event.detail = (
                        f"worker {workers.starts} SIGKILLed, restarted {pause:.1f}s later"
                    )
                    note(event.detail)
                    time.sleep(pause)
                    workers.start()
                elif event.kind == "redis":
                    pause = rng.uniform(1.0, 5.0)
                    note(f"Redis: SHUTDOWN ({pause:.1f}s down before the start)")
                    down = restart_redis(settings, settings.identity_namespace, note, pause)
                    downtime["redis_s"] = round(down, 2)
                    event.detail = f"Redis down {down:.1f}s (data kept)"
                    note(event.detail)
                else:
                    pause = rng.uniform(1.0, 5.0)
                    note(f"Kafka: stopping the broker ({pause:.1f}s down before the start)")
                    down = restart_kafka(settings, pause, note)
                    downtime["kafka_s"] = round(down, 2)
                    event.detail = f"Kafka down {down:.1f}s"
                    note(event.detail)
                event.done_at = time.monotonic() - started
                last_event_count = len(results.done & ids)
    finally:
        producer.stopping.set()
        producer.join(30)
        caught_up_s = time.monotonic() - started
        code = workers.stop()
        results.close()

    acked = producer.acked_ids()
    final = Results(settings, registry, f"{run}-final")
    try:
        with console.status("reading decisions and dead letters (read_committed)"):
            resolved_all = final.read_all(timeout=120)
    finally:
        final.close()
    counted = tally(acked, final.decisions, final.dead)
    with console.status("checking the Redis namespace"):
        graph = read_graph(settings, acked, final.last)
    errors = log_errors(workers.all_logs)
    final_log = str(workers.all_logs[-1]) if workers.all_logs else ""
    aborted = count_lines(workers.all_logs, r"transaction aborted")
    return {
        "orders": args.orders,
        "rate": args.rate,
        "seed": args.seed,
        "topic_prefix": settings.topic_prefix,
        "namespace": settings.identity_namespace,
        "counts": counted.counts(),
        "ok": counted.ok,
        "examples": {
            "missing": counted.missing[:10],
            "duplicates": counted.duplicates[:10],
            "verdict_changes": counted.verdict_changes[:10],
            "redecided": counted.redecided[:10],
        },
        "dead_letter_reasons": dict(final.reasons),
        "redis": {**graph.counts(), "consistent": graph.consistent},
        "chaos": {
            "planned": [e.kind for e in events],
            "done": [
                {"at_s": round(e.done_at, 1), "kind": e.kind, "detail": e.detail}
                for e in events
                if e.done_at is not None
            ],
            "worker_starts": workers.starts,
            "worker_kills": workers.kills,
            "worker_exits_on_its_own": workers.crashes,
            "final_stop_code": code,
            **downtime,
        },
        "produce": {
            "sent": producer.sent,
            "acked": len(acked),
            "failed": len(producer.failed),
            "failures": producer.failed[:5],
            "error": repr(producer.error) if producer.error else None,
            "seconds": round(producer.seconds, 1),
        },
        "seconds_until_caught_up": round(caught_up_s, 1),
        "longest_stall_s": round(longest_stall, 1),
        "restarts_waited_for": sorted(waited_for),
        "timed_out": timed_out,
        "transactions_resolved_at_end": resolved_all,
        "transactions_aborted_logged": aborted,
        "worker_logs": [str(p) for p in workers.all_logs],
        "worker_error_lines": {k: len(v) for k, v in errors.items() if v},
        "final_worker_error_lines": errors.get(final_log, [])[:10],
    }


def report(summary: dict[str, Any]) -> None:
    counts, chaos_, redis_ = summary["counts"], summary["chaos"], summary["redis"]
    table = Table(
        "",
        Column("count", justify="right"),
        "",
        title=f"Shinsa chaos run: {summary['orders']:,} orders at {summary['rate']:,.0f}/s, "
        f"seed {summary['seed']}, topics {summary['topic_prefix']}*",
        box=box.SIMPLE_HEAD,
    )

    def mark(bad: bool) -> str:
        return "[red]FAIL[/red]" if bad else "[green]ok[/green]"

    rows = [
        ("orders produced (acked)", counts["orders_produced"], ""),
        ("distinct orders decided", counts["decided"], ""),
        ("decision messages", counts["decision_messages"], ""),
        ("missing (no decision, no dead letter)", counts["missing"], mark(counts["missing"] > 0)),
        ("duplicates (orders decided twice)", counts["duplicates"], mark(counts["duplicates"] > 0)),
        ("  of which not byte-identical", counts["redecided"], ""),
        ("verdict changes", counts["verdict_changes"], mark(counts["verdict_changes"] > 0)),
        ("dead letters", counts["dead_letters"], ""),
        ("orders both decided and dead-lettered", counts["decided_and_dead"], ""),
        ("decisions of unknown orders", counts["unexpected"], ""),
        ("worker SIGKILLs", chaos_["worker_kills"], ""),
        ("worker exits on its own (restarted)", len(chaos_["worker_exits_on_its_own"]), ""),
        ("Redis restarts", sum(e["kind"] == "redis" for e in chaos_["done"]), ""),
        ("broker restarts", sum(e["kind"] == "kafka" for e in chaos_["done"]), ""),
        ("Redis: sum of identities' orders", redis_["identity_orders"], ""),
        (
            "Redis: orders resolved",
            redis_["orders_resolved"],
            mark(redis_["identity_orders"] != redis_["orders_resolved"]),
        ),
        (
            "Redis: live identities (created − merges)",
            redis_["identities_live"],
            mark(redis_["identities_live"] != redis_["identities_created"] - redis_["merges"]),
        ),
        (
            "Redis: kept decisions ≠ Kafka's",
            redis_["decisions_differ"],
            mark(redis_["decisions_differ"] > 0),
        ),
        (
            "Redis: orders in several velocity sets",
            redis_["velocity_in_several"],
            mark(redis_["velocity_in_several"] > 0),
        ),
        (
            "Redis: velocity orders without a decision",
            redis_["velocity_undecided"],
            mark(redis_["velocity_undecided"] > 0),
        ),
    ]
    for name, value, status in rows:
        table.add_row(name, f"{value:,}", status)
    stall = summary["longest_stall_s"]
    table.add_row(
        "longest time without a decision (s)",
        f"{stall:,.0f}",
        "[yellow]stall[/yellow]" if stall > STALL_S else "",
    )
    table.add_row("seconds until caught up", f"{summary['seconds_until_caught_up']:,.0f}", "")
    console.print(table)
    for crash in chaos_["worker_exits_on_its_own"]:
        console.print(
            f"[yellow]worker exited on its own[/yellow] (code {crash['code']}): "
            f"{crash['reason'] or 'no reason logged'}; {crash['log']}"
        )
    for event in chaos_["done"]:
        console.print(f"[dim]{event['at_s']:6.1f}s[/dim] {event['kind']}: {event['detail']}")
    if summary["timed_out"]:
        console.print("[red]timed out before every order was decided[/red]")
    if not summary["transactions_resolved_at_end"]:
        console.print("[yellow]a transaction was still open at the end (not read)[/yellow]")
    for kind, examples in summary["examples"].items():
        if examples:
            console.print(f"[red]{kind}[/red]: {', '.join(examples)}")
    if summary["worker_error_lines"]:
        console.print(
            f"[yellow]error lines in worker logs:[/yellow] {summary['worker_error_lines']}"
        )


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--orders", type=positive, default=50_000, help="orders (50000)")
    parser.add_argument("--rate", type=float, default=1_000.0, help="orders per second (1000)")
    parser.add_argument("--kills", type=int, default=5, help="worker SIGKILLs (5)")
    parser.add_argument("--seed", type=int, default=1, help="simulation and chaos seed (1)")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds from the first order to giving up"
    )
    parser.add_argument("--no-redis", action="store_true", help="do not restart Redis")
    parser.add_argument("--no-kafka", action="store_true", help="do not restart the broker")
    parser.add_argument(
        "--force",
        action="store_true",
        help="restart Redis and the broker even while other workers or test sessions run",
    )
    parser.add_argument(
        "--keep-topics", action="store_true", help="keep the run's topics and Redis keys"
    )
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = f"chaos-{int(time.time())}"
    settings = load_settings(topic_prefix=f"{run}.", app_id=f"{run}-shinsa", metrics_port=0)
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    redis_host, redis_port = settings.redis_host_port
    if not (stack.port_open(host, int(port)) and stack.port_open(redis_host, redis_port)):
        console.print("[red]Kafka or Redis does not answer[/red]: run `.venv/bin/shinsa stack up`")
        return 2
    console.rule(f"[bold]Shinsa chaos run: {args.orders:,} orders, topics {run}.*")
    summary: dict[str, Any] | None = None
    try:
        summary = chaos(args, settings, run)
        report(summary)
    except (ChaosError, stack.StackError) as exc:
        console.print(f"[red]chaos run failed:[/red] {exc}")
        return 1
    finally:
        if not args.keep_topics:
            groups = [settings.app_id, f"{settings.app_id}.screen"]
            with contextlib.suppress(Exception):
                delete_run(settings, run, groups)
            with contextlib.suppress(Exception):
                drop_redis_namespace(settings)
    print(json.dumps(summary, ensure_ascii=False, default=str), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
