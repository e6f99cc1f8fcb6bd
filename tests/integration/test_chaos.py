"""Chaos, short: orders stream in while the worker is SIGKILLed twice, then Redis is shut down
for longer than the worker's timers' interval and started again (its data kept).

The worker must live through the outage (waiting, not crashing). Read with
isolation.level=read_committed, every order has exactly one decision, no order's verdict
changed, and Redis counted each order once (identity graph, velocity) and keeps the decision
that is on Kafka. The long version, with a broker restart: tests/bench/chaos.py.
"""

from __future__ import annotations

import re
import time

import pytest

from streams.clients import Prepared
from streams.tools import stack
from tests.bench.chaos import (
    PacedProducer,
    Results,
    other_users,
    read_graph,
    redis_pid_file,
    restart_redis,
    tally,
)
from tests.integration.conftest import Worker, produce, simulated_backlog

pytestmark = pytest.mark.integration

ORDERS = 2000
RATE = 300.0  # orders per second: ~10 s of producing
STEP = 100  # orders decided between two chaos events, so each hits a working worker
REDIS_DOWN_S = 16.0  # longer than the worker's 15 s timers: each of them meets the outage


def wait_for_progress(results: Results, ids: set[str], worker: Worker, timeout: float) -> None:
    """Until `STEP` more orders (or all that are left) are decided or dead-lettered."""
    target = min(len(results.done & ids) + STEP, len(ids))
    deadline = time.monotonic() + timeout
    while len(results.done & ids) < target:
        assert worker.proc is not None and worker.proc.poll() is None, (
            f"worker exited ({worker.proc and worker.proc.returncode}), its errors:\n"
            + "\n".join(worker.errors()[:5])
            + "\nwhere in the project:\n"
            + "\n".join(re.findall(r'File "[^"]*/(?:agents|streams)/.*', worker.text())[:5])
        )
        assert time.monotonic() < deadline, (
            f"{len(results.done & ids)} of {len(ids)} orders decided, no progress to {target} "
            f"in {timeout:.0f}s:\n{worker.text()[-3000:]}"
        )
        results.poll(0.3)


def redis_restart_skipped(worker: Worker) -> str | None:
    """Why Redis must not be restarted now, if so: only a Redis started by `shinsa stack up`
    can be, and not while another session (a test run, a worker) uses it."""
    if stack.read_pid(redis_pid_file(worker.settings)) is None:
        return "it was not started by `shinsa stack up`"
    others = other_users([worker.proc.pid] if worker.proc is not None else [])
    if others:
        return f"other sessions use it ({'; '.join(others)})"
    return None


def test_sigkills_and_a_redis_restart_mid_stream(env, worker, registry):
    _, events, ids = simulated_backlog(registry, ORDERS, seed=11)
    produce(env, [e for e in events if e[0] == "merchants"])
    orders = [Prepared(topic, key, value) for topic, key, value in events if topic == "orders"]
    worker.start()
    results = Results(env, registry, f"{env.app_id}-reader")
    producer = PacedProducer(env, orders, RATE, deadline=time.monotonic() + 120)
    producer.start()
    try:
        # Redis restarts last, so the final run (whose log is checked) lives through it
        for step in ("kill", "kill", "redis"):
            wait_for_progress(results, ids, worker, timeout=60)
            if step == "kill":
                worker.kill()
                worker.start()
            elif skip := redis_restart_skipped(worker):
                print(f"Redis not restarted: {skip}")
            else:
                restart_redis(env, env.identity_namespace, print, pause=REDIS_DOWN_S)
        producer.join(60)
        assert not producer.is_alive(), "the orders were not all produced in time"
        assert producer.error is None and producer.failed == [], producer.failed[:5]
        assert producer.acked_ids() == ids
        deadline = time.monotonic() + 60
        while not ids <= results.done:
            wait_for_progress(results, ids, worker, timeout=max(deadline - time.monotonic(), 1))
    finally:
        producer.stopping.set()
        results.close()
    assert worker.stop() == 0

    final = Results(env, registry, f"{env.app_id}-final")
    try:
        assert final.read_all(timeout=60), "a transaction stayed open after the graceful stop"
    finally:
        final.close()
    counted = tally(ids, final.decisions, final.dead)
    assert counted.missing == []
    assert counted.duplicates == [], f"orders decided more than once: {counted.duplicates[:10]}"
    assert counted.verdict_changes == []
    assert counted.decided + counted.dead_lettered == len(ids)
    assert counted.unexpected == []
    graph = read_graph(env, ids, final.last)
    assert graph.consistent, graph.counts()
    assert graph.orders_resolved == counted.decided
    assert worker.errors() == []
