"""agents/entities.py: decayed entity activity and known risk, and the learner's additions."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.entities import (
    ACTIVITY_WIDTH,
    DAY_MS,
    RISK_WIDTH,
    Decayed,
    EntityState,
    activity_features,
    activity_values,
    amount_bin,
    bin_of,
    entity_values,
    known_risk,
    risk_features,
)
from agents.learn import RiskChanges

T0 = 1_780_000_000_000  # an epoch ms in 2026
events = st.lists(
    st.tuples(st.integers(T0, T0 + 60 * DAY_MS), st.integers(1, 2_000_000)),
    min_size=1,
    max_size=40,
)


def close(a: list[float], b: list[float]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(a, b, strict=True))


@settings(max_examples=60, deadline=None)
@given(events, st.randoms(use_true_random=False))
def test_the_sums_do_not_depend_on_the_order_events_arrive_in(evts, rnd: random.Random) -> None:
    """Workers add to one merchant in any order; a late event lands at its own time."""
    in_order, shuffled = Decayed(ACTIVITY_WIDTH), Decayed(ACTIVITY_WIDTH)
    for at, amount in sorted(evts):
        in_order.add(at, activity_values(amount))
    rnd.shuffle(evts)
    for at, amount in evts:
        shuffled.add(at, activity_values(amount))
    end = max(at for at, _ in evts) + DAY_MS
    assert close(in_order.at(end), shuffled.at(end))


@settings(max_examples=60, deadline=None)
@given(events, events)
def test_merging_a_batch_equals_adding_its_events_one_by_one(stored, batch) -> None:
    """What the save script does with a batch's sums (entities.lua has the same arithmetic)."""
    one_by_one, merged, delta = Decayed(ACTIVITY_WIDTH), Decayed(ACTIVITY_WIDTH), None
    for at, amount in stored:
        one_by_one.add(at, activity_values(amount))
        merged.add(at, activity_values(amount))
    delta = Decayed(ACTIVITY_WIDTH)
    for at, amount in batch:
        one_by_one.add(at, activity_values(amount))
        delta.add(at, activity_values(amount))
    merged.merge(Decayed.from_text(ACTIVITY_WIDTH, delta.to_text()))
    end = max(at for at, _ in stored + batch)
    assert close(one_by_one.at(end), merged.at(end))


def test_text_round_trips_and_bad_text_is_nothing_known() -> None:
    sums = Decayed(RISK_WIDTH)
    sums.add(T0, (1.0, 1.0))
    sums.add(T0 + 3 * 3_600_000, (1.0, 0.0))
    again = Decayed.from_text(RISK_WIDTH, sums.to_text().encode())
    assert again == sums
    assert Decayed.from_text(RISK_WIDTH, None).empty
    assert Decayed.from_text(RISK_WIDTH, b"1,2,3").empty  # another width: start afresh


def test_sums_written_before_the_surprise_count_are_widened_not_dropped() -> None:
    """A worker upgraded over Redis kept by the last release keeps every entity's habits."""
    old = "1780000000000,1,2,3,4,5,6,7,8,9"  # count, Σ log, Σ log² at 1, 7 and 30 days
    widened = Decayed.from_text(ACTIVITY_WIDTH, old)
    assert widened.at_ms == T0
    assert widened.sums == [1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0]
    assert Decayed.from_text(RISK_WIDTH, old).empty  # wider than the layout: not ours


def test_the_sums_fade_with_each_time_constant() -> None:
    sums = Decayed(RISK_WIDTH)
    sums.add(T0, (1.0, 1.0))
    one_day, week, month = sums.at(T0 + DAY_MS)[0], sums.at(T0 + DAY_MS)[2], sums.at(T0 + DAY_MS)[4]
    assert one_day == pytest.approx(math.exp(-1))
    assert week == pytest.approx(math.exp(-1 / 7))
    assert month == pytest.approx(math.exp(-1 / 30))
    assert sums.at(T0 - DAY_MS) == sums.sums  # before its reference: nothing is un-learned


def habits(amounts: list[int], every_ms: int = 6 * 3_600_000) -> EntityState:
    state = EntityState()
    for n, amount in enumerate(amounts):
        state.record(T0 + n * every_ms, activity_values(amount))
    return state


def test_an_amount_five_times_the_habit_stands_out() -> None:
    rnd = random.Random(3)
    state = habits([max(1, round(rnd.gauss(60, 15))) for _ in range(120)])
    now = T0 + 120 * 6 * 3_600_000
    usual = activity_features("card", state, now, 60)
    leaked = activity_features("card", state, now, 300)
    assert abs(usual["card:z_30d"]) < 1 and leaked["card:z_30d"] > 3
    difference = leaked["card:vs_mean_30d"] - usual["card:vs_mean_30d"]
    assert difference == pytest.approx(math.log1p(300) - math.log1p(60))
    bins = [int(k.rpartition("=")[2]) for f in (usual, leaked) for k in f if "30d_bin=" in k]
    assert bins == [2, 8]  # about its habit; five times it (log ratio 1.5 to 2)
    assert usual["card:since_h"] == pytest.approx(math.log1p(6))
    assert activity_features("card", None, now, 60) == {"card:new": 1.0}


def test_a_leak_in_progress_counts_its_surprises() -> None:
    """Amounts far above the habit are counted, so the next one comes with the count: a
    one-off large purchase has none before it, a leaked card's third fraud has two."""
    rnd = random.Random(5)
    state = habits([max(1, round(rnd.gauss(60, 15))) for _ in range(120)])
    now = T0 + 120 * 6 * 3_600_000
    for n, amount in enumerate([300, 55, 320]):  # five times the habit, usual, five times
        at = now + n * 3_600_000
        features = activity_features("card", state, at, amount)
        assert "card:surprise_1d" not in features if n == 0 else "card:surprise_1d" in features
        state.record(at, entity_values("card", amount, features))
    at = now + 3 * 3_600_000
    third = activity_features("card", state, at, 310)
    two = math.exp(-3 / 24) + math.exp(-1 / 24)  # the two surprises, 3 h and 1 h ago
    assert third["card:surprise_1d"] == pytest.approx(math.log1p(two))
    assert third["card:surprise_7d"] > third["card:surprise_1d"]
    weeks_later = activity_features("card", state, at + 40 * DAY_MS, 60)
    assert "card:surprise_1d" not in weeks_later and "card:surprise_7d" not in weeks_later
    assert entity_values("card", 300, {})[3] == 0.0  # no habit yet: nothing to be above


def test_known_risk_is_the_share_of_known_frauds() -> None:
    terminal = EntityState()
    assert risk_features("terminal", terminal, T0) == {}  # no label known yet
    for n in range(4):
        terminal.learn(T0 + n, 1)
    f = risk_features("terminal", terminal, T0 + 10)
    assert f["terminal:risk_1d"] == pytest.approx(4 / 5)  # one imaginary good label
    assert f["terminal:frauds_7d"] == pytest.approx(math.log1p(4))
    assert f["terminal:risk_bin=4"] == 1.0
    clean = EntityState()
    clean.learn(T0, 0)
    assert risk_features("terminal", clean, T0)["terminal:risk_bin=0"] == 1.0
    both = known_risk([("terminal", terminal), ("customer", None)], T0 + 10)
    assert both == f  # an entity with nothing known adds nothing


def test_bins() -> None:
    assert [bin_of(v, (0.0, 0.5)) for v in (-1, 0, 0.2, 0.5, 0.9)] == [0, 0, 1, 1, 2]
    assert amount_bin(0) == 0 and amount_bin(256) == 32 and amount_bin(255) == 31
    assert amount_bin(221) == amount_bin(250) != amount_bin(200)


def test_a_label_counts_once_per_order_whatever_the_learner_does() -> None:
    risk = RiskChanges()
    risk.add(["merchant:m", "device:d"], T0, None, 1)  # first label of the order
    risk.add(["merchant:m"], T0, 1, 1)  # re-learned after a learner died: already counted
    risk.add(["merchant:n"], T0, 0, 1)  # paid, then charged back: the fraud, not the label
    risk.add([], T0, None, 1)  # an order without entities
    assert risk.sums["merchant:m"].sums[:2] == [1.0, 1.0]
    assert risk.sums["device:d"].sums[:2] == [1.0, 1.0]
    assert risk.sums["merchant:n"].sums[:2] == [0.0, 1.0]
    assert set(risk.sums) == {"merchant:m", "device:d", "merchant:n"}
