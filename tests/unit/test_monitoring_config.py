"""The monitoring files: valid for promtool and amtool, consistent with the code that renders
them, alerts with runbooks, dashboards equal to their generator and readable, compose file
pointing at files that exist.

promtool and amtool come with Debian's prometheus and prometheus-alertmanager packages, which
`make setup` installs; only without them are those checks skipped (the reason says so).
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring import dashboards
from streams.settings import ROOT, load_settings
from streams.tools import stack

MONITORING = ROOT / "monitoring"
PROMETHEUS_YML = MONITORING / "prometheus" / "prometheus.yml"
RULE_FILES = sorted((MONITORING / "prometheus" / "rules").glob("*.yml"))
WEBHOOK = 'https://hooks.example.invalid/services/T0/B0/x?a=1&b="quoted"#frag'

promtool = pytest.mark.usefixtures("promtool_present")  # skipped if missing, failed under CI
amtool = pytest.mark.usefixtures("amtool_present")


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def alert_rules() -> list[dict]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


# ---------------------------------------------------------------- Prometheus


@promtool
def test_promtool_accepts_the_config_and_the_rules():
    config = run("promtool", "check", "config", str(PROMETHEUS_YML))
    assert config.returncode == 0, config.stdout + config.stderr
    assert f"{len(RULE_FILES)} rule files found" in config.stdout
    rules = run("promtool", "check", "rules", *map(str, RULE_FILES))
    assert rules.returncode == 0, rules.stdout + rules.stderr


@promtool
def test_promtool_refuses_a_broken_rule(tmp_path):
    # the check above can fail: a rule with a syntax error is reported
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n- name: x\n  rules:\n  - record: a:b\n    expr: sum(rate(x[5m])\n")
    assert run("promtool", "check", "rules", str(broken)).returncode != 0


def test_the_committed_config_is_what_the_stack_renders_with_default_ports():
    committed = yaml.safe_load(PROMETHEUS_YML.read_text())
    targets = ["127.0.0.1:9464", "127.0.0.1:9465"]  # the screening and the campaign worker
    assert committed == stack.prometheus_config(targets, ["127.0.0.1:9095"])
    interval = committed["global"]["scrape_interval"]
    assert interval.endswith("s") and int(interval[:-1]) <= 15


@promtool
def test_the_rendered_local_config_follows_the_settings_and_is_valid(tmp_path):
    settings = load_settings(
        metrics_port=19464,
        campaign_metrics_port=19465,
        alertmanager_port=19095,
        alert_webhook_url=WEBHOOK,
        data_dir=tmp_path,
    )
    paths = stack.render_monitoring(settings)
    assert [p.name for p in paths] == ["prometheus.yml", "alertmanager.yml"]
    config = yaml.safe_load(paths[0].read_text())
    targets = ["127.0.0.1:19464", "127.0.0.1:19465"]  # the screening and the campaign worker
    assert config["scrape_configs"][0]["static_configs"] == [{"targets": targets}]
    assert config["alerting"]["alertmanagers"][0]["static_configs"] == [
        {"targets": ["127.0.0.1:19095"]}
    ]
    checked = run("promtool", "check", "config", str(paths[0]))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_without_a_webhook_prometheus_sends_no_alerts_and_no_alertmanager_config(tmp_path):
    settings = load_settings(data_dir=tmp_path, alert_webhook_url="")
    paths = stack.render_monitoring(settings)
    assert [p.name for p in paths] == ["prometheus.yml"]
    assert "alerting" not in yaml.safe_load(paths[0].read_text())


def test_a_worker_on_a_random_port_cannot_be_scraped(tmp_path):
    with pytest.raises(stack.StackError, match="SHINSA_METRICS_PORT"):
        stack.render_monitoring(load_settings(data_dir=tmp_path, metrics_port=0))


def test_every_alert_has_a_severity_and_a_runbook():
    alerts = alert_rules()
    names = {a["alert"] for a in alerts}
    assert {
        "ShinsaApprovalRateDrop",
        "ShinsaDeadLettersSpike",
        "ShinsaConsumerLagGrowing",
        "ShinsaDecisionLatencyHigh",
        "ShinsaModelAucFalling",
        "ShinsaNoDecisions",
        "ShinsaCreditUnpaidRising",
        "ShinsaCreditModelAucFalling",
    } <= names
    for alert in alerts:
        assert alert["labels"]["severity"] in {"page", "ticket"}, alert["alert"]
        notes = alert["annotations"]
        assert notes["summary"] and notes["description"], alert["alert"]
        assert len(notes["runbook"].split()) >= 30, f"{alert['alert']}: runbook too thin"
    approval = next(a for a in alerts if a["alert"] == "ShinsaApprovalRateDrop")
    assert "offset 1d" in approval["expr"]


def test_credit_alerts_watch_the_credit_metrics_and_open_tickets():
    alerts = {a["alert"]: a for a in alert_rules()}
    unpaid = alerts["ShinsaCreditUnpaidRising"]
    # max: a worker without enough labels exports NaN, and max skips it (a sum would be NaN)
    assert " ".join(unpaid["expr"].split()) == "max(shinsa_credit_unpaid_rate_ratio) > 1.5"
    auc = alerts["ShinsaCreditModelAucFalling"]
    assert "shinsa_credit_model_roc_auc" in auc["expr"] and "offset 6h" in auc["expr"]
    assert "shinsa_credit_model_labels_learned > 500" in auc["expr"]
    for alert in (unpaid, auc):
        # credit losses build up over weeks: working hours, the tickets receiver
        assert alert["labels"] == {"severity": "ticket"}
        assert 'Grafana "Credit"' in " ".join(alert["annotations"]["runbook"].split())


# ---------------------------------------------------------------- Alertmanager


def test_the_webhook_url_is_filled_in_quoted_and_kept_private(tmp_path):
    settings = load_settings(data_dir=tmp_path, alert_webhook_url=WEBHOOK)
    path = stack.render_monitoring(settings)[1]
    config = yaml.safe_load(path.read_text())
    assert config["receivers"][0]["slack_configs"][0]["api_url"] == WEBHOOK
    assert "${" not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_pages_and_tickets_go_to_their_own_receivers(tmp_path):
    tickets = "https://hooks.example.invalid/services/T000/TICKETS/yyyy"
    same = yaml.safe_load(
        stack.render_alertmanager_config(stack.ALERTMANAGER_TEMPLATE.read_text(), WEBHOOK)
    )
    urls = {r["name"]: r["slack_configs"][0]["api_url"] for r in same["receivers"]}
    assert urls == {"pages": WEBHOOK, "tickets": WEBHOOK}  # one channel unless told otherwise
    settings = load_settings(
        data_dir=tmp_path, alert_webhook_url=WEBHOOK, ticket_webhook_url=tickets
    )
    config = yaml.safe_load(stack.render_monitoring(settings)[1].read_text())
    urls = {r["name"]: r["slack_configs"][0]["api_url"] for r in config["receivers"]}
    assert urls == {"pages": WEBHOOK, "tickets": tickets}
    assert config["route"]["receiver"] == "tickets"
    assert config["route"]["routes"] == [
        {"matchers": ['severity="page"'], "receiver": "pages", "repeat_interval": "1h"}
    ]


def test_a_webhook_that_is_not_a_url_is_refused():
    template = stack.ALERTMANAGER_TEMPLATE.read_text()
    with pytest.raises(stack.StackError, match="incoming-webhook URL"):
        stack.render_alertmanager_config(template, "hooks.slack.com/x")


def test_the_template_routes_to_alerts_that_exist():
    config = yaml.safe_load(stack.ALERTMANAGER_TEMPLATE.read_text())
    names = {a["alert"] for a in alert_rules()}
    matchers = [
        m
        for rule in config["inhibit_rules"]
        for m in rule["source_matchers"] + rule["target_matchers"]
    ]
    mentioned = {name for m in matchers for name in m.split("=", 1)[1].strip('~"').split("|")}
    assert mentioned <= names


@amtool
def test_amtool_accepts_the_rendered_config(tmp_path):
    path = tmp_path / "alertmanager.yml"
    path.write_text(
        stack.render_alertmanager_config(stack.ALERTMANAGER_TEMPLATE.read_text(), WEBHOOK)
    )
    checked = run("amtool", "check-config", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # and the unrendered template is not a usable config by itself
    assert run("amtool", "check-config", str(stack.ALERTMANAGER_TEMPLATE)).returncode != 0


# ---------------------------------------------------------------- Grafana


def test_the_committed_dashboards_are_what_the_generator_writes():
    for name, text in dashboards.render().items():
        committed = dashboards.OUT / name
        assert committed.exists(), f"run python -m monitoring.dashboards ({name} missing)"
        assert committed.read_text("utf-8") == text, (
            f"{name} is out of date: run python -m monitoring.dashboards"
        )
    assert sorted(p.name for p in dashboards.OUT.glob("*.json")) == sorted(dashboards.DASHBOARDS)


def all_panels(board: dict) -> list[dict]:
    return [p for p in board["panels"] if p["type"] != "row"]


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_every_panel_is_described_has_a_unit_and_queries_our_prometheus(name):
    board = json.loads((dashboards.OUT / name).read_text("utf-8"))
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in all_panels(board):
        title = panel["title"]
        assert len(panel.get("description", "").split()) >= 8, f"{title}: describe it"
        assert panel["datasource"]["uid"] == "shinsa-prometheus", title
        assert panel["targets"], title
        assert all(t["expr"].strip() and t["refId"] for t in panel["targets"]), title
        if panel["type"] != "heatmap":
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
    annotations = {a["name"]: a for a in board["annotations"]["list"]}
    assert set(annotations) - {"Campaign changed"} == {
        "Model version",
        "Policy version",
        "Model promoted",
        "Model rolled back",
        "Model switched off",
        "Model switched on",
    }
    if name == "campaign.json":  # a new campaign definition is annotated where it is watched
        assert "shinsa_campaign_info" in annotations["Campaign changed"]["expr"]
    assert "shinsa_model_info" in annotations["Model version"]["expr"]
    assert "shinsa_model_promoted_timestamp_seconds" in annotations["Model promoted"]["expr"]
    assert "shinsa_policy_info" in annotations["Policy version"]["expr"]
    rolled_back = "shinsa_model_rolled_back_timestamp_seconds"
    assert rolled_back in annotations["Model rolled back"]["expr"]
    for change in ("Model switched off", "Model switched on"):
        assert "shinsa_model_rules_only" in annotations[change]["expr"]


def test_money_shares_and_durations_have_their_units():
    units = {
        panel["title"]: panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        for name in dashboards.DASHBOARDS
        for panel in all_panels(json.loads((dashboards.OUT / name).read_text("utf-8")))
    }
    assert units["GMV per minute"] == "currencyJPY"
    assert units["Approved"] == units["Declined"] == "percentunit"
    assert units["Decision latency"] == units["Label delay"] == "s"
    assert (
        units["Approval rate by credit band"]
        == units["Unpaid rate by order month"]
        == ("percentunit")
    )
    assert units["Outstanding deferred balance by credit band"] == "currencyJPY"
    assert units["Deferred yen approved per minute by credit band"] == "currencyJPY"


def panel_exprs(board: dict) -> dict[str, list[str]]:
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in all_panels(board)}


def test_the_credit_dashboard_shows_bands_exposure_cohorts_and_the_credit_model():
    board = json.loads((dashboards.OUT / "credit.json").read_text("utf-8"))
    exprs = panel_exprs(board)
    approvals = exprs["Approval rate by credit band"][0]
    assert 'shinsa_credit_decisions_total{decision="APPROVE"}' in approvals
    assert "sum by (band)" in approvals and "> 0" in approvals  # bands without orders: none
    assert (
        "shinsa_credit_decided_yen_total"
        in exprs["Deferred yen decided by credit band and decision"][0]
    )
    # the same total in every worker: the max, never the sum of workers
    assert exprs["Outstanding deferred balance by credit band"] == [
        "max by (band) (shinsa_credit_outstanding_yen)"
    ]
    cohorts = exprs["Unpaid rate by order month"][0]
    assert cohorts.startswith("max by (cohort) (") and 'outcome="unpaid"' in cohorts
    assert exprs["Unpaid rate of recent months against the six before"] == [
        "max(shinsa_credit_unpaid_rate_ratio)"
    ]
    for metric in (
        "shinsa_credit_model_roc_auc",
        "shinsa_credit_model_average_precision",
        "shinsa_credit_model_labels_learned",
        "shinsa_credit_model_warm",
    ):
        assert any(metric in e for es in exprs.values() for e in es), metric
    legends = {p["title"]: {t.get("legendFormat") for t in p["targets"]} for p in all_panels(board)}
    assert legends["Unpaid rate by order month"] == {"{{cohort}}"}
    assert legends["Approval rate by credit band"] == {"{{band}}"}


def test_the_unpaid_ratio_panel_draws_the_alert_s_threshold():
    board = json.loads((dashboards.OUT / "credit.json").read_text("utf-8"))
    panel = next(
        p
        for p in all_panels(board)
        if p["title"] == "Unpaid rate of recent months against the six before"
    )
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "dashed"
    alert = next(a for a in alert_rules() if a["alert"] == "ShinsaCreditUnpaidRising")
    threshold = float(alert["expr"].rsplit(">", 1)[1])
    assert [s["value"] for s in defaults["thresholds"]["steps"]] == [None, threshold]


RECORDING_TESTS = MONITORING / "prometheus" / "tests" / "recording_test.yml"


def recording_rules() -> dict[str, str]:
    return {
        rule["record"]: rule["expr"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


@promtool
def test_the_credit_recording_rules_compute_what_they_say():
    """promtool test rules on recording_test.yml: approval rate by band (a band without orders
    has none), yen per minute, outstanding as the max of workers, each cohort's unpaid rate."""
    result = run("promtool", "test", "rules", str(RECORDING_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        check["expr"]
        for case in yaml.safe_load(RECORDING_TESTS.read_text())["tests"]
        for check in case["promql_expr_test"]
    }
    credit = {name for name in recording_rules() if name.startswith("shinsa:credit_")}
    assert len(credit) == 5 and credit <= tested


def test_rules_refer_only_to_recorded_series_that_exist():
    recorded = set(recording_rules())
    exprs = [r["expr"] for r in alert_rules()] + list(recording_rules().values())
    referred = {name for expr in exprs for name in re.findall(r"\bshinsa:[a-z0-9_:]+", expr)}
    assert referred and referred <= recorded, referred - recorded


def test_the_provisioned_datasource_is_the_one_the_dashboards_use():
    source = yaml.safe_load(
        (MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert source["uid"] == dashboards.DATASOURCE.uid
    assert source["url"] == "http://127.0.0.1:9090"
    provider = yaml.safe_load(
        (MONITORING / "grafana/provisioning/dashboards/shinsa.yml").read_text()
    )["providers"][0]
    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../monitoring/grafana/dashboards:{provider['options']['path']}:ro" in mounts


# ---------------------------------------------------------------- docker, make


def test_compose_mounts_files_of_this_repository():
    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    assert set(compose["services"]) == {"prometheus", "alertmanager", "grafana"}
    for name, service in compose["services"].items():
        assert service["network_mode"] == "host", name
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("../") and ".shinsa" not in source:
                assert (ROOT / "docker" / source).resolve().exists(), f"{name}: {source}"


def test_make_installs_prometheus_and_alertmanager():
    makefile = (ROOT / "Makefile").read_text()
    system_deps = makefile.split("system-deps:", 1)[1].split("\n\n", 1)[0]
    assert 'missing="$$missing prometheus"' in system_deps
    assert 'missing="$$missing prometheus-alertmanager"' in system_deps


def test_generator_check_mode_notices_a_stale_dashboard(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dashboards, "OUT", tmp_path)
    assert dashboards.main([]) == 0
    (tmp_path / "model.json").write_text("{}")
    assert dashboards.main(["--check"]) == 1
    assert "model.json" in capsys.readouterr().out
    assert Path(tmp_path / "business-kpis.json").exists()


ALERT_TESTS = MONITORING / "prometheus" / "tests" / "alerts_test.yml"


def rendered(text: str, value: str, labels: dict[str, str]) -> str:
    """An annotation as Prometheus renders it, for the templates our rules use."""
    out = re.sub(r"\{\{ \$value \| [a-zA-Z]+(?: \"[^\"]*\")? \}\}", value, text)
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], out)


@promtool
def test_alerts_fire_on_the_traffic_they_are_for(tmp_path):
    """promtool test rules: each case's alert fires when it should, and not the day before."""
    annotations = {a["alert"]: a["annotations"] for a in alert_rules()}
    cases = yaml.safe_load(ALERT_TESTS.read_text())
    cases["rule_files"] = [str(f) for f in RULE_FILES]
    tested = set()
    for case in cases["tests"]:
        for check in case["alert_rule_test"]:
            tested.add(check["alertname"])
            for alert in check["exp_alerts"]:
                given = alert.pop("render")
                notes = annotations[check["alertname"]]
                alert["exp_annotations"] = {
                    k: rendered(v, given["value"], alert["exp_labels"]) for k, v in notes.items()
                }
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(cases, allow_unicode=True))
    result = run("promtool", "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert {
        "ShinsaFraudLossSpike",
        "ShinsaDeclineRateSpikeByCategory",
        "ShinsaPaymentDeclineRateSpike",
        "ShinsaCreditUnpaidRising",
        "ShinsaCreditModelAucFalling",
    } <= tested
