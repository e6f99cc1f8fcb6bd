"""The metrics catalogue: bounded labels only, no PII, every metric documented in the README.

Every module of streams/ and agents/ is imported, so a metric declared anywhere (not only in
streams/metrics.py) is checked. Also the pure parts that read or feed the catalogue: consumer
lag per partition, logical topic names, histogram quantiles of `shinsa kpi`.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import re
from pathlib import Path

import pytest
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import agents
import streams
from streams.settings import TOPIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# Label names whose values come from fixed, small sets (enums, topic names, partitions).
ALLOWED_LABELS = frozenset(
    {
        "action",
        "campaign",  # operator-named campaigns, a handful at a time
        "period",
        "topic",
        "partition",
        "reason",
        "decision",
        "merchant_category",
        "source",
        "kind",
        "result",
        "version",
        "event",  # settlement events: repaid, unpaid, written_off, approved
        "active",  # decisions (APPROVE/REVIEW/DECLINE) of the active and shadow policies
        "shadow",
        "loop",  # the hot path's transactional loops, named in code (screen)
        "store",  # the Redis stores of agents/state.py (STORES)
        "stage",  # a hot-path batch's stages, named in code (Stopwatch laps)
        "method",  # an order's payment method (the Order schema's enum)
        "band",  # credit bands A-E and COLD (agents/credit.py)
        "cohort",  # month of order, YYYY-MM: the 13 newest only (agents/credit.py)
        "outcome",  # paid, unpaid
        "subject",  # ORDER or PAYMENT
    }
)
# Names that would carry personal data or unbounded identifiers.
FORBIDDEN_LABELS = frozenset(
    {
        "order_id",
        "buyer",
        "name",
        "name_kana",
        "phone",
        "email",
        "address",
        "postal_code",
        "birth_date",
        "identity",
        "identity_id",
        "merchant_id",
        "merchant",
        "account_id",
        "payment_id",
        "login_id",
        "device",
        "device_id",
        "ip",
        "card",
        "user",
        "customer",
    }
)


def all_modules() -> list[str]:
    return [
        f"{pkg.__name__}.{m.name}"
        for pkg in (streams, agents)
        for m in pkgutil.iter_modules(pkg.__path__)
    ]


@pytest.fixture(scope="module")
def catalogue() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exposed name → (type, label names) of every registered shinsa_* metric."""
    for module in all_modules():
        importlib.import_module(module)
    found = {}
    for collector in list(REGISTRY._collector_to_names):  # no public way to list labelnames
        if isinstance(collector, MetricWrapperBase) and collector._name.startswith("shinsa_"):
            suffix = "_total" if collector._type == "counter" else ""
            found[collector._name + suffix] = (collector._type, tuple(collector._labelnames))
    return found


def readme_metrics() -> dict[str, str]:
    """Metric name → its row in the README's metrics table."""
    section = README.read_text("utf-8").split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `(shinsa_[a-z_]+)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_the_catalogue_is_found(catalogue):
    # guards the test itself: a registry walk that finds nothing would pass everything below
    assert {
        "shinsa_decisions_total",
        "shinsa_consumer_lag_messages",
        "shinsa_events_out_total",
    } <= set(catalogue)
    assert len(catalogue) >= 20


def test_every_metric_is_declared_in_the_catalogue_module():
    """One catalogue: no module but streams/metrics.py makes a Prometheus metric."""
    made_elsewhere = []
    for path in sorted([*ROOT.glob("agents/*.py"), *ROOT.glob("streams/**/*.py")]):
        if path.name == "metrics.py" and path.parent.name == "streams":
            continue
        text = path.read_text("utf-8")
        if re.search(r"from prometheus_client import[^\n]*\b(Counter|Gauge|Histogram)\b", text):
            made_elsewhere.append(str(path.relative_to(ROOT)))
    assert made_elsewhere == []


def test_the_allow_list_has_no_personal_or_id_label():
    assert not ALLOWED_LABELS & FORBIDDEN_LABELS
    assert not [label for label in ALLOWED_LABELS if label == "id" or label.endswith("_id")]


def test_every_label_is_bounded_and_none_is_personal(catalogue):
    unbounded = {
        name: labels for name, (_, labels) in catalogue.items() if not set(labels) <= ALLOWED_LABELS
    }
    personal = {
        name: labels
        for name, (_, labels) in catalogue.items()
        if set(labels) & FORBIDDEN_LABELS or any(lb.endswith("_id") for lb in labels)
    }
    assert unbounded == {}, f"labels outside the allow-list: {unbounded}"
    assert personal == {}, f"personal or id labels: {personal}"


def test_every_metric_is_documented_with_its_labels(catalogue):
    rows = readme_metrics()
    undocumented = sorted(set(catalogue) - set(rows))
    assert undocumented == [], f"add these to README's metrics table: {undocumented}"
    missing_labels = {
        name: [lb for lb in labels if f"`{lb}`" not in rows[name]]
        for name, (_, labels) in catalogue.items()
    }
    assert {k: v for k, v in missing_labels.items() if v} == {}


def test_the_readme_documents_no_metric_that_does_not_exist(catalogue):
    assert sorted(set(readme_metrics()) - set(catalogue)) == []


# ---------------------------------------------------------------- what the monitoring reads

MONITORING = README.parent / "monitoring"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def monitoring_queries() -> dict[str, str]:
    """Where → PromQL of every dashboard panel and annotation, recording and alert rule."""
    import json

    import yaml

    found = {}
    for path in sorted((MONITORING / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text("utf-8"))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found[f"{path.name} / {panel['title']} / {target['refId']}"] = target["expr"]
        for annotation in board["annotations"]["list"]:
            if "expr" in annotation:
                found[f"{path.name} / annotation {annotation['name']}"] = annotation["expr"]
    for path in sorted((MONITORING / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found[f"{path.name} / {rule.get('record') or rule['alert']}"] = rule["expr"]
    return found


def unknown_metrics(expr: str, catalogue: dict[str, tuple[str, tuple[str, ...]]]) -> set[str]:
    """shinsa_* names in `expr` the catalogue does not have (a histogram's _bucket, _sum and
    _count series count as its own)."""
    unknown = set()
    for name in re.findall(r"\bshinsa_[a-z0-9_]+", expr):
        base = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if name in catalogue or (base in catalogue and catalogue[base][0] == "histogram"):
            continue
        unknown.add(name)
    return unknown


def test_the_monitoring_queries_only_metrics_of_the_catalogue(catalogue):
    queries = monitoring_queries()
    assert len(queries) > 100  # dashboards and rules were found
    unknown = {
        where: names
        for where, expr in queries.items()
        if (names := unknown_metrics(expr, catalogue))
    }
    assert unknown == {}, f"queried but never exported: {unknown}"
    queried = {
        name for expr in queries.values() for name in re.findall(r"\bshinsa_[a-z0-9_]+", expr)
    }
    credit = {name for name in catalogue if name.startswith("shinsa_credit_")}
    assert credit and credit <= queried, f"credit metrics nobody watches: {credit - queried}"


def test_a_misspelt_metric_in_a_query_is_noticed(catalogue):
    # the test above can fail: a name that is not exported, or a histogram suffix on a counter
    assert unknown_metrics("sum(rate(shinsa_credit_decision_total[5m]))", catalogue) == {
        "shinsa_credit_decision_total"
    }
    assert unknown_metrics("shinsa_decisions_total_bucket", catalogue) == {
        "shinsa_decisions_total_bucket"
    }
    assert unknown_metrics("shinsa_decision_latency_seconds_bucket", catalogue) == set()


# ---------------------------------------------------------------- logical topics


@given(st.sampled_from(TOPIC_NAMES), st.from_regex(r"[a-z0-9-]{0,12}\.", fullmatch=True))
def test_a_prefixed_topic_maps_to_its_logical_name(name, prefix):
    from streams.metrics import logical_topic

    assert logical_topic(prefix + name) == name


def test_faust_internal_topics_are_not_pipeline_topics():
    from streams.metrics import logical_topic

    assert logical_topic("shinsa-__assignor-__leader") is None


# ---------------------------------------------------------------- consumer lag


def tp(topic: str, partition: int) -> TP:
    return TP(topic, partition)


def test_lag_is_end_minus_committed_and_the_log_start_while_nothing_is_committed():
    from agents.lag import partition_lags

    orders0, orders1, leader = tp("p.orders", 0), tp("p.orders", 1), tp("x-__assignor-__leader", 0)
    hop = tp("p.account-events", 3)
    ends = {orders0: 120, orders1: 50, hop: 7, leader: 3}
    committed = {orders0: 100, orders1: None, hop: 9, leader: 1}
    starts = {orders1: 20}
    lags = partition_lags([orders0, orders1, hop, leader], ends, committed, starts)
    assert lags == {
        ("orders", "0", "agents"): 20,
        ("orders", "1", "agents"): 30,
        ("account-events", "3", "agents"): 0,
    }


def test_partitions_taken_away_stop_being_reported():
    from agents.lag import publish
    from streams.metrics import CONSUMER_LAG

    before = publish({("payments", "0", "pay"): 5, ("payments", "1", "pay"): 6}, set())
    after = publish({("payments", "1", "pay"): 2}, before)
    assert after == {("payments", "1", "pay")}
    series = {
        (s.labels["topic"], s.labels["partition"]): s.value
        for metric in CONSUMER_LAG.collect()
        for s in metric.samples
        if s.labels["topic"] == "payments"
    }
    assert series == {("payments", "1"): 2}


# ---------------------------------------------------------------- `shinsa kpi`


def test_histogram_quantile_interpolates_like_prometheus():
    from streams.tools.kpi import histogram_quantile

    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.1 + 0.4 * 20 / 40)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * 9 / 10)
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))
    assert histogram_quantile(0.99, [(0.1, 1.0), (math.inf, 10.0)]) == 0.1  # in +Inf


def test_a_worker_page_becomes_kpis_without_personal_data():
    from streams.tools.kpi import from_worker, table

    text = "\n".join(
        [
            "# TYPE shinsa_decisions_total counter",
            'shinsa_decisions_total{decision="APPROVE",merchant_category="FOOD"} 90',
            'shinsa_decisions_total{decision="DECLINE",merchant_category="FOOD"} 10',
            "# TYPE shinsa_decided_amount_yen_total counter",
            'shinsa_decided_amount_yen_total{decision="APPROVE",merchant_category="FOOD"} 9000',
            "# TYPE shinsa_decision_latency_seconds histogram",
            'shinsa_decision_latency_seconds_bucket{source="ingest",le="0.1"} 100',
            'shinsa_decision_latency_seconds_bucket{source="ingest",le="+Inf"} 100',
            'shinsa_decision_latency_seconds_count{source="ingest"} 100',
            'shinsa_decision_latency_seconds_sum{source="ingest"} 3',
            "",
        ]
    )
    snap = from_worker(text, "http://w/metrics")
    assert snap.decisions == {"APPROVE": 90, "DECLINE": 10}
    assert snap.amount == {"APPROVE": 9000}
    assert snap.latency["ingest"][0] == pytest.approx(0.05)
    assert table(snap).row_count > 5


def test_a_page_without_shinsa_metrics_is_a_clear_error():
    from streams.errors import UserError
    from streams.tools.kpi import from_worker

    with pytest.raises(UserError, match="no shinsa_"):
        from_worker("# TYPE up gauge\nup 1\n", "http://elsewhere/metrics")


def test_wallet_payments_appear_in_the_kpi_table_by_kind():
    from rich.console import Console

    from streams.tools.kpi import from_worker, table

    text = "\n".join(
        [
            "# TYPE shinsa_payment_decisions_total counter",
            'shinsa_payment_decisions_total{decision="APPROVE",kind="TRANSFER"} 90',
            'shinsa_payment_decisions_total{decision="DECLINE",kind="TRANSFER"} 10',
            'shinsa_payment_decisions_total{decision="APPROVE",kind="PAY"} 50',
            "# TYPE shinsa_cash_out_stopped_yen_total counter",
            'shinsa_cash_out_stopped_yen_total{kind="TRANSFER"} 35000',
            'shinsa_cash_out_stopped_yen_total{kind="WITHDRAW"} 5000',
            "",
        ]
    )
    snap = from_worker(text, "http://w/metrics")
    assert snap.payments == {"TRANSFER": {"APPROVE": 90, "DECLINE": 10}, "PAY": {"APPROVE": 50}}
    console = Console(width=100, record=True)
    console.print(table(snap))
    shown = console.export_text()
    assert "Wallet payments" in shown and "150" in shown
    assert "transfer" in shown and "10.0%" in shown
    assert "¥40,000" in shown


def test_reason_labels_are_the_catalogue_s_codes_and_nothing_unbounded():
    from agents import reasons

    assert reasons.metric_reason("COUNTERPARTY_FAN_IN") == "COUNTERPARTY_FAN_IN"
    assert reasons.metric_reason("MODEL:amount_log") == reasons.MODEL_FEATURE
    assert reasons.metric_reason("MODEL:category=FOOD") == reasons.MODEL_FEATURE
    assert reasons.metric_reason("something new") == "OTHER"


def sample(decision: str, reason: str, subject: str, value: int) -> str:
    labels = f'decision="{decision}",reason="{reason}",subject="{subject}"'
    return f"shinsa_decision_reasons_total{{{labels}}} {value}"


def test_top_reasons_of_reviews_and_declines_in_the_kpi_table():
    from rich.console import Console

    from streams.tools.kpi import from_worker, table

    text = "\n".join(
        [
            "# TYPE shinsa_decision_reasons_total counter",
            sample("DECLINE", "COUNTERPARTY_FAN_IN", "PAYMENT", 7),
            sample("REVIEW", "AMOUNT_OVER_REVIEW_LIMIT", "ORDER", 3),
            sample("DECLINE", "AMOUNT_OVER_REVIEW_LIMIT", "ORDER", 2),
            sample("APPROVE", "SCORE_MODEL", "ORDER", 900),
            "",
        ]
    )
    snap = from_worker(text, "http://w/metrics")
    assert snap.refused_reasons == {"COUNTERPARTY_FAN_IN": 7, "AMOUNT_OVER_REVIEW_LIMIT": 5}
    console = Console(width=100, record=True)
    console.print(table(snap))
    shown = console.export_text()
    assert shown.index("COUNTERPARTY_FAN_IN") < shown.index("AMOUNT_OVER_REVIEW_LIMIT")
    assert "SCORE_MODEL" not in shown  # approvals are not reasons to look at


CREDIT_PAGE = "\n".join(
    [
        "# TYPE shinsa_credit_decisions_total counter",
        'shinsa_credit_decisions_total{band="A",decision="APPROVE"} 90',
        'shinsa_credit_decisions_total{band="A",decision="DECLINE"} 10',
        'shinsa_credit_decisions_total{band="E",decision="APPROVE"} 1',
        'shinsa_credit_decisions_total{band="E",decision="REVIEW"} 3',
        'shinsa_credit_decisions_total{band="COLD",decision="APPROVE"} 0',
        "# TYPE shinsa_credit_outstanding_yen gauge",
        'shinsa_credit_outstanding_yen{band="A"} 120000',
        'shinsa_credit_outstanding_yen{band="E"} 30000',
        'shinsa_credit_outstanding_yen{band="COLD"} 0',
        "# TYPE shinsa_credit_cohort_labels gauge",
        'shinsa_credit_cohort_labels{cohort="2026-02",outcome="paid"} 40',
        'shinsa_credit_cohort_labels{cohort="2026-02",outcome="unpaid"} 0',
        'shinsa_credit_cohort_labels{cohort="2026-01",outcome="paid"} 90',
        'shinsa_credit_cohort_labels{cohort="2026-01",outcome="unpaid"} 10',
        "# TYPE shinsa_credit_unpaid_rate_ratio gauge",
        "shinsa_credit_unpaid_rate_ratio NaN",
        "",
    ]
)


def shown(snap) -> str:
    from rich.console import Console

    from streams.tools.kpi import table

    console = Console(width=120, record=True)
    console.print(table(snap))
    return console.export_text()


def test_the_credit_check_appears_in_the_kpi_table_by_band_and_order_month():
    from streams.tools.kpi import from_worker

    snap = from_worker(CREDIT_PAGE, "http://w/metrics")
    assert snap.credit == {
        "A": {"APPROVE": 90, "DECLINE": 10},
        "E": {"APPROVE": 1, "REVIEW": 3},
        "COLD": {"APPROVE": 0},
    }
    assert snap.credit_outstanding == {"A": 120000, "E": 30000, "COLD": 0}
    assert snap.cohorts["2026-01"] == {"paid": 90, "unpaid": 10}
    assert snap.unpaid_ratio is None  # NaN: too few labels yet
    text = shown(snap)
    rows = [" ".join(line.replace("│", " ").split()) for line in text.splitlines()]
    assert "Deferred orders by credit band 104; approved" in rows
    assert rows.index("A 100; 90.0%") < rows.index("E 4; 25.0%")  # best band first
    assert not [row for row in rows if row.startswith("COLD")]  # no orders, nothing owed
    assert "Outstanding by credit band ¥150,000" in rows
    assert "A ¥120,000 (80.0%)" in rows
    assert "Unpaid rate by order month unpaid of repayments known" in rows
    assert rows.index("2026-01 10.0% of 100") < rows.index("2026-02 0.0% of 40")


def test_the_unpaid_ratio_is_shown_once_known_and_no_credit_section_without_credit():
    from streams.tools.kpi import from_worker

    page = CREDIT_PAGE.replace(
        "shinsa_credit_unpaid_rate_ratio NaN", "shinsa_credit_unpaid_rate_ratio 1.83"
    )
    assert "recent ÷ before 1.83" in shown(from_worker(page, "http://w/metrics"))
    quiet = from_worker(
        "# TYPE shinsa_decisions_total counter\n"
        'shinsa_decisions_total{decision="APPROVE",merchant_category="FOOD"} 5\n',
        "http://w/metrics",
    )
    assert "credit band" not in shown(quiet) and "order month" not in shown(quiet)


def test_prometheus_credit_kpis_take_the_max_of_gauges_every_worker_reports(monkeypatch):
    import json

    from streams.tools import kpi

    answers = {
        'up{job="shinsa-worker"}': [({"instance": "w1"}, 1)],
        "sum by (band, decision) (increase(shinsa_credit_decisions_total[1h]))": [
            ({"band": "B", "decision": "APPROVE"}, 30),
            ({"band": "B", "decision": "DECLINE"}, 10),
        ],
        "max by (band) (shinsa_credit_outstanding_yen)": [({"band": "B"}, 50000)],
        "max by (cohort, outcome) (shinsa_credit_cohort_labels)": [
            ({"cohort": "2026-03", "outcome": "paid"}, 19),
            ({"cohort": "2026-03", "outcome": "unpaid"}, 1),
        ],
        "max(shinsa_credit_unpaid_rate_ratio)": [({}, "NaN")],
    }
    asked = []

    def fake_fetch(url: str, what: str, timeout: float = 5.0) -> bytes:
        from urllib.parse import parse_qs, urlparse

        expr = parse_qs(urlparse(url).query)["query"][0]
        asked.append(expr)
        result = [{"metric": m, "value": [0, str(v)]} for m, v in answers.get(expr, [])]
        return json.dumps({"status": "success", "data": {"result": result}}).encode()

    monkeypatch.setattr(kpi, "fetch", fake_fetch)
    snap = kpi.from_prometheus("http://prom", "1h")
    assert not [e for e in asked if "credit" in e and e not in answers]  # the queries above
    assert snap.credit == {"B": {"APPROVE": 30, "DECLINE": 10}}
    assert snap.credit_outstanding == {"B": 50000}
    assert snap.cohorts == {"2026-03": {"paid": 19, "unpaid": 1}}
    assert snap.unpaid_ratio is None
    text = shown(snap)
    assert "75.0%" in text and "¥50,000" in text and "5.0% of 20" in text
