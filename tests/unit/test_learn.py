"""The learner's join of a label to its snapshot, and the scorer's swap of checkpoints."""

from __future__ import annotations

import orjson

from agents.learn import Label, join_label
from agents.model import ModelState, encode_checkpoint
from agents.scorer import Scorer
from agents.state import Snapshot
from streams.metrics import MODEL_LOAD_FAILURES
from streams.settings import load_settings

settings = load_settings()
X = {"velocity_count_1h": 2.0, "amount_log": 9.1}


def snapshot(**extra) -> Snapshot:
    """A snapshot as Redis holds it (compact JSON), read back typed."""
    stored = {"x": dict(X), "s": 0.3, "v": "logreg-v0", "t": 1_000} | extra
    return Snapshot.from_json(orjson.dumps(stored))


def label(y: int = 1, oid: str = "o1") -> Label:
    return Label(oid, y, "FRAUD_CONFIRMED" if y else "PAID", 5_000)


def test_a_first_label_is_learned_and_scored_with_the_decision_time_score():
    state, snap, uncommitted = ModelState(), snapshot(), set()
    assert join_label(state, snap, label(), uncommitted) == "learned"
    assert state.labels == 1 and list(state.recent) == [(0.3, 1)]
    assert snap.label == 1 and snap.learned_version == state.version + 1
    # what is written back keeps the stored format
    assert orjson.loads(snap.to_json())["y"] == 1
    assert uncommitted == {"o1"}


def test_a_repeated_outcome_is_not_learned_twice():
    state, snap, uncommitted = ModelState(), snapshot(), set()
    join_label(state, snap, label(), uncommitted)
    assert join_label(state, snap, label(), uncommitted) == "duplicate"
    assert state.labels == 1


def test_a_changed_outcome_corrects_the_model_outside_the_metrics():
    state, snap, uncommitted = ModelState(), snapshot(), set()
    join_label(state, snap, label(0), uncommitted)  # paid …
    assert join_label(state, snap, label(1), uncommitted) == "corrected"  # … then charged back
    assert state.labels == 2
    assert len(state.recent) == 1, "the order is counted once in progressive validation"


def test_a_label_learned_by_a_learner_that_died_before_checkpointing_is_learned_again():
    restored = ModelState(version=4)  # newest checkpoint: v4
    snap = snapshot(y=1, lv=5)  # learned into v5, which was never published
    assert join_label(restored, snap, label(), set()) == "learned"
    assert restored.labels == 1
    published = snapshot(y=1, lv=4)  # learned into v4: already in the model
    assert join_label(restored, published, label(), set()) == "duplicate"


def checkpoint(version: int) -> bytes:
    state = ModelState(version=version)
    state.learn(X, 1, 0.5)
    return encode_checkpoint(state, settings.hash_key.get_secret_value().encode())


def test_the_scorer_swaps_in_newer_checkpoints_only():
    scorer = Scorer.of(settings)
    secret = settings.hash_key.get_secret_value().encode()
    assert scorer.state.name == f"{settings.model_estimator}-v0"
    assert scorer.apply(checkpoint(2), secret)
    assert scorer.state.version == 2
    assert not scorer.apply(checkpoint(1), secret)  # older: ignored
    assert scorer.state.version == 2


def test_a_bad_checkpoint_is_rejected_and_the_previous_model_kept():
    scorer = Scorer.of(settings)
    secret = settings.hash_key.get_secret_value().encode()
    scorer.apply(checkpoint(3), secret)
    before = MODEL_LOAD_FAILURES._value.get()
    assert not scorer.apply(b"garbage", secret)
    assert not scorer.apply(checkpoint(9), b"someone-elses-key")
    assert scorer.state.version == 3
    assert MODEL_LOAD_FAILURES._value.get() == before + 2
