"""`shinsa eval` on a simulated history: the real identity graph on the local Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from agents.model import label_of
from streams.settings import Settings
from streams.tools.publish import write_events
from tests.integration.conftest import simulated

pytestmark = pytest.mark.integration


def shinsa_eval(settings: Settings, *args: str) -> tuple[dict[str, Any], str]:
    """Run the command as a user would; returns the JSON of its last stdout line, and stderr."""
    env = os.environ | {"SHINSA_APP_ID": settings.app_id, "SHINSA_REDIS_URL": settings.redis_url}
    shinsa = Path(sys.executable).with_name("shinsa")
    done = subprocess.run(
        [str(shinsa), "eval", *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return orjson.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.fixture
def scratch(local_stack: Settings) -> Settings:
    """An app id of its own, so the graph's scratch namespaces can be checked afterwards."""
    return Settings(app_id=f"it-eval-{uuid.uuid4().hex[:8]}", redis_url=local_stack.redis_url)


def test_eval_replays_a_simulated_history(scratch: Settings, tmp_path: Path) -> None:
    events = simulated(3000, seed=11, days=40)
    path = tmp_path / "sim.jsonl"
    write_events(events, path)
    # An order is labelled by its fraud outcomes only: UNPAID is the credit model's label.
    by_order: dict[str, int] = {}
    for event in events:
        label = label_of(event.value["kind"]) if event.topic == "outcomes" else None
        if label is not None:
            by_order[event.value["order_id"]] = max(label, by_order.get(event.value["order_id"], 0))
    labels = list(by_order.values())

    report, stderr = shinsa_eval(scratch, str(path))

    assert report["input"] == "simulator" and report["delay"] == "outcome"
    assert report["orders"] == 3000
    assert report["labelled"] == len(labels)
    assert report["positives"] == sum(labels)
    assert report["delayed"]["learned"] <= report["no_delay"]["learned"] == len(labels)
    for row in ("delayed", "no_delay"):
        assert report[row]["roc_auc"] > 0.7, report[row]
        assert report[row]["second_half"]["labelled"] == report["batch"]["labelled"]
    assert report["batch"]["roc_auc"] > 0.7
    assert "recall_at_1pct" in report["batch_hgb"]
    assert "stream logreg" in stderr and "batch HGB" in stderr
    client = redis.Redis.from_url(scratch.redis_url)
    assert not list(client.scan_iter(f"{scratch.identity_namespace}:*")), "scratch graph left"


def test_eval_options_on_a_simulated_history(scratch: Settings, tmp_path: Path) -> None:
    path = tmp_path / "sim.jsonl"
    write_events(simulated(800, seed=12, days=20), path)

    report, _ = shinsa_eval(
        scratch, str(path), "--estimator", "tree", "--delay", "3d", "--review-rate", "0.05"
    )

    assert report["estimator"] == "tree" and report["delay"] == "3d"
    assert "recall_at_5pct" in report["delayed"]
    assert report["orders"] == 800
