"""`shinsa kpi`: the business KPIs as a terminal table, for people without Grafana.

Two sources, the same table:
- a worker's /metrics: that worker's counters since it started (its share of the traffic,
  when several workers run);
- Prometheus (`--prometheus URL`): all workers over a recent window (`--window`), computed by
  PromQL the way the dashboards do.
Nothing answering is one clear message, not a traceback.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from streams.errors import UserError
from streams.metrics import CREDIT_BANDS
from streams.settings import Settings

DECISIONS = ("APPROVE", "REVIEW", "DECLINE")
LOSS_OUTCOMES = ("UNPAID", "CHARGEBACK", "FRAUD_CONFIRMED")
Labels = dict[str, str]


@dataclass
class Snapshot:
    """The KPIs of one source, whatever it was (counts over the snapshot's scope)."""

    scope: str
    decisions: dict[str, float] = field(default_factory=dict)  # decision → orders
    amount: dict[str, float] = field(default_factory=dict)  # decision → yen
    by_category: dict[str, dict[str, float]] = field(default_factory=dict)  # → decision → n
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)  # source → p50, p99
    dead_letters: dict[str, float] = field(default_factory=dict)  # reason → events
    outcomes: dict[str, float] = field(default_factory=dict)  # kind → outcomes
    identities_new: float = 0.0
    identities_merged: float = 0.0
    lag: float | None = None
    workers: float | None = None
    model_version: str | None = None
    model_warm: float | None = None
    roc_auc: float | None = None
    payments: dict[str, dict[str, float]] = field(default_factory=dict)  # kind → decision → n
    refused_reasons: dict[str, float] = field(default_factory=dict)  # reviews and declines
    cash_out_stopped: float = 0.0  # yen of transfers and withdrawals declined or reviewed
    # the credit check of deferred orders (streams/metrics.py CREDIT_*)
    credit: dict[str, dict[str, float]] = field(default_factory=dict)  # band → decision → n
    credit_outstanding: dict[str, float] = field(default_factory=dict)  # band → yen
    cohorts: dict[str, dict[str, float]] = field(default_factory=dict)  # month → outcome → n
    unpaid_ratio: float | None = None  # unpaid rate of the 2 newest months ÷ the 6 before


# ---------------------------------------------------------------- fetching


def fetch(url: str, what: str, timeout: float = 5.0) -> bytes:
    """GET `url`; a UserError that says what to do when nothing (useful) answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (400, 422):  # Prometheus explains a bad query in the body
            return exc.read()
        raise UserError(f"{what} at {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"nothing answers at {url} ({reason}): start a worker (`shinsa worker`) or give "
            "its /metrics with --url, or a Prometheus with --prometheus URL"
        ) from None


# ---------------------------------------------------------------- a worker's /metrics


def samples(text: str) -> list[tuple[str, Labels, float]]:
    """(sample name, labels, value) of every `shinsa_*` sample in an exposition."""
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise UserError(f"not a Prometheus /metrics page: {exc}") from None
    return [
        (s.name, s.labels, s.value)
        for family in families
        if family.name.startswith("shinsa_")
        for s in family.samples
    ]


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over cumulative (upper bound, count) buckets: linear
    interpolation inside the bucket holding the q-th observation; NaN without observations."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):  # in the +Inf bucket: the highest finite bound
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def from_worker(text: str, url: str) -> Snapshot:
    """A snapshot of one worker's counters since it started."""
    found = samples(text)
    if not found:
        raise UserError(f"{url} answers but serves no shinsa_* metrics: is it a Shinsa worker?")
    snap = Snapshot(scope=f"worker {url}, since it started")
    latency: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for name, labels, value in found:
        add_worker_sample(snap, name, labels, value, latency)
    snap.latency = {
        source: (histogram_quantile(0.5, b), histogram_quantile(0.99, b))
        for source, b in latency.items()
    }
    return snap


def add_worker_sample(
    snap: Snapshot,
    name: str,
    labels: Labels,
    value: float,
    latency: dict[str, list[tuple[float, float]]],
) -> None:
    """Fold one sample into the snapshot (the names are the catalogue's, streams/metrics.py)."""
    if name == "shinsa_decisions_total":
        add(snap.decisions, labels["decision"], value)
        category = snap.by_category.setdefault(labels["merchant_category"], {})
        add(category, labels["decision"], value)
    elif name == "shinsa_decided_amount_yen_total":
        add(snap.amount, labels["decision"], value)
    elif name == "shinsa_decision_latency_seconds_bucket":
        latency[labels["source"]].append((float(labels["le"]), value))
    elif name == "shinsa_dlq_total":
        add(snap.dead_letters, labels["reason"], value)
    elif name == "shinsa_outcomes_total":
        add(snap.outcomes, labels["kind"], value)
    elif name == "shinsa_identities_created_total":
        snap.identities_new += value
    elif name == "shinsa_identity_merges_total":
        snap.identities_merged += value
    elif name == "shinsa_consumer_lag_messages":
        snap.lag = (snap.lag or 0.0) + value
    elif name == "shinsa_worker_up":
        snap.workers = value
    elif name == "shinsa_model_info" and value == 1:
        snap.model_version = labels["version"]
    elif name == "shinsa_model_warm":
        snap.model_warm = value
    elif name == "shinsa_model_roc_auc" and math.isfinite(value):
        snap.roc_auc = value
    elif name == "shinsa_decision_reasons_total" and labels["decision"] != "APPROVE":
        add(snap.refused_reasons, labels["reason"], value)
    elif name == "shinsa_payment_decisions_total":
        add(snap.payments.setdefault(labels["kind"], {}), labels["decision"], value)
    elif name == "shinsa_cash_out_stopped_yen_total":
        snap.cash_out_stopped += value
    elif name == "shinsa_credit_decisions_total":
        add(snap.credit.setdefault(labels["band"], {}), labels["decision"], value)
    elif name == "shinsa_credit_outstanding_yen":
        snap.credit_outstanding[labels["band"]] = value
    elif name == "shinsa_credit_cohort_labels":
        snap.cohorts.setdefault(labels["cohort"], {})[labels["outcome"]] = value
    elif name == "shinsa_credit_unpaid_rate_ratio" and math.isfinite(value):
        snap.unpaid_ratio = value


def add(table: dict[str, float], key: str, value: float) -> None:
    table[key] = table.get(key, 0.0) + value


# ---------------------------------------------------------------- Prometheus


class PrometheusSource:
    """Instant PromQL queries against one Prometheus."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")

    def query(self, expr: str) -> list[tuple[Labels, float]]:
        url = f"{self.base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            answer = json.loads(fetch(url, "Prometheus"))
        except json.JSONDecodeError:
            raise UserError(f"{self.base} does not answer like Prometheus's API") from None
        if answer.get("status") != "success":
            raise UserError(f"Prometheus refused {expr!r}: {answer.get('error')}")
        return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {m.get(label, ""): v for m, v in self.query(expr) if math.isfinite(v)}

    def one(self, expr: str) -> float | None:
        values = [v for _, v in self.query(expr) if math.isfinite(v)]
        return values[0] if values else None


def from_prometheus(base_url: str, window: str) -> Snapshot:
    """A snapshot of all workers over the last `window` (increase() of every counter)."""
    p = PrometheusSource(base_url)
    if not p.query('up{job="shinsa-worker"}'):
        raise UserError(f"Prometheus at {base_url} scrapes no shinsa-worker job")
    w = window
    snap = Snapshot(scope=f"all workers, last {w} ({base_url})")
    snap.decisions = p.by(f"sum by (decision) (increase(shinsa_decisions_total[{w}]))", "decision")
    snap.amount = p.by(
        f"sum by (decision) (increase(shinsa_decided_amount_yen_total[{w}]))", "decision"
    )
    for labels, value in p.query(
        f"sum by (merchant_category, decision) (increase(shinsa_decisions_total[{w}]))"
    ):
        snap.by_category.setdefault(labels["merchant_category"], {})[labels["decision"]] = value
    for q, position in ((0.5, 0), (0.99, 1)):
        for source, value in p.by(
            f"histogram_quantile({q}, sum by (le, source) "
            f"(increase(shinsa_decision_latency_seconds_bucket[{w}])))",
            "source",
        ).items():
            pair = list(snap.latency.get(source, (math.nan, math.nan)))
            pair[position] = value
            snap.latency[source] = (pair[0], pair[1])
    snap.dead_letters = p.by(f"sum by (reason) (increase(shinsa_dlq_total[{w}]))", "reason")
    snap.outcomes = p.by(f"sum by (kind) (increase(shinsa_outcomes_total[{w}]))", "kind")
    snap.identities_new = p.one(f"sum(increase(shinsa_identities_created_total[{w}]))") or 0.0
    snap.identities_merged = p.one(f"sum(increase(shinsa_identity_merges_total[{w}]))") or 0.0
    snap.lag = p.one("sum(shinsa_consumer_lag_messages)")
    snap.workers = p.one('sum(up{job="shinsa-worker"})')
    versions = p.by("max by (version) (shinsa_model_info)", "version")
    snap.model_version = ", ".join(sorted(versions)) or None
    snap.model_warm = p.one("min(shinsa_model_warm)")
    snap.roc_auc = p.one("max(shinsa_model_roc_auc >= 0)")
    for labels, value in p.query(
        f"sum by (kind, decision) (increase(shinsa_payment_decisions_total[{w}]))"
    ):
        snap.payments.setdefault(labels["kind"], {})[labels["decision"]] = value
    snap.refused_reasons = p.by(
        f'sum by (reason) (increase(shinsa_decision_reasons_total{{decision!="APPROVE"}}[{w}]))',
        "reason",
    )
    snap.cash_out_stopped = p.one(f"sum(increase(shinsa_cash_out_stopped_yen_total[{w}]))") or 0.0
    for labels, value in p.query(
        f"sum by (band, decision) (increase(shinsa_credit_decisions_total[{w}]))"
    ):
        snap.credit.setdefault(labels["band"], {})[labels["decision"]] = value
    # gauges the same in every worker (balances in Redis; the credit model's cohort counts,
    # the newest checkpoint's being the highest): the max, not the sum
    snap.credit_outstanding = p.by("max by (band) (shinsa_credit_outstanding_yen)", "band")
    for labels, value in p.query("max by (cohort, outcome) (shinsa_credit_cohort_labels)"):
        snap.cohorts.setdefault(labels["cohort"], {})[labels["outcome"]] = value
    snap.unpaid_ratio = p.one("max(shinsa_credit_unpaid_rate_ratio)")
    return snap


# ---------------------------------------------------------------- the table


def share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "—"


LAST_LATENCY_BUCKET = 60.0  # seconds: the highest finite bucket of the latency histogram


def seconds(value: float) -> str:
    """A latency for people; at the last bucket the quantile only says "at least that"."""
    if not math.isfinite(value):
        return "—"
    if value >= LAST_LATENCY_BUCKET:
        return f"≥ {LAST_LATENCY_BUCKET:.0f} s"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def table(snap: Snapshot) -> Table:
    """The KPIs, in the order a manager reads them: orders, money, risk, then the machinery."""
    t = Table("KPI", "value", title=f"Shinsa KPIs — {snap.scope}", title_justify="left")
    orders = sum(snap.decisions.values())
    gmv = sum(snap.amount.values())
    t.add_row("[bold]Orders", f"{orders:,.0f}")
    for decision in DECISIONS:
        n = snap.decisions.get(decision, 0.0)
        t.add_row(f"  {decision.lower()}", f"{n:,.0f} ({share(n, orders)})")
    t.add_row("[bold]GMV (all decisions)", f"¥{gmv:,.0f}")
    t.add_row(
        "  approved GMV",
        f"¥{snap.amount.get('APPROVE', 0.0):,.0f} ({share(snap.amount.get('APPROVE', 0.0), gmv)})",
    )
    t.add_row("  declined GMV", f"¥{snap.amount.get('DECLINE', 0.0):,.0f}")
    ranked = sorted(snap.by_category.items(), key=lambda kv: -sum(kv[1].values()))
    t.add_row("[bold]By merchant category", "orders, approved")
    for category, counts in ranked:
        total = sum(counts.values())
        t.add_row(f"  {category}", f"{total:,.0f}, {share(counts.get('APPROVE', 0.0), total)}")
    add_payment_rows(t, snap)
    add_credit_rows(t, snap)
    add_reason_rows(t, snap)
    add_risk_rows(t, snap)
    add_pipeline_rows(t, snap)
    return t


def add_reason_rows(t: Table, snap: Snapshot, top: int = 5) -> None:
    """The reason codes behind reviews and declines, most frequent first."""
    ranked = sorted(
        ((r, n) for r, n in snap.refused_reasons.items() if n > 0), key=lambda kv: -kv[1]
    )
    if not ranked:
        return
    t.add_row("[bold]Top reasons (review, decline)", "times listed")
    for reason, n in ranked[:top]:
        t.add_row(f"  {reason}", f"{n:,.0f}")


def add_payment_rows(t: Table, snap: Snapshot) -> None:
    """Wallet payments by kind: how many, and the share declined or sent to review."""
    total = sum(sum(d.values()) for d in snap.payments.values())
    if not total:
        return
    t.add_row("[bold]Wallet payments", f"{total:,.0f}; declined, review")
    for kind, counts in sorted(snap.payments.items()):
        n = sum(counts.values())
        if n:
            declined, review = counts.get("DECLINE", 0.0), counts.get("REVIEW", 0.0)
            t.add_row(f"  {kind.lower()}", f"{n:,.0f}; {share(declined, n)}, {share(review, n)}")
    t.add_row("  cash-out kept from leaving", f"¥{snap.cash_out_stopped:,.0f}")


def add_credit_rows(t: Table, snap: Snapshot) -> None:
    """The credit check of deferred orders: decisions and the share approved by credit band
    (A best … E worst, COLD while the credit model is cold), the balance outstanding by band,
    and each order month's unpaid rate among its repayments known so far."""
    bands = [b for b in CREDIT_BANDS if b in snap.credit or b in snap.credit_outstanding]
    bands += sorted((set(snap.credit) | set(snap.credit_outstanding)) - set(bands))
    orders = sum(sum(d.values()) for d in snap.credit.values())
    if orders:
        t.add_row("[bold]Deferred orders by credit band", f"{orders:,.0f}; approved")
        for band in bands:
            counts = snap.credit.get(band, {})
            n = sum(counts.values())
            if n:
                t.add_row(f"  {band}", f"{n:,.0f}; {share(counts.get('APPROVE', 0.0), n)}")
    outstanding = sum(snap.credit_outstanding.values())
    if outstanding:
        t.add_row("[bold]Outstanding by credit band", f"¥{outstanding:,.0f}")
        for band in bands:
            yen = snap.credit_outstanding.get(band, 0.0)
            if yen:
                t.add_row(f"  {band}", f"¥{yen:,.0f} ({share(yen, outstanding)})")
    if snap.cohorts:
        ratio = (
            f"; recent ÷ before {snap.unpaid_ratio:.2f}" if snap.unpaid_ratio is not None else ""
        )
        t.add_row("[bold]Unpaid rate by order month", f"unpaid of repayments known{ratio}")
        for month, counts in sorted(snap.cohorts.items()):
            unpaid = counts.get("unpaid", 0.0)
            known = unpaid + counts.get("paid", 0.0)
            t.add_row(f"  {month}", f"{share(unpaid, known)} of {known:,.0f}")


def add_risk_rows(t: Table, snap: Snapshot) -> None:
    outcomes = sum(snap.outcomes.values())
    losses = sum(snap.outcomes.get(k, 0.0) for k in LOSS_OUTCOMES)
    t.add_row("[bold]Outcomes reported", f"{outcomes:,.0f}, losses {share(losses, outcomes)}")
    for kind, n in sorted(snap.outcomes.items(), key=lambda kv: -kv[1]):
        t.add_row(f"  {kind.lower()}", f"{n:,.0f}")
    t.add_row(
        "[bold]Identities",
        f"{snap.identities_new:,.0f} new, {snap.identities_merged:,.0f} merged",
    )
    state = {0.0: "cold start (rules decide)", 1.0: "warm"}.get(snap.model_warm or 0.0, "")
    auc = f", ROC AUC {snap.roc_auc:.3f}" if snap.roc_auc is not None else ""
    t.add_row("[bold]Model", f"{snap.model_version or '—'} — {state}{auc}")


def add_pipeline_rows(t: Table, snap: Snapshot) -> None:
    for source, label in (("ingest", "from Kafka"), ("event", "from order time")):
        if source in snap.latency:
            p50, p99 = snap.latency[source]
            t.add_row(f"[bold]Latency {label}", f"p50 {seconds(p50)}, p99 {seconds(p99)}")
    dead = sum(snap.dead_letters.values())
    top = ", ".join(
        f"{reason} {n:,.0f}"
        for reason, n in sorted(snap.dead_letters.items(), key=lambda kv: -kv[1])[:4]
    )
    t.add_row("[bold]Dead letters", f"{dead:,.0f}" + (f" ({top})" if top else ""))
    if snap.lag is not None:
        t.add_row("[bold]Consumer lag", f"{snap.lag:,.0f} messages")
    if snap.workers is not None:
        t.add_row("[bold]Workers up", f"{snap.workers:,.0f}")


def show_kpis(
    settings: Settings,
    console: Console,
    *,
    url: str | None = None,
    prometheus: str | None = None,
    window: str = "1h",
) -> Snapshot:
    """Print the KPI table from Prometheus if given, else from a worker's /metrics."""
    if prometheus:
        snap = from_prometheus(prometheus, window)
    else:
        url = url or f"http://127.0.0.1:{settings.metrics_port or 9464}/metrics"
        snap = from_worker(fetch(url, "worker").decode("utf-8", "replace"), url)
    console.print(table(snap))
    return snap
