"""Integration fixtures: the real local Kafka and Redis (started by the project), real workers.

Each test gets its own topic prefix and Faust app id, so tests share one broker without
seeing each other's events. A missing service is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import KafkaException

from streams.clients import DeliveryTracker, make_producer, prepare, produce_one, read_topic
from streams.codec import SchemaRegistry
from streams.metrics import free_port
from streams.settings import Settings, load_settings
from streams.tools import stack
from streams.tools.demo import start_worker, stop_worker
from streams.tools.simulate import SimConfig, Simulator
from tests.bench.bench_pipeline import delete_run
from tests.conftest import env_vars

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def local_stack() -> Settings:
    """The local stack, brought up if it is not running (as `shinsa stack up` does)."""
    settings = load_settings()
    stack.up(settings, say=print)
    assert redis.Redis.from_url(settings.redis_url).ping()
    return settings


RUNS: list[str] = []  # this session's namespaces: their topics are deleted when it ends


@pytest.fixture(scope="session", autouse=True)
def drop_session_topics() -> Iterator[None]:
    """Delete the topics (ours and Faust's internal ones) of every namespace this session
    made: a test run leaves ~1,200 partitions otherwise, and a broker that has kept ~10,000
    of them took longer than `stack up`'s 90 s to start."""
    yield
    if RUNS:
        with contextlib.suppress(KafkaException):
            delete_run(load_settings(), tuple(RUNS))


@pytest.fixture
def env(local_stack: Settings, tmp_path: Path) -> Settings:
    """Settings of a fresh, isolated namespace on the local stack, topics created."""
    run = uuid.uuid4().hex[:10]
    RUNS.append(f"it-{run}")
    settings = load_settings(topic_prefix=f"it-{run}.", app_id=f"it-{run}", metrics_port=0)
    stack.create_topics(settings)
    return settings


@pytest.fixture
def registry(local_stack: Settings) -> SchemaRegistry:
    return SchemaRegistry(local_stack.schema_dir)


@dataclass
class Worker:
    """A real `shinsa worker` process on an isolated namespace."""

    settings: Settings
    log: Path
    proc: subprocess.Popen | None = None
    role: str = "screen"  # or campaign
    runs: list[str] = field(default_factory=list)

    def start(self, wait: bool = True) -> Worker:
        self.proc = start_worker(self.settings, self.log, env_vars(self.settings), self.role)
        if wait:
            self.wait_for(
                "merchant table loaded" if self.role == "screen" else "hot path campaign: assigned"
            )
        return self

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text():
            assert self.proc is not None and self.proc.poll() is None, (
                f"worker exited ({self.proc and self.proc.returncode}):\n{self.text()[-3000:]}"
            )
            assert time.monotonic() < deadline, (
                f"worker never said {text!r}:\n{self.text()[-3000:]}"
            )
            time.sleep(0.2)

    def metrics(self) -> dict[str, float]:
        """The worker's /metrics now, as {'name{labels}': value} (the port is in its log)."""
        found = re.search(r"metrics on (http://\S+/metrics)", self.text())
        assert found, "the worker did not say where its metrics are"
        body = urllib.request.urlopen(found.group(1), timeout=5).read().decode()
        samples = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def assigned(self, loop: str) -> set[str]:
        """The partitions a hot-path loop holds now, from its assigned / revoked log lines."""
        held: set[str] = set()
        for line in self.text().splitlines():
            found = re.search(rf"hot path {loop}: (assigned|revoked) (.*)$", line)
            if found:
                names = {n.strip() for n in found.group(2).split(",")} - {"", "nothing"}
                held = held | names if found.group(1) == "assigned" else held - names
        return held

    def text(self) -> str:
        return self.log.read_text("utf-8", "replace") if self.log.exists() else ""

    def stop(self) -> int:
        assert self.proc is not None
        code = stop_worker(self.proc)
        self.runs.append(self.text())
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.runs.append(self.text())

    def errors(self) -> list[str]:
        """Lines that show an agent crashed or logged an error: these fail a test.

        aiokafka logs a group coordinator that is still loading (a broker just started or
        restarted) at ERROR and then retries it; that is the broker's state, not ours.
        """
        return [
            line
            for line in self.text().splitlines()
            if ERROR_LINE.search(line) and not RETRIED_BY_AIOKAFKA.search(line)
        ]


ERROR_LINE = re.compile(r"\[ERROR\]|Traceback|Crashed reason")
RETRIED_BY_AIOKAFKA = re.compile(
    r"Group Coordinator Request failed: \[Error (14|15)\] "
    r"(CoordinatorLoadInProgressError|GroupCoordinatorNotAvailableError)"
)


@pytest.fixture
def worker(env: Settings, tmp_path: Path) -> Iterator[Worker]:
    w = Worker(env, tmp_path / "worker.log")
    yield w
    if w.proc is not None and w.proc.poll() is None:
        w.stop()


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = -1
    offset: int = -1


def produce(
    settings: Settings, events: list[tuple[str, bytes | None, bytes | None]]
) -> list[Produced]:
    """Send (logical topic, key, value) and return each with the partition/offset it got."""
    producer = make_producer(settings)
    out: list[Produced] = []
    tracker = DeliveryTracker()

    def report(err: Any, msg: Any, record: Produced) -> None:
        tracker(err, msg)
        record.partition, record.offset = msg.partition(), msg.offset()

    for topic, key, value in events:
        record = Produced(settings.topic(topic), key, value)
        out.append(record)
        produce_one(producer, record.topic, key, value, lambda e, m, r=record: report(e, m, r))
    assert producer.flush(60) == 0
    assert not tracker.failed, tracker.failed
    return out


def simulated(orders: int, seed: int = 7, **kw: Any) -> list[Any]:
    cfg = SimConfig(orders=orders, seed=seed, end=datetime.now(UTC), **kw)
    return list(Simulator(cfg).events())


def simulated_backlog(registry: SchemaRegistry, orders: int, seed: int) -> tuple[list, list, set]:
    """Simulated merchants and orders: (the events, as (topic, key, Avro) to send, order ids)."""
    events = [e for e in simulated(orders, seed=seed) if e.topic in ("orders", "merchants")]
    prepared = [prepare(registry, e.topic, e.value) for e in events]
    ids = {e.value["order_id"] for e in events if e.topic == "orders"}
    return events, [(p.topic, p.key, p.value) for p in prepared], ids


def collect(
    settings: Settings, topic: str, want: int, timeout: float = 120.0, worker: Worker | None = None
) -> list[Any]:
    """Messages of `topic` until at least `want` are there (or fail with what was seen)."""
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    offsets: dict[int, int] = {}
    while True:
        for msg in read_topic(settings, settings.topic(topic), start=offsets):
            offsets[msg.partition()] = msg.offset() + 1
            seen.append(msg)
        if len(seen) >= want:
            return seen
        if worker is not None and worker.proc is not None:
            assert worker.proc.poll() is None, f"worker died:\n{worker.text()[-3000:]}"
        assert time.monotonic() < deadline, f"{topic}: {len(seen)} of {want} messages in time"
        time.sleep(0.3)


@contextlib.contextmanager
def running_alertmanager(config_text: str, tmp_path: Path) -> Iterator[str]:
    """Debian's Alertmanager with this configuration on a free port (clustering off); yields
    its address and stops it afterwards."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "Alertmanager is missing: apt-get install prometheus-alertmanager (make setup)"
    config = tmp_path / "alertmanager.yml"
    config.write_text(config_text)
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=(tmp_path / "alertmanager.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        stack.wait_until(lambda: stack.port_open("127.0.0.1", port), 20, "Alertmanager")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
