"""The identity stage inside the running pipeline: shared ids, re-keying, Redis outages."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import orjson
import pytest

from streams.clients import prepare
from streams.metrics import free_port
from streams.settings import load_settings
from tests.integration.conftest import Worker, collect, produce
from tests.integration.test_clients import shinsa
from tests.integration.test_pipeline import order_json

pytestmark = pytest.mark.integration


def person_orders(registry, prefix: str) -> list:
    """Three orders of one person written three ways, and one of somebody else."""
    a = order_json(f"{prefix}-a")
    b = order_json(f"{prefix}-b")
    b["buyer"] |= {
        "name": "やまだ たろう",
        "phone": "09012345678",
        "email": "TaroYamada@example.co.jp",
    }
    c = order_json(f"{prefix}-c")
    c["buyer"] |= {"name": "山田\u3000太郎", "phone": "+81 90-1234-5678", "email": None}
    other = order_json(f"{prefix}-other")
    other["buyer"] = {
        "name": "佐藤 花子",
        "phone": "080-9876-5432",
        "email": "hanako@example.co.jp",
        "address": {"postal_code": "530-0001", "street": "梅田1-1-1"},
    }
    return [prepare(registry, "orders", o) for o in (a, b, c, other)]


def decided(registry, env, n: int, worker: Worker) -> dict[str, dict]:
    msgs = collect(env, "decisions", n, worker=worker)
    return {d["order_id"]: d for d in (registry.decode("Decision", m.value()) for m in msgs)}


def test_one_person_written_three_ways_gets_one_identity_id(env, worker, registry):
    worker.start()
    produce(env, [(p.topic, p.key, p.value) for p in person_orders(registry, "p1")])
    d = decided(registry, env, 4, worker)
    assert d["p1-a"]["identity_id"] == d["p1-b"]["identity_id"] == d["p1-c"]["identity_id"]
    assert d["p1-other"]["identity_id"] != d["p1-a"]["identity_id"]
    assert worker.errors() == []


def start_redis(port: int, tmp_path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise AssertionError("test redis did not start")


def test_redis_outage_stalls_the_stage_and_loses_nothing(env, registry, tmp_path):
    port = free_port()
    redis_proc = start_redis(port, tmp_path)
    settings = load_settings(
        topic_prefix=env.topic_prefix, app_id=env.app_id, metrics_port=0, redis_port=port
    )
    worker = Worker(settings, tmp_path / "worker.log")
    worker.start()
    try:
        produce(env, [(p.topic, p.key, p.value) for p in person_orders(registry, "before")])
        decided(registry, env, 4, worker)
        redis_proc.terminate()
        redis_proc.wait()
        produce(env, [(p.topic, p.key, p.value) for p in person_orders(registry, "during")])
        worker.wait_for("Redis unavailable for", timeout=60)
        assert len(collect(env, "decisions", 4, worker=worker)) == 4  # nothing decided meanwhile
        redis_proc = start_redis(port, tmp_path)
        d = decided(registry, env, 8, worker)
        assert {f"during-{s}" for s in ("a", "b", "c", "other")} <= set(d)
        assert d["during-a"]["identity_id"] == d["during-c"]["identity_id"]
        assert "[ERROR]" not in worker.text() and "Traceback" not in worker.text()
    finally:
        worker.stop()
        redis_proc.terminate()


def test_identity_show_summarizes_a_decided_identity_without_pii(env, worker, registry):
    worker.start()
    produce(env, [(p.topic, p.key, p.value) for p in person_orders(registry, "s1")])
    d = decided(registry, env, 4, worker)
    result = shinsa(env, "identity", "show", d["s1-a"]["identity_id"])
    assert result.returncode == 0, result.stderr
    assert "orders" in result.stdout and "│ 3 " in result.stdout  # three orders of one person
    for secret in ("山田", "やまだ", "090", "Yamada", "千代田"):
        assert secret not in result.stdout
    missing = shinsa(env, "identity", "show", "i999999")
    assert missing.returncode == 1 and "no identity" in missing.stderr


def test_identity_resolve_cli_adds_ids_and_keeps_other_fields(env, tmp_path):
    rows = [
        {
            "ref": "a",
            "name": "山田 太郎",
            "phone": "090-1234-5678",
            "address": {"postal_code": "100-0001", "street": "千代田1-1-1"},
        },
        {
            "ref": "b",
            "name": "やまだ たろう",
            "phone": "+81 90 1234 5678",
            "address": {"postal_code": "〒1000001", "street": "千代田一丁目1番1号"},
        },
        {
            "ref": "c",
            "name": "佐藤 花子",
            "phone": "080-9876-5432",
            "address": {"postal_code": "530-0001", "street": "梅田1-1-1"},
        },
    ]
    path = tmp_path / "people.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    result = shinsa(env, "identity", "resolve", str(path))
    assert result.returncode == 0, result.stderr
    out = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [o["ref"] for o in out] == ["a", "b", "c"]
    assert out[0]["identity_id"] == out[1]["identity_id"] != out[2]["identity_id"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ref": 1, "name": "x"}\n')
    refused = shinsa(env, "identity", "resolve", str(bad))
    assert refused.returncode == 1 and "line 1: missing_field" in refused.stderr
