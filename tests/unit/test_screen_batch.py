"""The hot path's batch core without a broker: intake per message, screen_batch per batch.

What a user relies on: every valid order gets exactly one decision and one trace; a message
that fails anywhere, encoding included, costs exactly that message (a dead letter with its
source) and never the rest of the batch; state changes are recorded only for orders decided.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from agents import reasons
from agents.entities import EntityState
from agents.intake import Accepted, accept_order
from agents.model import ModelState
from agents.policy import DEFAULT_POLICY_SET
from agents.screen import (
    Candidate,
    Outputs,
    Rules,
    candidate_entities,
    save_slice,
    screen_batch,
)
from agents.state import Loaded, history_from_zset, history_member, merge_loaded
from streams.codec import CodecError
from streams.dlq import REASON, SOURCE_OFFSET
from streams.records import Merchant
from streams.txloop import Received, first_offsets, next_offsets

NOW = datetime(2026, 10, 1, 4, 0, tzinfo=UTC)
GOOD = Merchant("m0001", "テスト", "FOOD", "STANDARD", NOW)


class TraceFailsFor:
    """The real registry, except that one order's trace cannot be encoded (the last step)."""

    def __init__(self, registry, order_id: str) -> None:
        self.registry, self.order_id = registry, order_id

    def encode(self, name, datum):
        if name == "DecisionTrace" and datum["order_id"] == self.order_id:
            raise CodecError("wrong_type", "a bug in the trace")
        return self.registry.encode(name, datum)


def message(value: bytes | None, offset: int, partition: int = 0) -> Received:
    return Received("t.orders", partition, offset, b"k", value, 1_790_000_000_000)


def encoded_order(registry, order_json, order_id: str) -> bytes:
    order_json = {**order_json, "order_id": order_id}
    return registry.encode("Order", registry.from_json("Order", order_json))


def outputs(registry) -> Outputs:
    return Outputs(registry, "t.decisions", "t.traces", "t.dlq")


def rules() -> Rules:
    return Rules(NOW, {"m0001": GOOD}, DEFAULT_POLICY_SET, None, ModelState(), False, b"secret")


def candidate(registry, order_json, order_id: str, offset: int):
    msg = message(encoded_order(registry, order_json, order_id), offset)
    accepted = accept_order(msg, NOW, registry, 65536, "t.dlq")
    assert isinstance(accepted, Accepted)
    identity = {"identity_id": "i1", "orders": 1, "names": 1, "phones": 1, "emails": 1}
    entities = candidate_entities(accepted.order, "i1", b"secret")
    return Candidate(msg, accepted.order, identity, {}, entities)


def loaded(n: int) -> Loaded:
    return Loaded({}, {}, [0] * n)


def test_a_valid_order_is_accepted_and_garbage_becomes_a_dead_letter(registry, order_json):
    ok = accept_order(
        message(encoded_order(registry, order_json, "o-9"), 3), NOW, registry, 65536, "t.dlq"
    )
    assert isinstance(ok, Accepted) and ok.order.order_id == "o-9"
    bad = accept_order(message(b"\x00garbage", 4), NOW, registry, 65536, "t.dlq")
    assert not isinstance(bad, Accepted)
    headers = dict(bad.headers)
    assert bad.topic == "t.dlq" and bad.value == b"\x00garbage"
    assert headers[REASON] == b"undecodable" and headers[SOURCE_OFFSET] == b"4"


def test_every_order_of_a_batch_gets_one_decision_and_one_trace(registry, order_json):
    batch = [candidate(registry, order_json, f"o-{i}", i) for i in range(5)]
    sent, changes = screen_batch(batch, loaded(5), rules(), outputs(registry))
    decisions = [registry.decode("Decision", o.value) for o in sent if o.topic == "t.decisions"]
    assert [d["order_id"] for d in decisions] == [f"o-{i}" for i in range(5)]
    assert sum(o.topic == "t.traces" for o in sent) == 5
    assert [o for o, _, _ in changes.decided] == [f"o-{i}" for i in range(5)]
    assert [s[0] for s in changes.snapshots] == [f"o-{i}" for i in range(5)]
    # each later order of the identity saw the earlier ones of the batch (velocity)
    assert [d["identity_id"] for d in decisions] == ["i1"] * 5
    assert len(changes.history) == 5


def test_a_poison_order_in_the_middle_costs_exactly_that_order(registry, order_json):
    batch = [
        candidate(registry, order_json, "o-1", 10),
        candidate(registry, order_json, "o-2", 11),  # its trace fails to encode
        candidate(registry, order_json, "o-3", 12),
    ]
    out = Outputs(TraceFailsFor(registry, "o-2"), "t.decisions", "t.traces", "t.dlq")
    sent, changes = screen_batch(batch, loaded(3), rules(), out)
    decided = [
        registry.decode("Decision", o.value)["order_id"] for o in sent if o.topic == "t.decisions"
    ]
    assert decided == ["o-1", "o-3"]
    dead = [o for o in sent if o.topic == "t.dlq"]
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers[REASON] == reasons.PROCESSING_ERROR.encode()
    assert headers[SOURCE_OFFSET] == b"11"
    assert dead[0].value == batch[1].message.value  # the original bytes, to replay after a fix
    # the poison order left no state behind: no snapshot, no history, no decision kept
    assert [o for o, _, _ in changes.decided] == ["o-1", "o-3"]
    assert [h[1][2] for h in changes.history] == ["o-1", "o-3"]
    counted = {ref: sums.sums[0] for ref, (sums, _) in changes.activity.items()}
    assert set(counted.values()) == {2.0}  # each entity: the two orders decided, not the third


def test_an_order_sees_its_entities_earlier_orders_of_the_batch_and_their_known_risk(
    registry, order_json
):
    batch = [candidate(registry, order_json, f"o-{n}", n) for n in range(3)]
    merchant = dict(batch[0].entities)["merchant"]
    known = EntityState()
    at_ms = int(batch[0].order.event_time.timestamp() * 1000)
    known.learn(at_ms, 1)  # a fraud at this merchant, reported as the batch's orders came
    state = Loaded({}, {}, [0] * 3, {merchant: known})
    _, changes = screen_batch(batch, state, rules(), outputs(registry))
    snaps = [snap for _, snap in changes.snapshots]
    assert snaps[0].features["identity:new"] == 1.0  # nothing known of the buyer's habits yet
    assert snaps[1].features["identity:new"] == 0.0  # the batch's first order is counted
    assert snaps[2].features["identity:n_1d"] > snaps[1].features["identity:n_1d"]
    # the merchant gives its known risk, not its activity (agents/entities.py ORDER_ACTIVITY)
    assert all(s.features["merchant:risk_30d"] == pytest.approx(0.5) for s in snaps)
    assert not any(name.startswith("merchant:n_") for name in snaps[2].features)
    assert "identity:risk_30d" not in snaps[0].features  # no label known of the buyer
    # the snapshot names the entities its label will feed, by keyed hash only
    assert snaps[0].entities == [ref for _, ref in batch[0].entities]
    assert [ref.partition(":")[0] for ref in snaps[0].entities] == ["identity", "merchant"]
    assert not any(raw in ref for raw in ("m0001", "i1") for ref in snaps[0].entities)


def test_approved_orders_become_purchases_of_their_merchant_s_audience(registry, order_json):
    buyer = {**order_json["buyer"], "gender": "FEMALE", "birth_date": "1990-04-01"}
    batch = [candidate(registry, {**order_json, "buyer": buyer}, "o-1", 1)]
    batch[0].attributes = {"prefecture_code": "13"}
    sent, changes = screen_batch(batch, loaded(1), rules(), outputs(registry))
    decision = registry.decode("Decision", sent[0].value)
    assert decision["decision"] == "APPROVE"
    day = (date(2026, 10, 1) - date(1970, 1, 1)).days  # the order's JST day, not now's
    # 36 on 2026-10-01: 35-39 (band 6); female (1); 東京都 (13)
    assert changes.segments == [("m0001", "i1", day, decision["amount"], "6,1,13")]
    declined = {**order_json, "amount": 10_000_000}  # far over any limit
    sent, changes = screen_batch(
        [candidate(registry, declined, "o-2", 2)], loaded(1), rules(), outputs(registry)
    )
    assert registry.decode("Decision", sent[0].value)["decision"] != "APPROVE"
    assert changes.segments == []


def test_the_same_order_twice_in_a_batch_is_decided_once(registry, order_json):
    batch = [candidate(registry, order_json, "o-1", 1), candidate(registry, order_json, "o-1", 2)]
    sent, changes = screen_batch(batch, loaded(2), rules(), outputs(registry))
    decisions = [o.value for o in sent if o.topic == "t.decisions"]
    assert len(decisions) == 2 and decisions[0] == decisions[1]
    assert len(changes.decided) == 1 and len(changes.history) == 1


def test_a_batch_screened_in_slices_decides_as_one_batch(registry, order_json):
    """The worker screens a batch a slice at a time (its state writes overlap the next slice):
    a later slice sees the earlier slices' orders, and an order repeated across slices is still
    decided once."""
    batch = [candidate(registry, order_json, f"o-{i}", i) for i in range(4)]
    batch.append(candidate(registry, order_json, "o-1", 4))
    whole, whole_changes = screen_batch(batch, loaded(5), rules(), outputs(registry))
    state, decided, sliced, history = loaded(5), {}, [], []
    for start in (0, 2, 4):
        cut = batch[start : start + 2]
        part = Loaded(state.histories, state.accounts, [0] * len(cut), state.entities)
        sent, changes = screen_batch(cut, part, rules(), outputs(registry), decided)
        sliced += sent
        history += changes.history
    assert len(history) == 4 == len(whole_changes.history)  # o-1 counted once
    assert [o.value for o in sliced] == [o.value for o in whole]


def test_state_loaded_a_chunk_at_a_time_is_the_batch_s_state_in_order():
    """The worker loads each identity chunk's state while Redis resolves the next chunk: the
    parts merged give every identity's state (a later chunk's load, after more merges in the
    graph, wins) and the device probes' failures in the candidates' order."""
    first = Loaded({"i1": [(1, 100, "o-1")]}, {"i1": {"open": {}}}, [0, 2], {"m": EntityState()})
    second = Loaded({"i1": [(1, 100, "o-1"), (2, 50, "o-9")], "i2": []}, {}, [5], {})
    merged = merge_loaded([first, second])
    assert merged.histories == {"i1": [(1, 100, "o-1"), (2, 50, "o-9")], "i2": []}
    assert merged.accounts == {"i1": {"open": {}}}
    assert merged.device_failures == [0, 2, 5]
    assert set(merged.entities) == {"m"}
    assert merge_loaded([first]) is first


@pytest.mark.parametrize(
    ("orders", "slice_size"), [(1, 25), (80, 25), (200, 50), (400, 100), (1000, 200), (5000, 200)]
)
def test_small_batches_are_written_in_smaller_slices(orders, slice_size):
    """Only the last slice's write runs alone: a small batch is cut in quarters (not below 25
    orders a write), a backlog's in slices of 200."""
    assert save_slice(orders) == slice_size


def test_velocity_history_round_trips_through_its_redis_members():
    entries = [
        (history_member(4980, "o-1").encode(), 1_000.0),
        (history_member(120, "o:2").encode(), 2_000.0),
    ]
    assert history_from_zset(entries) == [(1000, 4980, "o-1"), (2000, 120, "o:2")]


@pytest.mark.parametrize("offsets", [[5, 3, 9], [0], [7, 8]])
def test_a_batch_commits_past_its_last_offset_and_rewinds_to_its_first(offsets):
    batch = [message(b"", o, partition=o % 2) for o in offsets]
    for p in {m.partition for m in batch}:
        mine = [m.offset for m in batch if m.partition == p]
        assert {tp.offset for tp in next_offsets(batch) if tp.partition == p} == {max(mine) + 1}
        assert {tp.offset for tp in first_offsets(batch) if tp.partition == p} == {min(mine)}


def test_a_batch_s_stopwatch_counts_from_the_poll_and_says_where_the_time_went(caplog):
    import logging
    import re
    import time

    from streams.txloop import Stopwatch

    polled = time.perf_counter() - 0.3  # taken 300 ms ago, in the I/O thread
    watch = Stopwatch("screen", started=polled)
    watch.lap("queued")
    watch.lap("handle")
    assert watch.laps[0][1] >= 0.3 and watch.total >= 0.3
    with caplog.at_level(logging.WARNING, logger="streams.txloop"):
        watch.log_if_slow("batch", 10)
    assert "slow batch of 10 messages" in caplog.text
    queued = re.search(r"queued (\d+) ms", caplog.text)
    assert queued is not None and int(queued.group(1)) >= 300
