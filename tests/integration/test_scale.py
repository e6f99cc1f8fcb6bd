"""Two workers on the same topics: partitions move while orders flow (a worker joins, then the
first one leaves) and a read_committed consumer sees every order decided exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tests.integration.conftest import Worker, collect, produce, simulated_backlog

pytestmark = pytest.mark.integration


def produce_paced(env, events, rate: float) -> threading.Thread:
    """Send `events` in slices of 50 at about `rate` per second, in the background."""

    def run() -> None:
        for start in range(0, len(events), 50):
            produce(env, events[start : start + 50])
            time.sleep(50 / rate)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_rebalance_while_orders_flow_loses_and_repeats_nothing(env, registry, tmp_path):
    _, events, ids = simulated_backlog(registry, 2000, seed=11)
    merchants = [e for e in events if e[0] == "merchants"]
    orders = [e for e in events if e[0] == "orders"]
    produce(env, merchants)
    first = Worker(env, tmp_path / "first.log").start()
    second = Worker(env, tmp_path / "second.log")
    try:
        sender = produce_paced(env, orders, rate=400)
        collect(env, "decisions", 400, worker=first)
        second.start()  # the group rebalances: partitions move to the newcomer
        second.wait_for("hot path screen: assigned", timeout=60)
        collect(env, "decisions", 1000, worker=second)
        assert first.stop() == 0  # …and back: the leaver's partitions go to the second
        sender.join(60)
        decisions = collect(env, "decisions", len(ids), timeout=180, worker=second)
    finally:
        for w in (first, second):
            if w.proc is not None and w.proc.poll() is None:
                w.stop()
    decided = Counter(registry.decode("Decision", m.value())["order_id"] for m in decisions)
    assert set(decided) == ids, f"{len(ids - set(decided))} orders without a decision"
    assert max(decided.values()) == 1, "an order was decided twice across the rebalance"
    assert "assigned" in first.text() and "assigned" in second.text()
    assert first.errors() == [] and second.errors() == []
