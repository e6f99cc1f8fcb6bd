"""Producer clients and the stack, on the real broker."""

from __future__ import annotations

import subprocess

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.clients import end_offsets, prepare, read_topic
from streams.tools import stack
from tests.conftest import run_cli
from tests.integration.conftest import produce, simulated

pytestmark = pytest.mark.integration


def test_keyed_events_land_where_faust_expects(env, registry):
    orders = [e for e in simulated(200, seed=9) if e.topic == "orders"]
    sent = produce(
        env,
        [(p.topic, p.key, p.value) for p in (prepare(registry, "orders", e.value) for e in orders)],
    )
    partitions = sorted(end_offsets(env, env.topic("orders")))
    faust_partition = DefaultPartitioner()
    for record in sent:
        assert record.partition == faust_partition(record.key, partitions, partitions)


def test_stack_up_twice_is_harmless(local_stack):
    assert stack.up(local_stack, say=lambda _: None) == []
    services = {s.name: s for s in stack.status(local_stack)}
    assert services["kafka"].answering and services["redis"].answering


def shinsa(settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return run_cli(settings, *args, stdin=stdin)


def test_produce_refuses_a_file_with_invalid_lines_and_sends_nothing(env, tmp_path):
    orders = [e.value for e in simulated(5, seed=2) if e.topic == "orders"][:3]
    lines = [
        orjson.dumps(orders[0]),
        b'{"order_id": "x"}',
        orjson.dumps(orders[1]),
        b"{oops",
        orjson.dumps(orders[2] | {"amount": "many"}),
    ]
    path = tmp_path / "orders.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    before = end_offsets(env, env.topic("orders"))
    result = shinsa(env, "produce", str(path), "--topic", "orders")
    assert result.returncode == 1
    assert "line 2: missing_field" in result.stderr
    assert "line 4: not valid JSON" in result.stderr
    assert "line 5: wrong_type" in result.stderr and "Order.amount" in result.stderr
    assert "Traceback" not in result.stderr
    assert end_offsets(env, env.topic("orders")) == before


def test_produce_sends_a_valid_envelope_file(env, tmp_path, registry):
    events = [e for e in simulated(20, seed=4) if e.raw is None]
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b"".join(orjson.dumps({"topic": e.topic, "value": e.value}) + b"\n" for e in events)
    )
    result = shinsa(env, "produce", str(path))
    assert result.returncode == 0, result.stderr
    got = [
        registry.decode("Order", m.value())["order_id"]
        for m in read_topic(env, env.topic("orders"))
    ]
    assert sorted(got) == sorted(e.value["order_id"] for e in events if e.topic == "orders")


def test_cli_errors_are_one_clear_line(env, tmp_path):
    result = shinsa(env, "produce", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 1
    assert "no such file" in result.stderr and "Traceback" not in result.stderr
