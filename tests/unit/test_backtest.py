"""streams/tools/backtest.py: delays, event-time replay without leakage, entity risk, inputs,
errors."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import random
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from agents.model import label_of
from streams.errors import UserError
from streams.records import Order, Outcome, record_from_datum
from streams.settings import load_settings
from streams.tools.backtest import (
    Columns,
    EntityRisk,
    EvalOptions,
    Txn,
    column_features,
    column_kinds,
    label_times,
    labels_of,
    parse_delay,
    read_simulated,
    replay,
    report_table,
    run_eval,
    schedule,
    table_history,
)
from streams.tools.publish import write_events
from streams.tools.simulate import SimConfig, Simulator

HOUR = 3_600_000
BASE = datetime(2026, 1, 1, tzinfo=UTC)
COLUMNS = Columns(label="fraud", time="when", amount="amount", entities=("customer",))
VOLATILE = ("file", "seconds")  # differ between two runs on the same data


# ------------------------------------------------------------------ helpers


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def entity_fraud(entities: int = 150, per: int = 5, seed: int = 1) -> list[dict[str, Any]]:
    """Customers whose transactions are all fraud or all legitimate, an hour apart; nothing
    else tells them apart. Only a customer's earlier labels (risk) can predict its next ones."""
    rng = random.Random(seed)
    rows = []
    for e in range(entities):
        fraud = int(rng.random() < 0.3)
        start = BASE + timedelta(days=rng.uniform(0, 60))
        for k in range(per):
            rows.append(
                {
                    "tx": f"t{e}-{k}",
                    "when": (start + timedelta(hours=k)).isoformat(),
                    "amount": rng.randint(100, 10_000),
                    "noise": round(rng.random(), 6),
                    "customer": f"c{e}",
                    "fraud": fraud,
                }
            )
    return rows


def run(path: Path, columns: Columns = COLUMNS, **kw: Any) -> dict[str, Any]:
    notes: list[str] = []
    report = run_eval(path, EvalOptions(columns=columns, **kw), load_settings(), say=notes.append)
    report["notes"] = notes
    return report


def stable(report: dict[str, Any]) -> dict[str, Any]:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        return value

    return strip(report)


# ------------------------------------------------------------------ delays


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30m", 30 * 60_000),
        ("12h", 12 * HOUR),
        ("7d", 7 * 24 * HOUR),
        ("1.5h", 90 * 60_000),
        ("2w", 14 * 24 * HOUR),
        ("45s", 45_000),
        (" 7D ", 7 * 24 * HOUR),
        ("0", 0),
        ("outcome", None),
    ],
)
def test_parse_delay(text: str, ms: int | None) -> None:
    assert parse_delay(text) == ms


@pytest.mark.parametrize("text", ["7", "d", "-1d", "7y", "seven days", "1d2h", ""])
def test_parse_delay_rejects(text: str) -> None:
    with pytest.raises(UserError, match="--delay"):
        parse_delay(text)


# ------------------------------------------------------------------ the replay's order


def test_labels_are_learned_delay_after_and_after_their_score(tmp_path: Path) -> None:
    history = table_history(write_csv(tmp_path / "t.csv", entity_fraud(40)), COLUMNS)
    txns = history.txns
    for delay in (0, HOUR // 2, 7 * 24 * HOUR):
        events: list[tuple[str, int, int]] = []

        def record(what: str, i: int, at: int, x: Any, events: list = events) -> None:
            events.append((what, i, at))

        replay(txns, label_times(txns, delay), "logreg", on_event=record)
        scored: dict[int, int] = {}
        learned = 0
        for position, (what, i, at) in enumerate(events):
            if what == "score":
                assert at == txns[i].time_ms
                scored[i] = position
            else:
                learned += 1
                assert i in scored, "a label was learned before its transaction was scored"
                assert at >= txns[i].time_ms + delay
        assert [at for _, _, at in events] == sorted(at for _, _, at in events)
        assert len(scored) == len(txns)
        last = txns[-1].time_ms
        assert learned == sum(1 for t in txns if t.time_ms + delay <= last)


def test_schedule_learns_known_labels_before_scoring_the_same_instant() -> None:
    txns = [Txn(0, 1, None, {}), Txn(HOUR, 0, None, {}), Txn(2 * HOUR, 0, None, {})]
    assert schedule(txns, label_times(txns, HOUR)) == [
        (0, 1, 0),  # score 0
        (HOUR, 0, 0),  # its label, known at 1h, before the 1h transaction is scored
        (HOUR, 1, 1),
        (2 * HOUR, 0, 1),
        (2 * HOUR, 1, 2),  # the last label (at 3h) comes after the history ends: left out
    ]
    assert schedule(txns, label_times(txns, 0)) == [
        (0, 1, 0),
        (0, 2, 0),  # no delay: right after its own score
        (HOUR, 1, 1),
        (HOUR, 2, 1),
        (2 * HOUR, 1, 2),
        (2 * HOUR, 2, 2),
    ]


def test_outcome_delay_uses_each_outcome_time() -> None:
    txns = [Txn(0, 1, 5 * HOUR, {}), Txn(HOUR, None, None, {}), Txn(2 * HOUR, 0, 3 * HOUR, {})]
    assert label_times(txns, None) == [5 * HOUR, None, 3 * HOUR]
    assert label_times(txns, HOUR) == [HOUR, None, 3 * HOUR]


def test_a_delay_hides_entity_labels_that_no_delay_reveals(tmp_path: Path) -> None:
    """Each customer's transactions span 4 h: with a 7-day delay no label of a customer is known
    while it shops, so nothing predicts fraud; learning labels at once makes risk decisive."""
    report = run(write_csv(tmp_path / "t.csv", entity_fraud()), delay="7d")
    assert report["delayed"]["roc_auc"] < 0.65
    assert report["no_delay"]["roc_auc"] > 0.85


def test_a_transaction_never_sees_its_own_label(tmp_path: Path) -> None:
    """One transaction per customer, random labels: even with no delay, nothing to learn."""
    rows = entity_fraud(entities=600, per=1, seed=2)
    rng = random.Random(3)
    for row in rows:
        row["fraud"] = int(rng.random() < 0.3)
    report = run(write_csv(tmp_path / "t.csv", rows), delay="0")
    assert abs(report["no_delay"]["roc_auc"] - 0.5) < 0.1
    assert abs(report["delayed"]["roc_auc"] - 0.5) < 0.1


# ------------------------------------------------------------------ entity risk


def test_entity_risk_counts_labels_from_when_they_are_known() -> None:
    risk = EntityRisk()
    a = (("customer", "a"),)
    assert risk.features(a, 0) == {}  # nothing known of it
    risk.learn(a, 0, 1)
    risk.learn(a, 10 * HOUR, 0)
    risk.learn(a, 5 * HOUR, 0)  # out of order: the sums do not care
    f = risk.features(a, 10 * HOUR)
    # decayed: the fraud known 10 h ago weighs exp(-10/24) in the 1-day sums
    fraud, labels = math.exp(-10 / 24), math.exp(-10 / 24) + math.exp(-5 / 24) + 1
    assert f["customer:risk_1d"] == pytest.approx(fraud / (labels + 1))
    assert f["customer:frauds_7d"] == pytest.approx(math.log1p(math.exp(-10 / 168)))
    later = risk.features(a, 10 * 24 * HOUR)  # 10 days on: the 1-day sums have faded
    assert later["customer:risk_1d"] < 0.01 < later["customer:risk_30d"]
    assert risk.features((("customer", "b"),), 10 * HOUR) == {}


def test_entity_features_in_replay_count_only_labels_known_by_then(tmp_path: Path) -> None:
    rows = [
        {"when": BASE, "amount": 100, "customer": "a", "fraud": 1},
        {"when": BASE + timedelta(minutes=9), "amount": 100, "customer": "a", "fraud": 0},
        {"when": BASE + timedelta(hours=2), "amount": 500, "customer": "a", "fraud": 0},
        {"when": BASE + timedelta(hours=2), "amount": 100, "customer": "b", "fraud": 0},
    ]
    for row in rows:
        row["when"] = row["when"].isoformat()
    txns = table_history(write_csv(tmp_path / "t.csv", rows), COLUMNS).txns
    seen: dict[int, dict[str, float]] = {}
    replay(
        txns,
        label_times(txns, HOUR),
        "logreg",
        on_event=lambda what, i, at, x: seen.setdefault(i, dict(x)) if what == "score" else None,
    )
    assert "customer:risk_1d" not in seen[1]  # the fraud at 0 h is known only at 1 h
    # at 2 h: the labels of 0 h and 0 h 9 min are known (at 1 h and 1 h 9 min), not its own
    assert 0.3 < seen[2]["customer:risk_1d"] < 1 / 3
    assert "customer:risk_1d" not in seen[3]  # another customer
    assert seen[0]["customer:new"] == 1.0 and seen[1]["customer:new"] == 0.0
    assert seen[1]["customer:n_1d"] == pytest.approx(math.log1p(math.exp(-9 / 1440)), rel=1e-6)
    assert seen[1]["customer:since_h"] == pytest.approx(math.log1p(9 / 60))
    assert seen[2]["customer:vs_mean_30d"] == pytest.approx(math.log1p(500) - math.log1p(100))


# ------------------------------------------------------------------ inputs


def test_csv_parquet_and_epoch_seconds_give_the_same_result(tmp_path: Path) -> None:
    rows = entity_fraud(60)
    from_csv = run(write_csv(tmp_path / "t.csv", rows), delay="1h")
    table = pa.table(
        {
            "tx": [r["tx"] for r in rows],
            "when": pa.array(
                [datetime.fromisoformat(r["when"]) for r in rows], pa.timestamp("ms", "UTC")
            ),
            "amount": [r["amount"] for r in rows],
            "noise": [r["noise"] for r in rows],
            "customer": [r["customer"] for r in rows],
            "fraud": [bool(r["fraud"]) for r in rows],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    from_parquet = run(tmp_path / "t.parquet", delay="1h")
    epoch = [r | {"when": datetime.fromisoformat(r["when"]).timestamp()} for r in rows]
    from_epoch = run(write_csv(tmp_path / "epoch.csv", epoch), delay="1h")
    assert stable(from_csv) == stable(from_parquet) == stable(from_epoch)
    assert from_csv["orders"] == 300
    assert from_csv["delayed"]["roc_auc"] > 0.7


def test_numeric_columns_are_features_and_others_are_named_once(tmp_path: Path) -> None:
    rows = entity_fraud(20)
    for row in rows:
        row["country"] = "JP"
    path = write_csv(tmp_path / "t.csv", rows)
    history = table_history(path, COLUMNS, say=lambda m: None)
    names = set().union(*(t.x for t in history.txns))
    assert {"amount", "amount_log", "noise", "customer:n_1d", "customer:z_30d"} <= names
    assert "tx" not in names and "fraud" not in names and "when" not in names
    notes = run(path)["notes"]
    assert notes == ["not numeric, not used as features: tx, country"]
    ignored = table_history(path, dataclasses.replace(COLUMNS, ignore=("noise",)))
    assert all("noise" not in t.x for t in ignored.txns)


def test_a_pattern_column_is_reported_per_pattern_and_never_learned(tmp_path: Path) -> None:
    rows = entity_fraud(120)
    for n, row in enumerate(rows):
        row["kind"] = ("big" if n % 2 else "small") if row["fraud"] else "none"
    path = write_csv(tmp_path / "t.csv", rows)
    columns = dataclasses.replace(COLUMNS, pattern="kind")
    history = table_history(path, columns)
    assert all("kind" not in t.x for t in history.txns)
    # a legitimate row's pattern cell means nothing: only frauds have a pattern
    assert {p for t, p in zip(history.txns, history.patterns, strict=True) if t.label == 0} == {
        None
    }
    report = run(path, columns, delay="1h")
    assert set(report["patterns"]) == {"threshold", "legitimate_flagged", "big", "small"}
    assert report["notes"] == ["not numeric, not used as features: tx"]
    console = Console(width=80, record=True)
    console.print(report_table(report))
    shown = " ".join(console.export_text().split())  # however rich wraps the caption
    assert "of legitimate transactions catches big" in shown
    with pytest.raises(UserError, match="--pattern 'nope': no such column"):
        table_history(path, dataclasses.replace(COLUMNS, pattern="nope"))


def test_empty_label_cells_are_unlabelled(tmp_path: Path) -> None:
    rows = entity_fraud(40)
    for row in rows[::2]:
        row["fraud"] = ""
    report = run(write_csv(tmp_path / "t.csv", rows))
    assert report["orders"] == 200
    assert report["labelled"] == 100


def test_parquet_nan_labels_refunds_and_blank_entities(tmp_path: Path) -> None:
    rows = entity_fraud(40)
    table = pa.table(
        {
            "when": [r["when"] for r in rows],
            "amount": [-r["amount"] if i % 7 == 0 else r["amount"] for i, r in enumerate(rows)],
            "customer": ["" if i % 5 == 0 else r["customer"] for i, r in enumerate(rows)],
            "fraud": [math.nan if i % 4 == 0 else float(r["fraud"]) for i, r in enumerate(rows)],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    history = table_history(tmp_path / "t.parquet", COLUMNS)
    assert sum(t.label is None for t in history.txns) == 50  # NaN: not labelled
    blank = [t for t in history.txns if not t.entities]  # an empty cell is no customer
    assert len(blank) == 40 and all("customer:new" not in t.x for t in blank)
    assert min(t.x["amount"] for t in history.txns) < 0  # as it is, but no negative spend
    assert all(t.x.get("customer:mean_7d", 0) >= 0 for t in history.txns)
    report = run(tmp_path / "t.parquet", delay="0")
    assert report["delay"] == "none" and report["labelled"] == 150


def test_batch_rows_are_skipped_without_scikit_learn(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.ensemble", None)
    report = run(write_csv(tmp_path / "t.csv", entity_fraud(40)))
    assert "scikit-learn is not installed" in report["batch"]["skipped"]
    assert report["delayed"]["roc_auc"] is not None
    out = io.StringIO()
    Console(file=out, width=80).print(report_table(report))
    shown = " ".join(out.getvalue().split())
    assert "stream logreg 7d all 200" in shown
    assert "batch HGB 1st half skipped" in shown and "scikit-learn is not installed" in shown


def test_batch_rows_with_scikit_learn(tmp_path: Path, sklearn_present: None) -> None:
    report = run(write_csv(tmp_path / "t.csv", entity_fraud()), delay="30m")
    assert report["batch"]["labelled"] == report["delayed"]["second_half"]["labelled"]
    assert report["batch"]["train"] + report["batch"]["labelled"] == report["labelled"]
    assert report["batch_at_split"]["train"] <= report["batch"]["train"]
    assert report["batch_hgb"]["roc_auc"] > 0.8  # risk features, labels known after 30 min
    later = run(tmp_path / "t.csv", delay="3d")
    assert later["batch_at_split"]["train"] < later["batch"]["train"]  # 3 days not known yet


# ------------------------------------------------------------------ simulator files


def simulated_file(path: Path, orders: int = 300) -> Path:
    cfg = SimConfig(orders=orders, seed=5, days=20, end=datetime(2026, 11, 1, tzinfo=UTC))
    write_events(list(Simulator(cfg).events()), path)
    return path


def test_read_simulated_labels_orders_from_their_outcomes(tmp_path: Path, registry) -> None:
    path = simulated_file(tmp_path / "sim.jsonl")
    sim = read_simulated(path, registry)
    assert len(sim.orders) == 300
    assert [o.event_time for o in sim.orders] == sorted(o.event_time for o in sim.orders)
    kinds = {}
    for line in path.read_text("utf-8").splitlines():
        if '"outcomes"' in line:
            value = orjson.loads(line)["value"]
            kinds[value["order_id"]] = value["kind"]
    assert {oid: label for oid, (label, _) in sim.labels.items()} == {
        oid: label_of(kind) for oid, kind in kinds.items() if label_of(kind) is not None
    }
    assert len(sim.merchants) == 40


def test_a_loss_after_payment_counts_from_its_report(registry, order_json) -> None:
    order = record_from_datum(Order, registry.from_json("Order", order_json))

    def outcome(kind: str, hours: int) -> Outcome:
        return Outcome("o-1", BASE + timedelta(hours=hours), kind, "ISSUER")

    skipped: Counter[str] = Counter()
    labels = labels_of(
        [order], [outcome("CHARGEBACK", 30), outcome("PAID", 10), outcome("NOTE", 1)], skipped
    )
    assert labels == {"o-1": (1, int((BASE + timedelta(hours=30)).timestamp() * 1000))}
    assert skipped == Counter({"unused outcomes": 1})


def test_simulator_files_need_redis(tmp_path: Path) -> None:
    path = simulated_file(tmp_path / "sim.jsonl", orders=20)
    settings = load_settings(redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(UserError, match="shinsa stack up"):
        run_eval(path, EvalOptions(), settings, say=lambda m: None)


# ------------------------------------------------------------------ errors


def error_of(path: Path, columns: Columns = COLUMNS, **kw: Any) -> str:
    with pytest.raises(UserError) as caught:
        run(path, columns, **kw)
    return str(caught.value)


def test_errors_name_the_problem(tmp_path: Path) -> None:
    good = write_csv(tmp_path / "good.csv", entity_fraud(5))
    assert "no such file" in error_of(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    assert "empty file" in error_of(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("when,amount,customer,fraud\n")
    assert "empty file" in error_of(tmp_path / "header.csv")
    unknown = Columns(label="is_fraud", time="when")
    assert "--label 'is_fraud': no such column" in error_of(good, unknown)
    assert "--entity 'shop'" in error_of(good, Columns("fraud", "when", entities=("shop",)))
    assert "pass --label" in error_of(good, Columns(None, "when"))
    assert "pass --time" in error_of(good, Columns("fraud", None))
    assert "needs a simulator file" in error_of(good, delay="outcome")
    assert "--estimator" in error_of(good, estimator="svm")
    assert "--amount 'tx' is not a numeric column" in error_of(
        good, Columns("fraud", "when", amount="tx")
    )


def test_bad_labels_and_times_are_reported_with_their_rows(tmp_path: Path) -> None:
    rows = entity_fraud(5)
    rows[3]["fraud"] = "yes"
    rows[4]["fraud"] = 2
    message = error_of(write_csv(tmp_path / "labels.csv", rows))
    assert "0/1 or true/false" in message
    assert "row 4: 'yes'" in message and "row 5: '2'" in message
    rows = entity_fraud(5)
    rows[2]["when"] = "yesterday"
    message = error_of(write_csv(tmp_path / "times.csv", rows))
    assert "--time 'when', row 3: 'yesterday'" in message
    rows = entity_fraud(5)
    rows[0]["when"] = 1_790_000_000_000  # milliseconds, not seconds
    assert "row 1" in error_of(write_csv(tmp_path / "ms.csv", rows))


def test_cli_prints_errors_without_traceback(tmp_path: Path) -> None:
    shinsa = Path(sys.executable).with_name("shinsa")
    done = subprocess.run(
        [str(shinsa), "eval", str(tmp_path / "missing.csv"), "--label", "fraud"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "no such file" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------ wallet payments


def wallet_file(path: Path, payments: int = 3000) -> Path:
    cfg = SimConfig(
        orders=300,
        seed=8,
        days=20,
        end=datetime(2026, 11, 1, tzinfo=UTC),
        wallet_payments=payments,
        wallet_fraud_rate=0.08,
    )
    write_events(list(Simulator(cfg).events()), path)
    return path


def test_wallet_features_are_what_the_worker_would_have_seen(tmp_path: Path, registry) -> None:
    """Fan-in into each receiver counts the distinct senders strictly before each transfer."""
    from streams.tools.backtest_wallet import read_wallet

    path = wallet_file(tmp_path / "w.jsonl")
    wallet = read_wallet(path, registry)
    transfers = []
    for line in path.read_bytes().splitlines():
        envelope = orjson.loads(line)
        value = envelope["value"]
        if envelope["topic"] == "payments" and value["kind"] == "TRANSFER":
            at = datetime.fromisoformat(value["event_time"])
            transfers.append(
                (at, value["payment_id"], value["account_id"], value["counterparty_account_id"])
            )
    transfers.sort()
    index = {pid: i for i, pid in enumerate(wallet.payment_ids)}
    for at, pid, _, receiver in transfers:
        senders = {
            s
            for t, p, s, r in transfers
            if r == receiver and at - timedelta(days=1) <= t < at and p != pid
        }
        assert wallet.features[index[pid]]["counterparty_fan_in_24h"] == len(senders), pid
    assert any(
        wallet.features[index[p]]["counterparty_fan_in_24h"] >= 5 for _, p, _, _ in transfers
    )


def test_eval_payments_reports_each_pattern_at_the_review_rate(tmp_path: Path) -> None:
    path = wallet_file(tmp_path / "w.jsonl")
    report = run_eval(path, EvalOptions(review_rate=0.02, payments=True), load_settings())
    assert report["subject"] == "payments"
    patterns = report["patterns"]
    assert set(patterns) == {
        "threshold",
        "legitimate_flagged",
        "card_cash_out",
        "mule_fan_in",
        "scam_transfer",
        "wallet_takeover",
    }
    assert patterns["legitimate_flagged"] <= 0.03  # flagged at the 2 % quantile (ties aside)
    assert report["delayed"]["roc_auc"] > 0.8  # the model learns the wallet's patterns
    table = Console(width=80, record=True)
    table.print(report_table(report))
    assert "of legitimate payments catches" in table.export_text()
    with pytest.raises(UserError, match="--payments reads a simulator file"):
        run_eval(
            write_csv(tmp_path / "t.csv", [{"fraud": 0, "when": 0}]),
            EvalOptions(columns=COLUMNS, payments=True),
            load_settings(),
        )


def test_codes_get_a_weight_per_value_and_wide_amounts_a_signed_log() -> None:
    """A status column (a few integers) is one-hot as well as raw, so a linear model can weigh
    `PAY_0=2` apart from `PAY_0=1`; an amount column reaching past ±1,000 is seen as its signed
    log; anything else, and a column with a fractional or 17th value, stays as it is."""
    numbers = {
        "status": [-2, -1, 0, 1, 2, None, 8] * 3,
        "bill": [-5_000.0, 0.0, 250_000.0, *(120.5 * k for k in range(20))],
        "rate": [0.5, 1.5, 2.0],
        "many": list(range(17)),
        "step": [0.0, 0.5, 1.0],
    }
    kinds = column_kinds(numbers)
    assert kinds.codes == {"status"}
    assert kinds.wide == {"bill"}
    assert column_features("status", 2.0, kinds) == {"status": 2.0, "status=2": 1.0}
    assert column_features("status", -1.0, kinds) == {"status": -1.0, "status=-1": 1.0}
    assert column_features("bill", -5_000.0, kinds) == {"bill": -math.log1p(5_000.0)}
    assert column_features("bill", 0.0, kinds) == {"bill": 0.0}
    assert column_features("many", 16.0, kinds) == {"many": 16.0}
    assert column_features("step", 0.5, kinds) == {"step": 0.5}


def test_an_export_is_reported_in_its_own_words(tmp_path: Path) -> None:
    """An export's rows are transactions and its positives are named by its label column,
    never "orders" and "fraud"."""
    rows = entity_fraud(200)
    path = tmp_path / "credit.csv"
    write_csv(path, [{**r, "defaulted": r.pop("fraud")} for r in rows])
    report = run(path, dataclasses.replace(COLUMNS, label="defaulted"), delay="1h")
    console = Console(width=100, record=True)
    console.print(report_table(report))
    title = console.export_text().splitlines()[0]
    assert "transactions" in title and "defaulted" in title
    assert "orders" not in title and "fraud" not in title
