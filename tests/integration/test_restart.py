"""A worker stopped mid-stream and restarted loses no order and, read_committed, repeats none:
its decisions and input offsets commit in one Kafka transaction."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.integration.conftest import collect, produce, simulated_backlog

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_worker_restart_mid_stream_loses_no_order(env, worker, registry, how):
    _, events, ids = simulated_backlog(registry, 6000, seed=5)
    produce(env, events)
    worker.start()
    collect(env, "decisions", 1000, worker=worker)  # mid-stream
    if how == "sigterm":
        assert worker.stop() == 0
    else:
        worker.kill()
    worker.start()
    decisions = collect(env, "decisions", len(ids), timeout=240, worker=worker)
    # wait until no order is missing
    decided = Counter(registry.decode("Decision", m.value())["order_id"] for m in decisions)
    missing = ids - set(decided)
    while missing:
        decisions = collect(
            env, "decisions", len(decisions) + len(missing), timeout=120, worker=worker
        )
        decided = Counter(registry.decode("Decision", m.value())["order_id"] for m in decisions)
        missing = ids - set(decided)
    assert set(decided) == ids
    verdicts: dict[str, set[str]] = {}
    for m in decisions:
        d = registry.decode("Decision", m.value())
        verdicts.setdefault(d["order_id"], set()).add(d["decision"])
    assert all(len(v) == 1 for v in verdicts.values()), "a redelivered order changed its decision"
    assert max(decided.values()) == 1, "a read_committed consumer saw an order decided twice"
    assert worker.errors() == []
