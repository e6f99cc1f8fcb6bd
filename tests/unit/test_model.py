"""agents/model.py, the learner's join (agents/learn.py) and the scorer's checkpoint swap."""

from __future__ import annotations

import pickle
import random
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.model import (
    CREDIT_LEARNING_RATE,
    CREDIT_PRIOR_UNPAID,
    MAGIC,
    CheckpointError,
    ModelState,
    archive_key,
    archived_checkpoint,
    average_precision,
    credit_label_of,
    decode_checkpoint,
    decode_switch,
    encode_checkpoint,
    encode_switch,
    label_of,
    log_loss,
    recall_at_review_rate,
    roc_auc,
    verify_checkpoint,
)

KEY = b"test-key"


def trained(n: int = 600, seed: int = 3) -> ModelState:
    """A model that learned 'fraud when velocity is high', with noise features."""
    rng = random.Random(seed)
    state = ModelState()
    for _ in range(n):
        fraud = rng.random() < 0.2
        x = {"velocity_count_1h": rng.gauss(4 if fraud else 0.5, 1), "noise": rng.random()}
        state.learn(x, int(fraud), state.score(x))
    return state


def test_roc_auc_and_average_precision_by_hand():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert roc_auc(scores, labels) == 0.75
    assert average_precision(scores, labels) == pytest.approx((1 + 2 / 3) / 2)
    assert roc_auc([0.5] * 4, labels) == 0.5  # ties count half
    assert roc_auc([1, 2], [1, 1]) is None  # one class only
    assert log_loss([0.5, 0.5], [0, 1]) == pytest.approx(0.693147, abs=1e-6)
    assert recall_at_review_rate([0.9, 0.8, 0.1, 0.2], [1, 0, 1, 0], 0.25) == 0.5


@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 1)), min_size=2, max_size=60))
def test_auc_is_the_share_of_correctly_ordered_pairs(pairs):
    scores = [s for s, _ in pairs]
    labels = [y for _, y in pairs]
    pos = [s for s, y in pairs if y]
    neg = [s for s, y in pairs if not y]
    if not pos or not neg:
        assert roc_auc(scores, labels) is None
        return
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert roc_auc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))


def test_fraud_and_repayment_outcomes_label_different_models():
    assert [label_of(k) for k in ("FRAUD_CONFIRMED", "CHARGEBACK")] == [1, 1]
    assert [label_of(k) for k in ("PAID", "LEGIT_CONFIRMED")] == [0, 0]
    assert label_of("UNPAID") is None  # a late payer is not a fraudster
    assert label_of("SOMETHING_ELSE") is None
    assert [credit_label_of(k) for k in ("UNPAID", "PAID")] == [1, 0]
    assert [credit_label_of(k) for k in ("FRAUD_CONFIRMED", "CHARGEBACK")] == [None, None]


def test_the_model_learns_and_names_the_feature_behind_a_high_score():
    state = trained()
    risky = {"velocity_count_1h": 5.0, "noise": 0.5}
    calm = {"velocity_count_1h": 0.0, "noise": 0.5}
    assert state.score(risky) > 0.8 > 0.2 > state.score(calm)
    assert state.contributions(risky)[0][0] == "velocity_count_1h"
    assert state.contributions(calm) == []  # nothing raised it
    summary = state.summary()
    assert summary["labels"] == 600 and summary["features"] == 2
    assert summary["roc_auc"] > 0.9  # progressive: each score given before its label


@given(st.integers(0, 2**16))
def test_the_folded_score_is_river_s_pipeline_score(seed):
    """The hot path scores with the logistic pipeline folded into one linear form
    (agents/model.py Folded): the same probability and the same reasons as running River's
    filler, scaler and regression, after every label, for one-hots, constant and unseen
    features alike."""
    rng = random.Random(seed)
    state = ModelState()
    for step in range(60):
        x = {
            "amount": rng.lognormvariate(8, 1),
            "constant": 1.0,
            f"category={rng.choice('ABC')}": 1.0,
        }
        if rng.random() < 0.5:
            x["velocity_count_1h"] = float(rng.randrange(6))
        if step > 40:
            x["never_learned"] = rng.random()
        pipeline = state.estimator
        scaled = pipeline.transform_one(dict(x))
        river = pipeline["LogisticRegression"].predict_proba_one(scaled)[True]
        assert state.score(x) == pytest.approx(river, rel=1e-9, abs=1e-12)
        weights = pipeline["LogisticRegression"].weights
        parts = [(n, weights.get(n, 0.0) * scaled.get(n, 0.0)) for n in x]
        named = [n for n, p in sorted(parts, key=lambda p: -p[1]) if p > 0.05 + 1e-9][:3]
        assert [n for n, _ in state.contributions(x)][: len(named)] == named
        if step <= 40:
            state.learn(x, int(rng.random() < 0.3), None)


def test_an_untrained_model_says_nothing_about_contributions():
    assert ModelState().contributions({"velocity_count_1h": 5.0}) == []


def test_warm_needs_labels_of_both_kinds():
    state = trained(200)
    assert state.warm(100, 5)
    assert not state.warm(300, 5)
    assert not state.warm(100, 10_000)


def test_a_checkpoint_round_trips_with_its_summary_readable_without_unpickling():
    state = trained()
    state.version, state.offsets, state.pending = 7, {0: 12, 3: 4}, {"o1": {"y": 1}}
    blob = encode_checkpoint(state, KEY)
    header, _ = verify_checkpoint(blob, KEY)
    assert header["version"] == "logreg-v7" and header["labels"] == 600
    loaded = decode_checkpoint(blob, KEY)
    x = {"velocity_count_1h": 3.0, "noise": 0.1}
    assert loaded.score(x) == state.score(x)
    assert (loaded.offsets, loaded.pending) == (state.offsets, state.pending)


@pytest.mark.parametrize(
    ("blob", "why"),
    [
        (None, "bad magic"),
        (b"not a model", "bad magic"),
        (MAGIC + b"x" * 10, "truncated"),
    ],
)
def test_garbage_is_refused_with_a_reason(blob, why):
    with pytest.raises(CheckpointError, match=why):
        decode_checkpoint(blob, KEY)


def test_a_tampered_or_foreign_checkpoint_is_refused_before_unpickling():
    blob = bytearray(encode_checkpoint(trained(50), KEY))
    with pytest.raises(CheckpointError, match="another SHINSA_HASH_KEY"):
        decode_checkpoint(bytes(blob), b"other-key")
    blob[-5] ^= 0xFF
    with pytest.raises(CheckpointError, match="signature does not match"):
        decode_checkpoint(bytes(blob), KEY)


def test_a_signed_checkpoint_of_something_else_is_refused():
    import hashlib
    import hmac

    header = b"{}"
    body = struct.pack(">I", len(header)) + header + zlib.compress(pickle.dumps({"not": "a model"}))
    blob = MAGIC + hmac.new(KEY, body, hashlib.sha256).digest() + body
    with pytest.raises(CheckpointError, match="not a ModelState"):
        decode_checkpoint(blob, KEY)


def test_one_hot_features_are_learned_and_named():
    """A category seen only as 1 must still count (a running scaler would zero it)."""
    rng = random.Random(5)
    state = ModelState()
    for _ in range(800):
        risky = rng.random() < 0.3
        x = {"category=TICKETS" if risky else "category=FOOD": 1.0, "amount_log": rng.gauss(8, 1)}
        fraud = rng.random() < (0.6 if risky else 0.02)
        state.learn(x, int(fraud), state.score(x))
    tickets = {"category=TICKETS": 1.0, "amount_log": 8.0}
    food = {"category=FOOD": 1.0, "amount_log": 8.0}
    assert state.score(tickets) > 3 * state.score(food)
    assert state.contributions(tickets)[0][0] == "category=TICKETS"


# ---------------------------------------------------------------- champion / challenger


def labelled(n: int, seed: int) -> list[tuple[dict[str, float], int]]:
    """Fraud above an amount step: a tree draws it, a linear model only approaches it."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        amount = rng.uniform(0, 10)
        out.append(({"amount": amount, "noise": rng.random()}, int(amount > 8)))
    return out


def test_a_challenger_learns_the_same_labels_judged_on_its_own_scores():
    state = ModelState()
    state.add_challenger("tree")
    for x, y in labelled(3000, 1):
        state.learn_both(x, y, state.score(x), state.shadow_score(x))
    assert state.challenger is not None
    assert state.challenger.labels == state.labels == 3000
    assert state.challenger.positives == state.positives
    mine, theirs = state.metrics(), state.challenger.metrics()
    assert mine["roc_auc"] is not None and theirs["roc_auc"] is not None
    assert mine["roc_auc"] != theirs["roc_auc"]  # each judged on the scores it gave
    summary = state.summary()
    assert summary["challenger"]["kind"] == "tree" and summary["promotions"] == 0
    assert ModelState().shadow_score({"amount": 1.0}) is None  # no challenger: no shadow


def test_promotion_swaps_the_models_keeps_the_learner_books_and_is_undone_by_another():
    state = ModelState()
    state.add_challenger("tree")
    for x, y in labelled(500, 2):
        state.learn_both(x, y, state.score(x), state.shadow_score(x))
    state.version, state.offsets, state.pending = 9, {0: 500}, {"o9": {"y": 1}}
    x = {"amount": 9.0, "noise": 0.5}
    champion, challenger = state.score(x), state.shadow_score(x)
    record = state.promote(1_800_000_000.0, "ops@host")
    assert state.kind == "tree" and state.challenger is not None
    assert state.challenger.kind == "logreg"
    assert (state.score(x), state.shadow_score(x)) == (challenger, champion)
    assert (state.version, state.offsets, state.pending) == (9, {0: 500}, {"o9": {"y": 1}})
    assert record["from"] == "logreg" and record["to"] == "tree" and record["by"] == "ops@host"
    assert state.summary()["promoted_at"] == 1_800_000_000.0
    blob = encode_checkpoint(state, KEY)
    loaded = decode_checkpoint(blob, KEY)
    assert loaded.kind == "tree" and loaded.promotions == state.promotions
    assert loaded.challenger is not None and loaded.challenger.score(x) == champion
    state.promote(1_800_000_100.0, "ops@host")  # undo
    assert state.kind == "logreg" and state.score(x) == champion
    assert len(state.promotions) == 2 and state.challenger.challenger is None
    with pytest.raises(ValueError, match="no challenger"):
        ModelState().promote(0.0, "ops")


def test_a_rollback_returns_to_the_archived_models_and_keeps_the_learner_books():
    archived = trained(300, seed=4)
    archived.version = 5
    blob = encode_checkpoint(archived, KEY)
    state = decode_checkpoint(blob, KEY)
    x = {"velocity_count_1h": 3.0, "noise": 0.1}
    then = state.score(x)
    rng = random.Random(9)
    for _ in range(400):  # it learns on, from labels that say the opposite
        z = {"velocity_count_1h": rng.gauss(3, 1), "noise": rng.random()}
        state.learn(z, 0, state.score(z))
    state.credit_model().learn({"held": 1.0}, 1, 0.05)
    state.version, state.offsets, state.pending = 11, {0: 900}, {"o7": {"y": 1}}
    assert state.score(x) < then
    record = state.roll_back(decode_checkpoint(blob, KEY), 1_800_000_000.0, "ops@host")
    assert state.score(x) == then and state.labels == 300
    assert (state.version, state.offsets, state.pending) == (11, {0: 900}, {"o7": {"y": 1}})
    assert state.credit is not None and state.credit.labels == 1  # the credit model stays
    assert record == {
        "at": 1_800_000_000.0,
        "by": "ops@host",
        "from": 11,
        "to": 5,
        "from_labels": 700,
        "to_labels": 300,
        "version": 12,
        "credit": False,
    }
    summary = decode_checkpoint(encode_checkpoint(state, KEY), KEY).summary()
    assert (summary["rollbacks"], summary["rolled_back_to"]) == (1, 5)
    assert summary["rolled_back_at"] == 1_800_000_000.0
    state.roll_back(decode_checkpoint(blob, KEY), 1_800_000_100.0, "ops@host", credit=True)
    assert state.credit is None and len(state.rollbacks) == 2  # the archived one had none


def test_archive_keys_name_their_checkpoint_and_nothing_else():
    assert archived_checkpoint(archive_key(42)) == 42
    for other in (b"model", b"switch", b"model@", b"model@x1", None):
        assert archived_checkpoint(other) is None


def test_the_kill_switch_message_is_signed():
    blob = encode_switch(True, "ops@host", 1_800_000_000.0, "AUC fell", KEY)
    assert decode_switch(blob, KEY) == {
        "rules_only": True,
        "by": "ops@host",
        "at": 1_800_000_000.0,
        "reason": "AUC fell",
    }
    with pytest.raises(CheckpointError, match="another SHINSA_HASH_KEY"):
        decode_switch(blob, b"other-key")
    with pytest.raises(CheckpointError, match="bad magic"):
        decode_switch(b'{"rules_only": true}', KEY)


def test_a_checkpoint_from_before_the_challenger_loads_without_one():
    state = trained(50)
    old = dict(state.__dict__)
    del old["challenger"], old["promotions"], old["payment_estimators"]
    before = ModelState.__new__(ModelState)
    before.__setstate__(old)
    assert before.challenger is None and before.promotions == []
    assert before.summary()["challenger"] is None


def test_the_credit_model_learns_at_its_own_slow_rate_across_checkpoints() -> None:
    """The credit model's steps are CREDIT_LEARNING_RATE (few, late labels: a slow constant),
    from a prior unpaid share, not 0.5; the fraud model's keep their schedule, and a reloaded
    checkpoint keeps both."""
    state = trained()
    credit = state.credit_model()
    for n in range(50):
        credit.learn({"credit_late": float(n % 3)}, int(n % 3 == 2), None)
    loaded = decode_checkpoint(encode_checkpoint(state, KEY), KEY)

    def rate(model: ModelState) -> float:
        optimizer = model.estimator[-1].optimizer
        return optimizer.learning_rate  # the scheduler's rate at the optimizer's current step

    assert loaded.credit is not None
    assert rate(loaded.credit) == CREDIT_LEARNING_RATE
    assert ModelState().credit_model().score({}) == pytest.approx(CREDIT_PRIOR_UNPAID)
    assert rate(loaded) > 5 * CREDIT_LEARNING_RATE  # 0.05 / (600 + 1) ** 0.25 ≈ 0.01
    assert loaded.credit.score({"credit_late": 2.0}) > loaded.credit.score({"credit_late": 0.0})
