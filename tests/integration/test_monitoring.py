"""Monitoring end to end: a real Prometheus scraping two real workers fed simulated traffic.

Every dashboard panel query (parsed from the committed Grafana JSON, Grafana's variables
substituted), every recording rule and every alert rule is evaluated through Prometheus's HTTP
API. Panel queries and recording rules must return data, a finite number; alert and annotation
expressions must evaluate without error. Prometheus loads the repository's rule files and sends
alerts to a real Alertmanager configured from the repository's template.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streams.metrics import free_port
from streams.records import WALLET_KINDS
from streams.settings import ROOT, Settings
from streams.tools import stack
from streams.tools.demo import metrics_url
from streams.tools.publish import encode_events
from tests.conftest import run_cli
from tests.integration.conftest import Worker, collect, produce, running_alertmanager, simulated

pytestmark = pytest.mark.integration

DASHBOARDS = ROOT / "monitoring" / "grafana" / "dashboards"
# What Grafana would put in for its variables, sized for this test's 1 s scrapes: the rate
# window covers the traffic just sent, the range the whole test.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "10m", "$__interval": "5s"}
INPUT_TOPICS = ("orders", "payments", "logins", "outcomes", "merchants")
# Gauges that are NaN until the credit model has learned enough repayments: the unpaid-rate
# ratio needs 50 labels in each of eight order months, its AUC and AP unpaid and repaid
# orders both, which a few minutes of simulated traffic do not give. Queries of them must
# still evaluate without error; they need not have data.
NAN_UNTIL_ENOUGH_LABELS = (
    "shinsa_credit_unpaid_rate_ratio",
    "shinsa_credit_model_roc_auc",
    "shinsa_credit_model_average_precision",
)


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 400/422: a bad expression, with its error
            return json.loads(exc.read())

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def values(self, expr: str) -> list[float]:
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        data = answer["data"]
        if data["resultType"] == "scalar":
            return [float(data["result"][1])]
        return [float(series["value"][1]) for series in data["result"]]

    def wait_for(self, what: str, check: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.5)
        print(f"not reached within {timeout:.0f}s: {what}")
        return False


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) of every target of every panel, rows included."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text("utf-8"))
        panels = list(board["panels"])
        for panel in list(panels):
            panels.extend(panel.get("panels", []))
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((board["title"], panel["title"], substitute(target["expr"])))
    return out


def annotation_queries() -> list[tuple[str, str]]:
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text("utf-8"))
        out += [(a["name"], a["expr"]) for a in board["annotations"]["list"] if "expr" in a]
    return out


def rules(kind: str) -> list[tuple[str, str]]:
    """(name, expr) of every recording ('record') or alerting ('alert') rule."""
    out = []
    for path in sorted(stack.RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [(r[kind], r["expr"]) for r in group["rules"] if kind in r]
    return out


def lacks_data(prom: Prometheus, expr: str) -> str | None:
    """Why `expr` has no data (an error, no series, only NaN), or None if it has a value."""
    answer = prom.query(expr)
    if answer["status"] != "success":
        return f"error: {answer.get('error')}"
    data = answer["data"]
    results = [data["result"]] if data["resultType"] == "scalar" else data["result"]
    values = [float(r[1]) if isinstance(r, list) else float(r["value"][1]) for r in results]
    if not values:
        return "no series"
    if not any(math.isfinite(v) for v in values):
        return "only NaN"
    return None


@pytest.fixture
def workers(env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    """Two workers of one group on this host, each on a free /metrics port of its own."""
    monkeypatch.setenv("SHINSA_LAG_INTERVAL", "1")
    monkeypatch.setenv("SHINSA_MODEL_CHECKPOINT_SECONDS", "2")
    # with a challenger, so its panels have data too
    settings = env.model_copy(update={"model_challenger": "tree"})
    pair = [Worker(settings, tmp_path / f"worker-{i}.log") for i in (1, 2)]
    for w in pair:
        w.start(wait=False)
    yield pair
    for w in pair:
        if w.proc is not None and w.proc.poll() is None:
            w.stop()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager from the repository's template (webhook: a closed local port)."""
    hook = f"http://127.0.0.1:{free_port()}/hook"
    config = stack.render_alertmanager_config(stack.ALERTMANAGER_TEMPLATE.read_text(), hook)
    with running_alertmanager(config, tmp_path) as address:
        yield address


def start_prometheus(tmp_path: Path, targets: list[str], alertmanager: str) -> Prometheus:
    """Debian's Prometheus on a free port with its own data, the repository's rules, 1 s."""
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is missing: apt-get install prometheus (make setup)"
    config = stack.prometheus_config(
        targets, [alertmanager], interval="1s", rules=str(stack.RULES_DIR / "*.yml")
    )
    path = stack.write_prometheus_config(tmp_path / "prometheus.yml", config)
    port = free_port()
    log = tmp_path / "prometheus.log"
    proc = subprocess.Popen(
        stack.prometheus_cmd(binary, path, tmp_path / "prom-data", port),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1).status == 200
        except OSError:
            return False

    stack.wait_until(ready, 30, "Prometheus")
    return prom


def metrics_port(worker: Worker) -> int:
    worker.wait_for("metrics on http://")
    url = metrics_url(worker.log)
    assert url is not None
    return int(re.search(r":(\d+)/metrics", url).group(1))


def test_every_panel_and_rule_has_data_on_a_real_prometheus(
    env, workers, alertmanager, registry, tmp_path
):
    started = time.monotonic()
    apply_campaign(env)  # the campaign dashboard's panels need a campaign worker at work
    campaign = Worker(env, tmp_path / "campaign.log", role="campaign").start()
    ports = [metrics_port(w) for w in workers]
    assert len(set(ports)) == 2, f"two workers on one host share a /metrics port: {ports}"
    targets = [*ports, metrics_port(campaign)]
    prom = start_prometheus(tmp_path, [f"127.0.0.1:{p}" for p in targets], alertmanager)
    try:
        for w in workers:
            w.wait_for("merchant table loaded")
        run_traffic_and_check(env, workers, prom, alertmanager, ports, started, len(targets))
    finally:
        prom.proc.terminate()
        prom.proc.wait(10)
        campaign.stop()
    for w in [*workers, campaign]:
        assert w.errors() == [], "\n".join(w.errors())


def apply_campaign(env: Settings) -> None:
    """A campaign running this JST month and the last one, as `shinsa campaign apply` does."""
    from agents.campaign import jst_month, previous_month, to_ms

    month = jst_month(to_ms(datetime.now(UTC)))
    campaign = {"id": "otsukidama", "months": [previous_month(month), month]}
    produce(env, [("campaigns", b"otsukidama", orjson.dumps(campaign))])


def run_traffic_and_check(
    env: Settings,
    workers: list,
    prom: Prometheus,
    alertmanager: str,
    ports: list[int],
    started: float,
    scraped: int,
) -> None:
    events = simulated(500, seed=11, fraud_rate=0.15, invalid_rate=0.02)
    encoded = encode_events(env, events)
    outcomes = [e for e, ev in zip(encoded, events, strict=True) if ev.topic == "outcomes"]
    first = [e for e, ev in zip(encoded, events, strict=True) if ev.topic != "outcomes"]
    valid_orders = {e.value["order_id"] for e in events if e.topic == "orders" and not e.broken}
    wallet_payments = {
        e.value["payment_id"]
        for e in events
        if e.topic == "payments" and not e.broken and e.value["kind"] in WALLET_KINDS
    }
    assert wallet_payments, "the simulation produced no wallet payments"
    assert outcomes, "the simulation produced no outcomes"

    # Prometheus must see the counters at 0 before the burst, or increase() cannot count it
    assert prom.wait_for(
        "both workers scraped before the traffic",
        lambda: prom.values('sum(up{job="shinsa-worker"})') == [float(scraped)],
        timeout=30,
    )
    time.sleep(2)  # one more scrape of each at 0
    produce(env, first)
    decided = len(valid_orders) + len(wallet_payments)  # one decision each, on one topic
    decisions = collect(env, "decisions", decided, timeout=60, worker=workers[0])
    assert len(decisions) == decided
    produce(env, outcomes)  # after their orders' decisions: the learner finds their features
    print(f"traffic decided after {time.monotonic() - started:.0f}s")

    # Both workers are scraped; events out counts exactly the decisions on the topic.
    assert prom.wait_for(
        "both workers scraped and every decision counted",
        lambda: (
            prom.values('sum(up{job="shinsa-worker"})') == [float(scraped)]
            and prom.values('sum(shinsa_events_out_total{topic="decisions"})')
            == [float(len(decisions))]
        ),
        timeout=15,
    ), prom.values('sum(shinsa_events_out_total{topic="decisions"})')
    check_lag(prom, env)
    check_alertmanager(prom, alertmanager)
    check_kpi(prom, ports[0], len(valid_orders))
    # The model: learned labels reach the scorers through a checkpoint (every 2 s here). If
    # it never happens, the model panels below say exactly which queries lack data.
    prom.wait_for(
        "a checkpoint with learned labels",
        lambda: bool(prom.values("max(shinsa_model_labels_learned) > 0")),
        timeout=30,
    )
    time.sleep(2)  # a couple more scrapes and rule evaluations of the final state
    check_queries(prom)
    print(f"monitoring test took {time.monotonic() - started:.0f}s")


def check_lag(prom: Prometheus, env: Settings) -> None:
    """Every partition the group reads is reported by exactly one worker, none is left out,
    and nothing of the orders is left behind once every decision is out."""
    partitions = float(env.partitions)

    def settled() -> bool:
        per_topic = {
            (s["metric"]["topic"], s["metric"]["loop"]): float(s["value"][1])
            for s in prom.query("count by (topic, loop) (shinsa_consumer_lag_messages)")["data"][
                "result"
            ]
        }
        once = prom.values("max(count by (topic, partition, loop) (shinsa_consumer_lag_messages))")
        orders_lag = prom.values('sum(shinsa_consumer_lag_messages{topic="orders"})')
        # the pipeline's input topics at least (internal hops may be added), each whole
        return (
            set(INPUT_TOPICS) <= {topic for topic, _ in per_topic}
            and set(per_topic.values()) == {partitions}
            and once == [1.0]
            and orders_lag == [0.0]
        )

    assert prom.wait_for("lag of every partition reported once, orders lag 0", settled, 20), (
        prom.query("shinsa_consumer_lag_messages")["data"]["result"]
    )


def check_alertmanager(prom: Prometheus, address: str) -> None:
    """Prometheus's alerting section reaches the Alertmanager built from our template."""
    active = prom.api("alertmanagers")["data"]["activeAlertmanagers"]
    assert [a["url"] for a in active] == [f"http://{address}/api/v2/alerts"]


def check_kpi(prom: Prometheus, worker_port: int, decisions: int) -> None:
    """`shinsa kpi` reads the same numbers from a worker and from Prometheus."""
    for source in (
        ["--url", f"http://127.0.0.1:{worker_port}/metrics"],
        ["--prometheus", prom.url],
    ):
        result = run_cli(None, "kpi", *source, "--window", "10m", columns=200)
        assert result.returncode == 0, result.stderr
        for expected in ("Orders", "approve", "GMV", "Latency from Kafka", "Dead letters"):
            assert expected in result.stdout, result.stdout
    # Prometheus sums both workers: every decision of the run is in the table.
    orders = re.search(r"Orders\s*│\s*([\d,]+)", result.stdout)
    assert orders is not None, result.stdout
    # increase() over a run shorter than a few scrapes is an estimate: the first scrape can
    # land after the first burst and Prometheus extrapolates (seen 314–663 for 492 decisions
    # on a loaded machine). Exact counts are checked above through events out.
    counted = int(orders.group(1).replace(",", ""))
    assert 0 < counted <= decisions * 2, (counted, decisions)


def check_queries(prom: Prometheus) -> None:
    lacking = [
        f"{board} / {title}: {why}\n    {expr}"
        for board, title, expr in panel_queries()
        if (why := lacks_data(prom, expr))
        and not (
            why in ("no series", "only NaN") and any(m in expr for m in NAN_UNTIL_ENOUGH_LABELS)
        )
    ]
    lacking += [
        f"recording rule {name}: {why}\n    {expr}"
        for name, expr in rules("record")
        if (why := lacks_data(prom, expr)) or (why := lacks_data(prom, name))
    ]
    broken = [
        f"{name}: {answer.get('error')}"
        for name, expr in rules("alert") + annotation_queries()
        if (answer := prom.query(expr))["status"] != "success"
    ]
    print(
        f"{len(panel_queries())} panel queries, {len(rules('record'))} recording rules, "
        f"{len(rules('alert'))} alerts evaluated"
    )
    # Not a failure (no retries, no load failures is right), but worth seeing in the log.
    zeros = [f"{b} / {t}" for b, t, e in panel_queries() if set(prom.values(e)) <= {0.0}]
    print("panel queries whose every value is 0:", "; ".join(zeros) or "none")
    assert not broken, "expressions Prometheus refuses:\n" + "\n".join(broken)
    assert not lacking, f"{len(lacking)} queries without data:\n" + "\n".join(lacking)


def test_kpi_reads_a_worker_and_prometheus_and_says_when_nothing_answers():
    port = free_port()
    result = run_cli(None, "kpi", "--url", f"http://127.0.0.1:{port}/metrics")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "nothing answers" in result.stderr
