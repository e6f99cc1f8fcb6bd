"""The online model on the real broker and Redis: delayed labels train it, every worker scores
with the newest checkpoint, and a restart keeps it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from agents.model import MODEL_KEY, credit_label_of, label_of, verify_checkpoint
from agents.policy import load_policy_yaml
from streams.clients import prepare, read_topic
from streams.settings import Settings, load_settings
from streams.tools import policy_admin
from tests.conftest import run_cli
from tests.integration.conftest import Worker, collect, produce, simulated

pytestmark = pytest.mark.integration

TRAINED = {
    "model_min_labels": 100,
    "model_min_positives": 5,
    "model_checkpoint_labels": 200,
    "model_checkpoint_seconds": 1.0,
    "label_grace_seconds": 15.0,
}


@pytest.fixture
def model_env(env: Settings) -> Settings:
    return load_settings(
        topic_prefix=env.topic_prefix, app_id=env.app_id, metrics_port=0, **TRAINED
    )


def newest_model(settings: Settings) -> dict[str, Any] | None:
    """The summary of the newest checkpoint on the models topic."""
    secret = settings.hash_key.get_secret_value().encode()
    headers = [
        verify_checkpoint(m.value(), secret)[0]
        for m in read_topic(settings, settings.topic("models"))
        if m.key() == MODEL_KEY
    ]
    return max(headers, key=lambda h: h["checkpoint"], default=None)


def wait_for_model(settings: Settings, labels: int, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        model = newest_model(settings)
        if model and model["labels"] >= labels:
            return model
        assert time.monotonic() < deadline, f"model never learned {labels} labels: {model}"
        time.sleep(0.5)


def wait_for_metric(worker: Worker, name: str, at_least: float, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while (value := worker.metrics().get(name, 0.0)) < at_least:
        assert time.monotonic() < deadline, f"{name} stayed at {value}, wanted {at_least}"
        time.sleep(0.3)
    return value


def split_history(registry, orders: int, seed: int, late: int, **kw: Any):
    """A simulated history cut in two: merchants and early orders with their outcomes, then
    `late` orders placed after every early outcome is known."""
    events = simulated(orders, seed=seed, **kw)
    order_events = [e for e in events if e.topic == "orders"]
    early_ids = {e.value["order_id"] for e in order_events[:-late]}
    late_ids = {e.value["order_id"] for e in order_events[-late:]}

    def send(es):
        return [
            (p.topic, p.key, p.value) for p in (prepare(registry, e.topic, e.value) for e in es)
        ]

    merchants = send(e for e in events if e.topic == "merchants")
    early = send(e for e in order_events if e.value["order_id"] in early_ids)
    outcomes = [e for e in events if e.topic == "outcomes" and e.value["order_id"] in early_ids]
    late_orders = send(e for e in order_events if e.value["order_id"] in late_ids)
    return merchants, early, outcomes, send(outcomes), late_orders, order_events


def decisions_of(registry, settings, want, worker) -> dict[str, dict]:
    msgs = collect(settings, "decisions", want, worker=worker)
    return {d["order_id"]: d for d in (registry.decode("Decision", m.value()) for m in msgs)}


def test_delayed_labels_train_the_model_and_a_restart_keeps_it(model_env, registry, tmp_path):
    merchants, early, outcomes, outcome_msgs, late, orders = split_history(registry, 1500, 21, 200)
    worker = Worker(model_env, tmp_path / "worker.log").start()
    try:
        produce(model_env, merchants + early)
        cold = decisions_of(registry, model_env, len(early), worker)
        assert {d["reasons"][-1] for d in cold.values()} == {"MODEL_COLD_START"}
        assert {d["model_version"] for d in cold.values()} == {"logreg-v0"}

        # labels arrive after their decisions: the learner joins each to its snapshot
        produce(model_env, outcome_msgs)
        labelled = [o for o in outcomes if label_of(o.value["kind"]) is not None]
        model = wait_for_model(model_env, len(labelled))
        assert model["labels"] == len(labelled), "every label learned exactly once"
        assert model["positives"] == sum(label_of(o.value["kind"]) for o in labelled)
        assert model["roc_auc"] is not None and model["window_labels"] == len(labelled)
        wait_for_metric(worker, f'shinsa_model_info{{version="{model["version"]}"}}', 1)
        learned = worker.metrics()['shinsa_labels_total{result="learned"}']
        assert learned == len(labelled)
        refused = run_cli(model_env, "model", "promote", "--wait", "2")
        assert refused.returncode == 1 and "no challenger to promote" in refused.stderr

        # the feature snapshots are in Redis, velocity included, and hold no PII
        r = redis.Redis.from_url(model_env.redis_url)
        bursts = [
            o.value["order_id"]
            for o in orders
            if o.fraud_pattern == "velocity_burst" and o.value["order_id"] in cold
        ]
        snaps = [
            orjson.loads(r.get(f"{model_env.identity_namespace}:snap:{oid}")) for oid in bursts
        ]
        assert max(s["x"]["velocity_count_1h"] for s in snaps) >= 2
        assert all(set(s) >= {"x", "s", "v", "t", "y"} for s in snaps if s.get("y") is not None)

        # orders after training are decided by the warm model, with its reasons
        produce(model_env, late)
        warm = decisions_of(registry, model_env, len(early) + len(late), worker)
        late_ids = {registry.decode("Order", v)["order_id"] for _, _, v in late}
        for oid in late_ids:
            assert warm[oid]["model_version"] == model["version"]
            assert warm[oid]["reasons"][-1] == "SCORE_MODEL"
        assert any(r.startswith("MODEL:") for oid in late_ids for r in warm[oid]["reasons"]), (
            "warm decisions name the features that raised their score"
        )

        # a restart restores the newest model and its metrics, and does not relearn
        before = worker.metrics()
        assert worker.stop() == 0
        worker.start()
        worker.wait_for(f"scoring with model {model['version']}")
        after = worker.metrics()
        assert after[f'shinsa_model_info{{version="{model["version"]}"}}'] == 1
        for name in (
            "shinsa_model_roc_auc",
            "shinsa_model_labels_learned",
            "shinsa_model_log_loss",
        ):
            assert after[name] == before[name]
        time.sleep(3)  # longer than a checkpoint interval: nothing new to publish
        assert newest_model(model_env)["checkpoint"] == model["checkpoint"]
        assert worker.errors() == []
    finally:
        if worker.proc and worker.proc.poll() is None:
            worker.stop()


def test_two_workers_score_with_the_same_model_version(model_env, registry, tmp_path: Path):
    merchants, early, _, outcome_msgs, late, _ = split_history(registry, 1200, 22, 300)
    workers = [Worker(model_env, tmp_path / f"worker-{i}.log").start() for i in range(2)]
    try:
        produce(model_env, merchants + early)
        decisions_of(registry, model_env, len(early), workers[0])
        produce(model_env, outcome_msgs)
        model = wait_for_model(model_env, 150)
        time.sleep(2)  # let the last checkpoint of the outcomes land
        model = newest_model(model_env)
        for w in workers:
            wait_for_metric(w, f'shinsa_model_info{{version="{model["version"]}"}}', 1)
        learners = [w.metrics().get("shinsa_learner_active", 0) for w in workers]
        assert sorted(learners) == [0, 1], "exactly one worker learns"
        wait_until_both_screen(workers)
        produce(model_env, late)
        decided = decisions_of(registry, model_env, len(early) + len(late), workers[0])
        late_ids = {registry.decode("Order", v)["order_id"] for _, _, v in late}
        assert {decided[oid]["model_version"] for oid in late_ids} == {model["version"]}
        for w in workers:  # both took part in screening the late orders
            assert sum(v for k, v in w.metrics().items() if k.startswith("shinsa_decisions_total"))
            assert w.errors() == []
    finally:
        for w in workers:
            if w.proc and w.proc.poll() is None:
                w.stop()


def wait_until_both_screen(workers: list[Worker], timeout: float = 60.0) -> None:
    """Each worker's screening loop holds some partitions of orders (the second worker's
    loop starts after its model and merchants are loaded: a rebalance follows)."""
    deadline = time.monotonic() + timeout
    while not all(w.assigned("screen") for w in workers):
        assert time.monotonic() < deadline, [w.assigned("screen") for w in workers]
        time.sleep(0.3)


def outcome_for(registry, order_id: str, kind: str = "FRAUD_CONFIRMED") -> tuple:
    p = prepare(
        registry,
        "outcomes",
        {
            "order_id": order_id,
            "event_time": "2026-11-01T10:00:00.000+09:00",
            "kind": kind,
            "source": "REVIEWER",
            "note": None,
        },
    )
    return (p.topic, p.key, p.value)


def test_a_label_before_its_order_waits_then_unknown_labels_are_counted(
    model_env, registry, tmp_path
):
    events = simulated(30, seed=23)
    merchants = [e for e in events if e.topic == "merchants"]
    first = next(e for e in events if e.topic == "orders")
    worker = Worker(model_env, tmp_path / "worker.log").start()
    try:
        send = [
            (p.topic, p.key, p.value)
            for p in (prepare(registry, e.topic, e.value) for e in merchants)
        ]
        produce(model_env, send)
        # a label for an order never screened: reported once its grace period ends (below)
        produce(model_env, [outcome_for(registry, "o-never-screened", "PAID")])
        # the outcome comes first: it waits for the snapshot instead of being dropped
        produce(model_env, [outcome_for(registry, first.value["order_id"])])
        wait_for_metric(worker, 'shinsa_labels_total{result="pending"}', 2)
        order = prepare(registry, "orders", first.value)
        produce(model_env, [(order.topic, order.key, order.value)])
        wait_for_metric(worker, 'shinsa_labels_total{result="learned"}', 1)
        model = wait_for_model(model_env, 1)
        assert (model["labels"], model["positives"]) == (1, 1)
        wait_for_metric(worker, 'shinsa_labels_total{result="unmatched"}', 1, timeout=30)
        assert worker.metrics()['shinsa_labels_total{result="learned"}'] == 1
        # a repeated outcome is not learned twice
        produce(model_env, [outcome_for(registry, first.value["order_id"])])
        wait_for_metric(worker, 'shinsa_labels_total{result="duplicate"}', 1)
        assert newest_model(model_env)["labels"] == 1
        assert worker.errors() == []
        # a checkpoint that does not verify is refused, loudly, and the model in use kept
        time.sleep(2)  # the learner checkpoints the duplicate's offset within a second
        version = newest_model(model_env)["version"]
        wait_for_metric(worker, f'shinsa_model_info{{version="{version}"}}', 1)
        produce(model_env, [("models", b"model", b"SHM1" + b"\0" * 64)])
        wait_for_metric(worker, "shinsa_model_load_failures_total", 1)
        assert worker.metrics()[f'shinsa_model_info{{version="{version}"}}'] == 1
        assert any("model checkpoint rejected: signature" in e for e in worker.errors())
    finally:
        worker.stop()


def test_a_challenger_learns_in_shadow_and_promote_lets_it_decide(env, registry, tmp_path):
    """A tree challenger learns the same labels beside the logistic model, is judged on its own
    shadow scores, and `shinsa model promote` makes it decide (and promoting again undoes it).
    The labels also feed the known risk of each order's merchant, device and identity."""
    settings = load_settings(
        topic_prefix=env.topic_prefix,
        app_id=env.app_id,
        metrics_port=0,
        model_challenger="tree",
        **TRAINED,
    )
    merchants, early, outcomes, outcome_msgs, late, _ = split_history(registry, 800, 23, 100)
    worker = Worker(settings, tmp_path / "worker.log").start()
    try:
        produce(settings, merchants + early)
        decisions_of(registry, settings, len(early), worker)
        produce(settings, outcome_msgs)
        labelled = [o for o in outcomes if label_of(o.value["kind"]) is not None]
        model = wait_for_model(settings, len(labelled))
        challenger = model["challenger"]
        assert challenger["kind"] == "tree" and challenger["labels"] == len(labelled)
        # scored in shadow: the snapshots carry its scores, so it has progressive metrics
        assert challenger["roc_auc"] is not None
        wait_for_metric(worker, 'shinsa_model_challenger_info{kind="tree"}', 1)

        # each label added to its entities' known risk, under hashed keys only
        r = redis.Redis.from_url(settings.redis_url)
        ns = settings.identity_namespace
        risky = [k for k in r.keys(f"{ns}:ent:merchant:*") if r.hget(k, "r")]
        assert risky, "the learner adds labels to the merchants' known risk"
        frauds = sum(float(r.hget(k, "r").split(b",")[2]) for k in risky)
        assert frauds > 0
        assert r.keys(f"{ns}:ent:device:*") and r.keys(f"{ns}:ent:identity:*")

        status = run_cli(settings, "model", "status")
        assert status.returncode == 0 and "challenger" in status.stdout
        promoted = run_cli(settings, "model", "promote", "--wait", "60")
        assert promoted.returncode == 0, promoted.stderr
        after = newest_model(settings)
        assert after["kind"] == "tree" and after["promotions"] == 1
        assert after["challenger"]["kind"] == "logreg"
        assert after["labels"] == len(labelled)
        wait_for_metric(worker, "shinsa_model_promoted_timestamp_seconds", 1)

        # the promoted tree decides what comes next
        produce(settings, late)
        decided = decisions_of(registry, settings, len(early) + len(late), worker)
        late_ids = {registry.decode("Order", v)["order_id"] for _, _, v in late}
        assert {decided[o]["model_version"] for o in late_ids} == {after["version"]}
        assert after["version"].startswith("tree-v")
        assert worker.errors() == []
    finally:
        if worker.proc and worker.proc.poll() is None:
            worker.stop()


def test_history_rollback_and_the_kill_switch(model_env, registry, tmp_path):
    """`shinsa model history` lists the archived checkpoints; `rollback` returns to one and the
    learner learns on from the next label (not the ones since); `off` makes every decision the
    rules' alone, with MODEL_SWITCHED_OFF, and `on` gives it back to the model."""
    merchants, early, outcomes, _, late, _ = split_history(registry, 1200, 24, 160)
    labelled = [o for o in outcomes if label_of(o.value["kind"]) is not None]
    frauds = [i for i, o in enumerate(outcomes) if label_of(o.value["kind"]) == 1]
    first = max(frauds[7] + 1, len(outcomes) // 3)  # warm: enough frauds among its labels
    second = (first + len(outcomes)) // 2
    parts = [outcomes[:first], outcomes[first:second], outcomes[second:]]
    counts = [sum(label_of(o.value["kind"]) is not None for o in part) for part in parts]
    assert sum(counts) == len(labelled) and min(counts) > 100

    def send(part):
        produce(
            model_env,
            [
                (p.topic, p.key, p.value)
                for p in (prepare(registry, "outcomes", o.value) for o in part)
            ],
        )

    worker = Worker(model_env, tmp_path / "worker.log").start()
    try:
        produce(model_env, merchants + early)
        decisions_of(registry, model_env, len(early), worker)
        send(parts[0])
        target = wait_for_model(model_env, counts[0])
        assert target["labels"] == counts[0] and target["positives"] >= 5  # warm
        send(parts[1])
        bad = wait_for_model(model_env, counts[0] + counts[1])

        shown = run_cli(model_env, "model", "history", "--json")
        assert shown.returncode == 0, shown.stderr
        rows = [orjson.loads(line) for line in shown.stdout.splitlines()]
        assert [r["checkpoint"] for r in rows] == sorted(r["checkpoint"] for r in rows)
        assert rows[-1]["checkpoint"] == bad["checkpoint"] and rows[-1]["in_use"]
        assert target["checkpoint"] in {r["checkpoint"] for r in rows}
        assert run_cli(model_env, "model", "history").returncode == 0

        missing = run_cli(model_env, "model", "rollback", "999999", "--wait", "2")
        assert missing.returncode == 1 and "not in the archive" in missing.stderr
        rolled = run_cli(model_env, "model", "rollback", target["version"], "--wait", "60")
        assert rolled.returncode == 0, rolled.stderr
        after = newest_model(model_env)
        assert after["checkpoint"] > bad["checkpoint"] and after["rollbacks"] == 1
        assert after["rolled_back_to"] == target["checkpoint"]
        assert after["labels"] == target["labels"] and after["roc_auc"] == target["roc_auc"]
        wait_for_metric(worker, "shinsa_model_rolled_back_timestamp_seconds", 1)
        history = [
            orjson.loads(x)
            for x in run_cli(model_env, "model", "history", "--json").stdout.splitlines()
        ]
        assert history[-1]["change"] == f"rolled back to {target['checkpoint']}"

        # the learner learns on from the next label: the rolled-back ones are not relearned
        send(parts[2])
        learned = wait_for_model(model_env, target["labels"] + counts[2])
        time.sleep(3)  # longer than a checkpoint interval: nothing more comes
        assert newest_model(model_env)["labels"] == learned["labels"] == counts[0] + counts[2]

        # the kill switch: the rules decide alone until it is turned off again
        off = run_cli(model_env, "model", "off", "--reason", "a test")
        assert off.returncode == 0, off.stderr
        wait_for_metric(worker, "shinsa_model_rules_only", 1)
        status = orjson.loads(run_cli(model_env, "model", "status", "--json").stdout)
        assert status["rules_only"] is True
        produce(model_env, late[:80])
        decided = decisions_of(registry, model_env, len(early) + 80, worker)
        switched = [registry.decode("Order", v)["order_id"] for _, _, v in late[:80]]
        assert {decided[o]["reasons"][-1] for o in switched} == {"MODEL_SWITCHED_OFF"}
        assert run_cli(model_env, "model", "on").returncode == 0
        deadline = time.monotonic() + 30
        while worker.metrics()["shinsa_model_rules_only"] != 0:
            assert time.monotonic() < deadline, "the switch never turned off"
            time.sleep(0.3)
        produce(model_env, late[80:])
        decided = decisions_of(registry, model_env, len(early) + len(late), worker)
        back = [registry.decode("Order", v)["order_id"] for _, _, v in late[80:]]
        assert {decided[o]["reasons"][-1] for o in back} == {"SCORE_MODEL"}
        assert worker.errors() == []
    finally:
        if worker.proc and worker.proc.poll() is None:
            worker.stop()


# A credit model that learned ~500 repayments at its slow rate from a 5 % prior scores this
# small world's deferred orders between 0.056 and 0.071: the threshold sits inside.
CREDIT_POLICY = """
name: credit-check
default:
  credit_review_score: 0.063
  credit_decline_score: 0.95
"""


def test_repayments_train_the_credit_model_and_its_score_reviews_deferred_orders(
    model_env, registry, tmp_path
):
    """PAID / UNPAID outcomes of deferred orders train the credit model (not the fraud model's
    UNPAID); once warm, every later deferred order carries its credit check in the trace, and
    exactly those at or above the policy's credit_review_score get CREDIT_SCORE."""
    merchants, early, outcomes, outcome_msgs, late, orders = split_history(
        registry, 1500, 23, 300, days=120, people=300
    )
    policy_admin.publish(model_env, "active", load_policy_yaml(CREDIT_POLICY))
    deferred = {o.value["order_id"] for o in orders if o.value["payment_method"] == "DEFERRED"}
    repaid: dict[str, int] = {}  # the credit label of each early deferred order
    for o in outcomes:
        label = credit_label_of(o.value["kind"])
        if label is not None and o.value["order_id"] in deferred:
            repaid[o.value["order_id"]] = max(label, repaid.get(o.value["order_id"], 0))
    assert sum(repaid.values()) >= TRAINED["model_min_positives"], "too few unpaid to warm up"
    worker = Worker(model_env, tmp_path / "worker.log").start()
    try:
        worker.wait_for("deciding with policy credit-check-")
        produce(model_env, merchants + early)
        decisions_of(registry, model_env, len(early), worker)
        produce(model_env, outcome_msgs)
        deadline = time.monotonic() + 90
        while (model := newest_model(model_env)) is None or (
            (model.get("credit") or {}).get("labels", 0) < len(repaid)
        ):
            assert time.monotonic() < deadline, f"credit model never learned: {model}"
            time.sleep(0.5)
        assert model["credit"]["labels"] == len(repaid), "each order's repayment learned once"
        assert model["credit"]["positives"] == sum(repaid.values())
        wait_for_metric(worker, "shinsa_credit_model_warm", 1)

        produce(model_env, late)
        late_ids = {registry.decode("Order", v)["order_id"] for _, _, v in late}
        decided = decisions_of(registry, model_env, len(early) + len(late), worker)
        traces = {
            t["order_id"]: t
            for t in (
                registry.decode("DecisionTrace", m.value())
                for m in collect(model_env, "traces", len(early) + len(late), worker=worker)
            )
        }
        checked = [oid for oid in late_ids & deferred]
        assert checked, "late deferred orders"
        fired = explained = 0
        for oid in checked:
            check = traces[oid]["credit"]
            assert check is not None and check["warm"] and check["band"] != "COLD"
            raised = "CREDIT_SCORE" in decided[oid]["reasons"]
            assert raised == (check["score"] >= 0.063), (oid, check["score"], decided[oid])
            fired += raised
            named = {r for r in decided[oid]["reasons"] if r.startswith("CREDIT:")}
            if raised:  # the repayment features that raised it, as in the trace
                assert decided[oid]["decision"] != "APPROVE"
                assert named == {f"CREDIT:{name}" for name in check["contributions"]}
                explained += bool(named)
            else:
                assert not named
        scores = sorted(round(traces[o]["credit"]["score"], 3) for o in checked)
        assert 0 < fired < len(checked), f"{fired} of {len(checked)} credit reviews: {scores}"
        assert explained, "some credit reviews name the features that raised them"
        assert all(traces[oid]["credit"] is None for oid in late_ids - deferred)
        assert worker.errors() == []
    finally:
        if worker.proc and worker.proc.poll() is None:
            worker.stop()
