"""The review queue and `shinsa explain` without a broker: masking, the queue's scan logic,
verdict checks, key partitions and the trace's presentation."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from rich.console import Console

from streams.errors import UserError
from streams.tools.explain import describe, fired_status, trace_renderables
from streams.tools.review import (
    awaiting_review,
    check_resolvable,
    key_partition,
    mask_email,
    mask_name,
    mask_phone,
    masked_buyer,
    newest_decisions,
    order_ingest_ms,
    review_row,
    review_table,
    reviewer_verdicts,
    verdict_outcome,
)
from streams.tools.simulate import SimConfig, Simulator
from tests.unit.conftest import VALID_JSON

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


# ---------------------------------------------------------------- masking


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("山田 太郎", "山***"),
        ("髙橋\u3000花子", "髙***"),  # full-width space, variant kanji kept as typed
        ("\u3000 斎藤一", "斎***"),  # leading spaces are not the initial
        ("ヤマダ タロウ", "ヤ***"),
        ("やまだ たろう", "や***"),
        ("ﾀﾞｲｽｹ", "ダ***"),  # half-width kana with its voicing mark: one character
        ("タ\u3099イスケ", "ダ***"),  # decomposed voicing mark
        ("taro yamada", "T***"),
        ("Ｔａｒｏ", "T***"),  # full-width latin
    ],
)
def test_a_name_shows_its_initial_only(name, masked):
    assert mask_name(name) == masked


@pytest.mark.parametrize("empty", [None, "", "   ", "\u3000"])
def test_no_name_is_none(empty):
    assert mask_name(empty) is None


@pytest.mark.parametrize(
    "phone",
    [
        "090-1234-5678",
        "09012345678",
        "+81 90-1234-5678",
        "(090)1234-5678",
        "０９０－１２３４－５６７８",
        "03-9876-5678",
        "0120-12-5678",
    ],
)
def test_a_phone_shows_its_last_four_digits_whatever_the_format(phone):
    assert mask_phone(phone) == "***-5678"


@pytest.mark.parametrize(("phone", "masked"), [("110", "***"), ("1234-567", "***"), (None, None)])
def test_a_short_phone_shows_nothing(phone, masked):
    assert mask_phone(phone) == masked


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("taro@example.co.jp", "t***@example.co.jp"),
        ("Taro.Yamada+shop@Gmail.COM", "T***@gmail.com"),
        ("ｔａｒｏ＠ｅｘａｍｐｌｅ．ｃｏ．ｊｐ", "t***@example.co.jp"),  # full-width
        ('"a@b"@example.com', '"***@example.com'),  # the domain follows the last @
        ("no-at-sign", "***"),
        ("@example.com", "***"),
        ("taro@", "***"),
        (None, None),
        ("", None),
    ],
)
def test_an_email_shows_its_first_character_and_domain(email, masked):
    assert mask_email(email) == masked


def test_simulated_buyers_never_appear_in_a_review_row(registry):
    """Thousands of realistic buyers (variants included): nothing but the masks comes out."""
    events = Simulator(SimConfig(orders=600, seed=5, fraud_rate=0.2, end=T0)).events()
    decision = registry.from_json("Decision", VALID_JSON["Decision"])
    for event in (e for e in events if e.topic == "orders"):
        order = registry.from_json("Order", event.value)
        out = orjson.dumps(review_row(decision, order)).decode()
        buyer = order["buyer"]
        name = buyer["name"]
        assert name not in out and name.replace(" ", "").replace("\u3000", "") not in out
        assert buyer["name_kana"] not in out
        local = buyer["email"].rpartition("@")[0]
        assert len(local) < 2 or local not in out
        digits = "".join(c for c in buyer["phone"] if c.isdigit())
        assert digits not in out and digits[-8:] not in out
        assert buyer["address"]["street"] not in out and buyer["birth_date"] not in out


def test_a_missing_order_masks_to_nothing():
    assert masked_buyer(None) == {"buyer": None, "phone": None, "email": None}


# ---------------------------------------------------------------- the queue


def decision(order_id: str, verdict: str, minutes: int, **kw) -> dict:
    return {
        "order_id": order_id,
        "merchant_id": "m0001",
        "identity_id": "i1",
        "decision": verdict,
        "score": 0.6,
        "reasons": ["AMOUNT_OVER_REVIEW_LIMIT", "SCORE_RULES_ONLY"],
        "amount": 150_000,
        "merchant_category": "FOOD",
        "decided_at": T0 + timedelta(minutes=minutes),
        "latency_ingest_ms": 12.5,
        **kw,
    }


def outcome(order_id: str, kind: str, source: str, minutes: int) -> dict:
    return {
        "order_id": order_id,
        "kind": kind,
        "source": source,
        "event_time": T0 + timedelta(minutes=minutes),
        "note": None,
    }


def test_the_queue_is_review_decisions_without_a_verdict_oldest_first():
    decisions = [
        decision("o-late", "REVIEW", 30),
        decision("o-early", "REVIEW", 10),
        decision("o-approved", "APPROVE", 5),
        decision("o-declined", "DECLINE", 6),
        decision("o-done", "REVIEW", 1),
        decision("o-redelivered", "REVIEW", 20),
        decision("o-redelivered", "REVIEW", 20),  # a crash re-emitted it: listed once
        decision("o-resent", "REVIEW", 2),
        decision("o-resent", "APPROVE", 40),  # the order was sent again and approved
    ]
    verdicts = reviewer_verdicts([outcome("o-done", "FRAUD_CONFIRMED", "REVIEWER", 50)])
    waiting = awaiting_review(decisions, verdicts)
    assert [d["order_id"] for d in waiting] == ["o-early", "o-redelivered", "o-late"]


def test_only_a_reviewers_confirmation_is_a_verdict():
    outcomes = [
        outcome("o-1", "PAID", "COLLECTIONS", 1),
        outcome("o-2", "CHARGEBACK", "ISSUER", 1),
        outcome("o-3", "UNPAID", "REVIEWER", 1),  # not a verdict kind
        outcome("o-4", "FRAUD_CONFIRMED", "MERCHANT", 1),
        outcome("o-5", "LEGIT_CONFIRMED", "REVIEWER", 1),
        outcome("o-6", "LEGIT_CONFIRMED", "REVIEWER", 1),
        outcome("o-6", "FRAUD_CONFIRMED", "REVIEWER", 9),  # a correction wins
        outcome("o-6", "LEGIT_CONFIRMED", "REVIEWER", 5),  # read late, but older
    ]
    verdicts = reviewer_verdicts(outcomes)
    assert set(verdicts) == {"o-5", "o-6"}
    assert verdicts["o-6"]["kind"] == "FRAUD_CONFIRMED"


def test_newest_decision_wins_per_order():
    newest = newest_decisions([decision("o", "REVIEW", 3), decision("o", "APPROVE", 1)])
    assert newest["o"]["decision"] == "REVIEW"


def test_the_order_was_ingested_its_latency_before_the_decision():
    d = decision("o", "REVIEW", 0, latency_ingest_ms=1500.0)
    assert order_ingest_ms(d) == int(T0.timestamp() * 1000) - 1500


def test_the_table_prints_ids_and_buyers_as_data_not_markup(registry, order_json):
    order_json["buyer"] |= {"name": "[bold]山田", "email": "taro@[192.0.2.1]"}
    order = registry.from_json("Order", order_json)
    row = review_row(decision("o-[red]1[/red]", "REVIEW", 0), order)
    console = Console(record=True, width=250)
    console.print(review_table([row], 3))
    text = console.export_text()
    assert "o-[red]1[/red]" in text and "t***@[192.0.2.1]" in text and "[***" in text
    assert "3 orders awaiting review, the oldest 1 shown" in text


# ---------------------------------------------------------------- verdicts


def test_an_unknown_order_cannot_be_resolved():
    with pytest.raises(UserError, match=r"'o-x' is unknown.*expired"):
        check_resolvable("o-x", None, force=True)


@pytest.mark.parametrize("decided", ["APPROVE", "DECLINE"])
def test_an_automatic_decision_needs_force(decided):
    with pytest.raises(UserError, match=f"decided {decided}, not REVIEW.*--force"):
        check_resolvable("o-1", {"d": decided}, force=False)
    assert check_resolvable("o-1", {"d": decided}, force=True) == decided


def test_a_review_decision_is_resolvable_and_an_unrecorded_one_is_not():
    assert check_resolvable("o-1", {"d": "REVIEW", "x": {}}, force=False) == "REVIEW"
    with pytest.raises(UserError, match="unrecorded decision"):
        check_resolvable("o-1", {"x": {}}, force=False)


@pytest.mark.parametrize(
    ("verdict", "kind"), [("fraud", "FRAUD_CONFIRMED"), ("legit", "LEGIT_CONFIRMED")]
)
def test_a_verdict_is_a_valid_reviewer_outcome(registry, verdict, kind):
    value = verdict_outcome("o-1", verdict, "called the buyer", T0)
    datum = registry.decode(
        "Outcome", registry.encode("Outcome", registry.from_json("Outcome", value))
    )
    assert datum == {
        "order_id": "o-1",
        "event_time": T0,
        "kind": kind,
        "source": "REVIEWER",
        "note": "called the buyer",
        "subject": "ORDER",
    }


def test_an_unknown_verdict_is_refused():
    with pytest.raises(UserError, match="fraud, legit"):
        verdict_outcome("o-1", "maybe", None, T0)


# ---------------------------------------------------------------- partitions


@pytest.mark.parametrize(
    ("key", "java_murmur2"),  # Kafka's own test vectors (Utils.murmur2, signed int)
    [(b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536)],
)
@pytest.mark.parametrize("partitions", [1, 4, 7, 12])
def test_keys_map_to_the_partition_java_clients_choose(key, java_murmur2, partitions):
    assert key_partition(key, partitions) == (java_murmur2 & 0x7FFFFFFF) % partitions


def test_keys_map_to_the_partition_faust_chooses():
    rng = random.Random(3)
    for _ in range(500):
        key = f"o-{rng.randrange(10**9)}".encode()
        n = rng.randint(1, 16)
        assert key_partition(key, n) == DefaultPartitioner()(key, list(range(n)), list(range(n)))


# ---------------------------------------------------------------- explain


@pytest.fixture
def trace(registry) -> dict:
    return registry.from_json("DecisionTrace", VALID_JSON["DecisionTrace"])


def test_reasons_are_described_from_the_catalogue():
    assert describe("AMOUNT_OVER_REVIEW_LIMIT").startswith("Order amount is above")
    assert describe("MODEL:velocity_count_1h").startswith("MODEL:<feature>")
    assert "not in the catalogue" in describe("SOMETHING_NEW")


def test_rules_overridden_by_the_allow_list_are_named(trace):
    trace = trace | {"reasons": ["ALLOW_LISTED"], "fired": ["BLOCK_LISTED", "EXPOSURE_OVER_LIMIT"]}
    assert fired_status(trace) == [
        ("BLOCK_LISTED", "overridden by the allow list"),
        ("EXPOSURE_OVER_LIMIT", "overridden by the allow list"),
    ]
    decided = trace | {
        "reasons": ["AMOUNT_OVER_REVIEW_LIMIT"],
        "fired": ["AMOUNT_OVER_REVIEW_LIMIT"],
    }
    assert fired_status(decided) == [("AMOUNT_OVER_REVIEW_LIMIT", "decided (in the reasons)")]


def rendered(trace: dict) -> str:
    console = Console(record=True, width=200)
    for part in trace_renderables(trace):
        console.print(part)
    return console.export_text()


def test_explain_shows_every_part_of_the_trace(trace):
    trace = trace | {
        "merchant_override": True,
        "thresholds": {"review_score": 0.5, "review_amount": 100_000.0},
        "inputs": {"amount": 150_000.0, "outstanding": 0.0},
        "fired": ["AMOUNT_OVER_REVIEW_LIMIT"],
        "list_hits": {"hard_blocks": [], "allows": [], "blocks": ["phone", "device"]},
    }
    text = rendered(trace)
    for shown in (
        "REVIEW",
        "default-0123abcd",  # policy version
        "yes: the merchant's own rules",
        "MODEL:velocity_count_1h",
        "raised the model's score most",  # the MODEL: catalogue entry
        "Score is the online model's fraud probability",  # SCORE_MODEL's
        "100,000",  # a yen threshold
        "150,000",  # a rule input
        "phone, device",  # list hits
        "logreg-v3",
        "+1.3000",  # a contribution
        "DECLINE (score 0.6200, policy candidate-89abcdef",  # the shadow decision
        "velocity_count_1h",
    ):
        assert shown in text, shown


def test_explain_says_when_there_is_no_shadow_and_no_override(trace):
    text = rendered(trace | {"shadow": None, "model_warm": False})
    assert "no shadow policy" in text and "cold start" in text
    assert "merchant override │ no" in text
