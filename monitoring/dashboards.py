"""Shinsa's Grafana dashboards as code (grafana-foundation-sdk, Grafana 11.6 schema).

    python -m monitoring.dashboards           # rewrite monitoring/grafana/dashboards/*.json
    python -m monitoring.dashboards --check   # exit 1 if the committed JSON is out of date

The JSON is committed so Grafana can provision it without Python; a unit test fails when it
differs from what this file generates, and tests/integration/test_monitoring.py evaluates every
query below against a real Prometheus scraping a real worker. Edit here, never the JSON.

Five dashboards: Business KPIs (for managers and risk operations), Pipeline health (for
whoever is on call), Model (for the data scientists), the お月玉 campaign, and Credit (the
credit check of deferred orders, for the credit and risk team). Every panel has a description that
says what it shows and what a normal value looks like; every dashboard marks the moments the
model or the policy version changed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    heatmap,
    prometheus,
    stat,
    timeseries,
)
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardSpecialValueMapOptions,
    DataSourceRef,
    DynamicConfigValue,
    SpecialValueMap,
    SpecialValueMatch,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
)
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode, HeatmapColorScale
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).resolve().parent / "grafana" / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="shinsa-prometheus")
RATE = "$__rate_interval"  # Grafana: 4 scrape intervals at least, so rate() always has data
RANGE = "$__range"  # Grafana: the dashboard's selected time range
DECISION_COLOURS = {"APPROVE": "green", "REVIEW": "yellow", "DECLINE": "red"}
REF_IDS = "ABCDEFGH"

Panel = Any  # a grafana-foundation-sdk panel builder


# ---------------------------------------------------------------- building blocks


def query(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> Any:
    """A PromQL target on Shinsa's Prometheus."""
    q = prometheus.Dataquery().expr(" ".join(expr.split())).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


def with_queries(panel: Panel, queries: list[tuple[str, str]], instant: bool = False) -> Panel:
    for ref, (expr, legend) in zip(REF_IDS, queries, strict=False):
        panel = panel.with_target(query(expr, legend, ref, instant))
    return panel


def steps(*pairs: tuple[float | None, str]) -> Any:
    """Absolute thresholds: (None, colour) is the base, then (from value, colour)."""
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=v, color=c) for v, c in pairs])
    )


def colour_by_decision(panel: Panel) -> Panel:
    """Approve green, review yellow, decline red, on every panel split by decision."""
    for decision, colour in DECISION_COLOURS.items():
        panel = panel.override_by_name(
            decision,
            [DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": colour})],
        )
    return panel


def graph(
    title: str,
    description: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    span: int = 12,
    stacked: bool = False,
    axis: str = "",
    min_value: float | None = 0,
    max_value: float | None = None,
) -> Panel:
    """A time series panel; legend as a table with the last and the highest value."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(span)
        .fill_opacity(20 if stacked else 10)
        .line_width(2)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if axis:
        panel = panel.axis_label(axis)
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    return with_queries(panel, queries)


def number(
    title: str,
    description: str,
    unit: str,
    expr: str,
    *,
    thresholds: Any = None,
    mappings: list[Any] | None = None,
    legend: str = "",
    text_mode: common.BigValueTextMode = common.BigValueTextMode.VALUE,
    decimals: float | None = None,
    span: int = 4,
    height: int = 4,
) -> Panel:
    """A big number with its trend underneath (the last value of the selected range);
    a name (a version) alone when `text_mode` is NAME."""
    trend = text_mode != common.BigValueTextMode.NAME
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(height)
        .span(span)
        .graph_mode(common.BigValueGraphMode.AREA if trend else common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .text_mode(text_mode)
        .no_value("no data yet")
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(thresholds or steps((None, "blue")))
    )
    if mappings:
        panel = panel.mappings(mappings)
    if decimals is not None:
        panel = panel.decimals(decimals)
    return with_queries(panel, [(expr, legend)])


def bars(title: str, description: str, unit: str, expr: str, legend: str, **kw: Any) -> Panel:
    """Horizontal bars, one per label value, of an instant query over the selected range."""
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(kw.get("span", 12))
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .show_unfilled(True)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(kw.get("thresholds") or steps((None, "blue")))
        .min(0)
    )
    if "max_value" in kw:
        panel = panel.max(kw["max_value"])
    return with_queries(panel, [(expr, legend)], instant=True)


def text_map(**texts: tuple[str, str]) -> list[Any]:
    """Value → (text, colour) mappings, plus 'no data' for NaN."""
    options = {
        value: ValueMappingResult(text=text, color=colour, index=i)
        for i, (value, (text, colour)) in enumerate(texts.items())
    }
    return [
        ValueMap(options=options),
        SpecialValueMap(
            options=dashboard_special(SpecialValueMatch.NA_N, "no data yet", len(options))
        ),
    ]


def dashboard_special(match: SpecialValueMatch, text: str, index: int) -> Any:
    return DashboardSpecialValueMapOptions(
        match=match, result=ValueMappingResult(text=text, index=index)
    )


# ---------------------------------------------------------------- shared queries


def share(decision: str, window: str = RATE) -> str:
    """Share of decided orders with `decision` (0 when none, not 'no data')."""
    return (
        f'(sum(rate(shinsa_decisions_total{{decision="{decision}"}}[{window}])) or vector(0))'
        f" / (sum(rate(shinsa_decisions_total[{window}])) > 0)"
    )


def latency(quantile: float, source: str) -> str:
    return (
        f"histogram_quantile({quantile}, sum by (le) "
        f'(rate(shinsa_decision_latency_seconds_bucket{{source="{source}"}}[{RATE}])))'
    )


def first_appearance(info_metric: str) -> str:
    """Versions seen now that were not seen a minute ago: the moment a version took over.

    An info metric gets a new series per version (the old one disappears), so `changes()` of
    one series never sees a switch; comparing the version sets does.
    """
    return f"count by (version) ({info_metric}) unless count by (version) ({info_metric} offset 1m)"


PROMOTED = "shinsa_model_promoted_timestamp_seconds"
ROLLED_BACK = "shinsa_model_rolled_back_timestamp_seconds"
RULES_ONLY = "shinsa_model_rules_only"
# (name, colour, query, title): versions taking over, and each operator's model change
ANNOTATIONS = (
    ("Model version", "purple", first_appearance("shinsa_model_info"), "model {{version}}"),
    ("Policy version", "orange", first_appearance("shinsa_policy_info"), "policy {{version}}"),
    ("Model promoted", "red", f"max({PROMOTED}) > max({PROMOTED} offset 1m)", "model promoted"),
    (
        "Model rolled back",
        "red",
        f"max({ROLLED_BACK}) > max({ROLLED_BACK} offset 1m)",
        "model rolled back",
    ),
    (
        "Model switched off",
        "red",
        f"max({RULES_ONLY}) > max({RULES_ONLY} offset 1m)",
        "kill switch on: rules only",
    ),
    (
        "Model switched on",
        "green",
        f"max({RULES_ONLY}) < max({RULES_ONLY} offset 1m)",
        "kill switch off: models decide",
    ),
)


CAMPAIGN_CHANGED = (
    "Campaign changed",
    "blue",
    "count by (campaign, version) (shinsa_campaign_info) "
    "unless count by (campaign, version) (shinsa_campaign_info offset 1m)",
    "campaign {{campaign}} {{version}}",
)


def version_annotation(name: str, colour: str, query: str) -> Any:
    return (
        dashboard.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color(colour)
        .expr(query)
    )


def finish(built: dict[str, Any]) -> dict[str, Any]:
    """What the SDK leaves out: unique panel ids (Grafana's links and "view panel" need them)
    and how Prometheus annotations are titled and stepped."""
    for number_, panel in enumerate(built["panels"], 1):
        panel["id"] = number_
    titles = {name: title for name, _, _, title in (*ANNOTATIONS, CAMPAIGN_CHANGED)}
    for annotation in built["annotations"]["list"]:
        if annotation["name"] in titles:
            title = titles[annotation["name"]]
            annotation.update({"step": "1m", "titleFormat": title, "tagKeys": "version"})
    return built


def new_dashboard(
    title: str, uid: str, description: str, extra: tuple[tuple[str, str, str, str], ...] = ()
) -> Any:
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["shinsa"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .readonly()
        .tooltip(DashboardCursorSync.CROSSHAIR)
    )
    for name, colour, query, _ in (*ANNOTATIONS, *extra):
        board = board.annotation(version_annotation(name, colour, query))
    return board


# ---------------------------------------------------------------- Business KPIs


def business() -> Any:
    board = new_dashboard(
        "Shinsa — Business KPIs",
        "shinsa-business",
        "Orders, money and decisions as they happen; what became of them later.",
    )
    board = board.with_row(dashboard.Row("Right now"))
    for panel in (
        number(
            "Orders per minute",
            "Orders screened per minute across all workers. Every order gets exactly one "
            "decision, so this is the order flow itself.",
            "short",
            f"60 * sum(rate(shinsa_decisions_total[{RATE}]))",
        ),
        number(
            "GMV per minute",
            "Yen value of the orders screened per minute, whatever the decision "
            "(gross merchandise value).",
            "currencyJPY",
            f"60 * sum(rate(shinsa_decided_amount_yen_total[{RATE}]))",
        ),
        number(
            "Approved",
            "Share of orders approved automatically. Usually above 90 %; a sudden drop means "
            "good customers are refused or a fraud wave is being stopped (see the reasons).",
            "percentunit",
            share("APPROVE"),
            thresholds=steps((None, "red"), (0.8, "yellow"), (0.9, "green")),
            decimals=1,
        ),
        number(
            "Sent to review",
            "Share of orders held for a person to look at. Reviews cost staff time and delay "
            "the buyer.",
            "percentunit",
            share("REVIEW"),
            thresholds=steps((None, "green"), (0.05, "yellow"), (0.15, "red")),
            decimals=1,
        ),
        number(
            "Declined",
            "Share of orders refused. Each one is a sale lost unless it was fraud.",
            "percentunit",
            share("DECLINE"),
            thresholds=steps((None, "green"), (0.03, "yellow"), (0.1, "red")),
            decimals=1,
        ),
        number(
            "Orders in the period",
            "Orders screened in the time range selected at the top right.",
            "short",
            f"sum(increase(shinsa_decisions_total[{RANGE}]))",
        ),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("Decisions over time"))
    for panel in (
        colour_by_decision(
            graph(
                "Orders per minute by decision",
                "Orders per minute, stacked: approved (green), sent to review (yellow), "
                "declined (red).",
                "short",
                [
                    (
                        f"60 * sum by (decision) (rate(shinsa_decisions_total[{RATE}]))",
                        "{{decision}}",
                    )
                ],
                stacked=True,
                axis="orders / min",
            )
        ),
        colour_by_decision(
            graph(
                "GMV per minute by decision",
                "Yen per minute of approved, reviewed and declined orders. Declined GMV is "
                "revenue the merchants do not get, unless it was fraud.",
                "currencyJPY",
                [
                    (
                        f"60 * sum by (decision) (rate(shinsa_decided_amount_yen_total[{RATE}]))",
                        "{{decision}}",
                    )
                ],
                stacked=True,
            )
        ),
        colour_by_decision(
            graph(
                "Decision mix",
                "Share of each decision over time (adds up to 100 %). Compare with the model "
                "and policy version markers: a change of version should not move this much.",
                "percentunit",
                [
                    (
                        f"sum by (decision) (rate(shinsa_decisions_total[{RATE}])) / ignoring "
                        f"(decision) group_left () (sum(rate(shinsa_decisions_total[{RATE}])) > 0)",
                        "{{decision}}",
                    )
                ],
                span=24,
                stacked=True,
                max_value=1,
            )
        ),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("Why: reasons and payment methods"))
    for panel in (
        bars(
            "Top reasons for reviews and declines",
            "Reason codes of the orders and payments reviewed or declined in the selected "
            "period, most frequent first (README lists every code; MODEL_FEATURE: a feature "
            "the model named). A code that jumps is the first thing to look at in an alert.",
            "short",
            "topk(10, sum by (reason) (increase("
            f'shinsa_decision_reasons_total{{decision!="APPROVE"}}[{RANGE}])))',
            "{{reason}}",
        ),
        graph(
            "Orders per minute by payment method and decision",
            "Deferred payment (後払い), card, wallet and the others: how each is decided.",
            "short",
            [
                (
                    "60 * sum by (method, decision) "
                    f"(rate(shinsa_decisions_by_method_total[{RATE}]))",
                    "{{method}} {{decision}}",
                )
            ],
            stacked=True,
            axis="orders / min",
        ),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("By merchant category"))
    for panel in (
        graph(
            "Orders per minute by merchant category",
            "Where the orders come from. A category that suddenly grows is a campaign or an "
            "attack; check its approval rate next to it.",
            "short",
            [
                (
                    f"60 * sum by (merchant_category) (rate(shinsa_decisions_total[{RATE}]))",
                    "{{merchant_category}}",
                )
            ],
            stacked=True,
            axis="orders / min",
        ),
        bars(
            "Approval rate by merchant category",
            "Share of each category's orders approved in the selected period. Resellable goods "
            "(electronics, digital goods, tickets) are attacked most and are approved less.",
            "percentunit",
            f'(sum by (merchant_category) (increase(shinsa_decisions_total{{decision="APPROVE"}}'
            f"[{RANGE}])) or sum by (merchant_category) (increase(shinsa_decisions_total"
            f"[{RANGE}])) * 0) / (sum by (merchant_category) "
            f"(increase(shinsa_decisions_total[{RANGE}])) > 0)",
            "{{merchant_category}}",
            max_value=1,
            thresholds=steps((None, "red"), (0.8, "yellow"), (0.9, "green")),
        ),
        bars(
            "GMV by merchant category",
            "Yen value of each category's orders in the selected period, all decisions.",
            "currencyJPY",
            f"sum by (merchant_category) (increase(shinsa_decided_amount_yen_total[{RANGE}]))",
            "{{merchant_category}}",
        ),
        graph(
            "GMV per minute by merchant category",
            "Yen per minute by category, all decisions, stacked.",
            "currencyJPY",
            [
                (
                    f"60 * sum by (merchant_category) "
                    f"(rate(shinsa_decided_amount_yen_total[{RATE}]))",
                    "{{merchant_category}}",
                )
            ],
            stacked=True,
        ),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("What became of the orders; who ordered"))
    for panel in (
        graph(
            "Outcomes per hour by kind",
            "Outcomes reported by collections, card issuers, reviewers and merchants, days "
            "or weeks after the order: paid and confirmed legitimate are good; unpaid, "
            "chargebacks and confirmed fraud are losses. They are what the model learns from.",
            "short",
            [(f"3600 * sum by (kind) (rate(shinsa_outcomes_total[{RATE}]))", "{{kind}}")],
            span=8,
            stacked=True,
            axis="outcomes / h",
        ),
        number(
            "Losses among outcomes",
            "Share of the outcomes reported in the selected period that are losses: unpaid, "
            "chargeback or confirmed fraud.",
            "percentunit",
            '(sum(increase(shinsa_outcomes_total{kind=~"UNPAID|CHARGEBACK|FRAUD_CONFIRMED"}'
            f"[{RANGE}])) or vector(0)) / (sum(increase(shinsa_outcomes_total[{RANGE}])) > 0)",
            thresholds=steps((None, "green"), (0.02, "yellow"), (0.05, "red")),
            decimals=1,
            height=8,
        ),
        graph(
            "New people and merges per minute",
            "Identity resolution (名寄せ): buyers seen for the first time, and identities found "
            "to be one person written differently (merged). A jump in merges can mean one "
            "person ordering under many spellings.",
            "short",
            [
                (f"60 * sum(rate(shinsa_identities_created_total[{RATE}]))", "new people"),
                (f"60 * sum(rate(shinsa_identity_merges_total[{RATE}]))", "merged identities"),
            ],
            span=12,
            axis="per min",
        ),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("Credit exposure (支払い能力)"))
    for panel in (
        graph(
            "Outstanding deferred balance",
            "Yen approved on deferred payment (後払い) and not yet repaid, over all buyers "
            "(every worker reports the same total); each buyer's share is checked against the "
            "policy's exposure limit.",
            "currencyJPY",
            [("max(shinsa_exposure_outstanding_yen)", "outstanding")],
            span=8,
        ),
        number(
            "Buyers held for an unpaid order",
            "Identities with an order reported unpaid: their new orders are declined until "
            "that order is repaid.",
            "short",
            "max(shinsa_identities_held)",
            thresholds=steps((None, "green"), (1, "yellow")),
            height=8,
        ),
        graph(
            "Repayments and outcomes applied per hour",
            "Repaid (repayment or paid outcome), unpaid (holds the buyer), written off "
            "(fraud or chargeback) and reviewer-approved orders applied to buyers' balances; "
            "'unknown_order' are settlements of orders this system never screened.",
            "short",
            [
                (
                    f"3600 * sum by (event, result) (rate(shinsa_settlements_total[{RATE}]))",
                    "{{event}} {{result}}",
                )
            ],
            span=12,
            stacked=True,
            axis="per h",
        ),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("Wallet payments"))
    for panel in (
        graph(
            "Wallet payments per minute by kind and decision",
            "Charges, payments at shops, P2P transfers and withdrawals decided per minute, by "
            "decision. A kind whose declines climb is a pattern being stopped (mules, "
            "takeovers, cash-out) or a limit set too tight: see its reasons.",
            "short",
            [
                (
                    f"60 * sum by (kind, decision) (rate(shinsa_payment_decisions_total[{RATE}]))",
                    "{{kind}} {{decision}}",
                )
            ],
            span=8,
            stacked=True,
        ),
        number(
            "Wallet payments declined",
            "Share of wallet payments refused over the last 30 minutes, all kinds.",
            "percentunit",
            'sum(rate(shinsa_payment_decisions_total{decision="DECLINE"}[30m])) '
            "/ sum(rate(shinsa_payment_decisions_total[30m]))",
            thresholds=steps((None, "green"), (0.03, "yellow"), (0.1, "red")),
            decimals=1,
            height=8,
        ),
        graph(
            "Yen screened per hour by kind and decision",
            "Yen of wallet payments decided per hour; DECLINE is money blocked.",
            "currencyJPY",
            [
                (
                    "3600 * sum by (kind, decision) "
                    f"(rate(shinsa_payment_amount_yen_total[{RATE}]))",
                    "{{kind}} {{decision}}",
                )
            ],
            span=12,
            stacked=True,
            axis="per h",
        ),
        graph(
            "Cash-out kept from leaving per hour",
            "Yen of transfers and withdrawals declined or held for review per hour: money a "
            "fraudster did not get out (or a customer waits for, if it was theirs).",
            "currencyJPY",
            [
                (
                    f"3600 * sum by (kind) (rate(shinsa_cash_out_stopped_yen_total[{RATE}]))",
                    "{{kind}}",
                )
            ],
            span=12,
            axis="per h",
        ),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("Merchant audience segments"))
    board = board.with_panel(
        graph(
            "Segment requests answered and refused per hour",
            "Merchants' audience counts and exports answered (each of at least 50 people) and "
            "refused by reason: below_minimum, differencing, bad_query, unauthorized, "
            "other_merchant. Many differencing or other_merchant refusals: a merchant probing.",
            "short",
            [
                ("sum by (kind) (increase(shinsa_segment_answers_total[1h]))", "answered {{kind}}"),
                (
                    "sum by (reason) (increase(shinsa_segment_refusals_total[1h]))",
                    "refused {{reason}}",
                ),
            ],
            span=24,
            axis="per h",
        )
    )
    return board


# ---------------------------------------------------------------- Pipeline health


def pipeline() -> Any:
    board = new_dashboard(
        "Shinsa — Pipeline health",
        "shinsa-pipeline",
        "Is every order screened, quickly, with nothing lost? For whoever is on call.",
    )
    board = board.with_row(dashboard.Row("Right now"))
    for panel in (
        number(
            "Workers up",
            "Workers Prometheus can reach. Below the number you run: see the ShinsaWorkerDown "
            "alert's runbook.",
            "none",
            'sum(up{job="shinsa-worker"})',
            thresholds=steps((None, "red"), (1, "green")),
        ),
        number(
            "Consumer lag",
            "Messages waiting to be screened, all topics. Near 0 when the workers keep up.",
            "short",
            "sum(shinsa_consumer_lag_messages)",
            thresholds=steps((None, "green"), (1000, "yellow"), (10000, "red")),
        ),
        number(
            "p99 latency from ingest",
            "99 % of orders are decided within this time of reaching Kafka. Target: 1 s.",
            "s",
            latency(0.99, "ingest"),
            thresholds=steps((None, "green"), (0.5, "yellow"), (1, "red")),
        ),
        number(
            "Dead-letter share",
            "Share of input events rejected as invalid (they go to the dead-letter topic with "
            "the reason; nothing is dropped).",
            "percentunit",
            f"(sum(rate(shinsa_dlq_total[{RATE}])) or vector(0)) "
            f"/ (sum(rate(shinsa_events_in_total[{RATE}])) > 0)",
            thresholds=steps((None, "green"), (0.005, "yellow"), (0.02, "red")),
            decimals=2,
        ),
        number(
            "Merchants known",
            "Merchants in the workers' merchant table (the fewest any worker has). 0 means "
            "every order is reviewed as MERCHANT_UNKNOWN.",
            "short",
            "min(shinsa_merchants_known)",
            thresholds=steps((None, "red"), (1, "green")),
        ),
        number(
            "Send retries in the period",
            "Results Kafka refused at first and that were sent again. Anything above 0 means "
            "the broker had trouble; nothing was lost.",
            "short",
            f"sum(increase(shinsa_send_retries_total[{RANGE}])) or vector(0)",
            thresholds=steps((None, "green"), (1, "yellow")),
        ),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("Flow"))
    for panel in (
        graph(
            "Events in per topic",
            "Events read per second from each input topic, valid or not.",
            "short",
            [(f"sum by (topic) (rate(shinsa_events_in_total[{RATE}]))", "{{topic}}")],
            span=8,
            axis="events / s",
        ),
        graph(
            "Events out per topic",
            "Events written per second and committed to Kafka: decisions, traces, dead letters "
            "and the internal account-events hop. Decisions out should follow orders in.",
            "short",
            [(f"sum by (topic) (rate(shinsa_events_out_total[{RATE}]))", "{{topic}}")],
            span=8,
            axis="events / s",
        ),
        graph(
            "Dead letters per minute by reason",
            "Rejected events by source topic and reason. `shinsa dlq` lists them with their "
            "offsets; processing_error is a bug in Shinsa.",
            "short",
            [
                (
                    f"60 * sum by (topic, reason) (rate(shinsa_dlq_total[{RATE}]))",
                    "{{topic}}: {{reason}}",
                )
            ],
            span=8,
            axis="per min",
        ),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("Latency and backlog"))
    for panel in (
        graph(
            "Decision latency",
            "Time from the order to its decision: from the order's own time (event, includes "
            "the producer's delays) and from its arrival in Kafka (ingest, Shinsa's part). "
            "p50: half of the orders are faster; p99: all but 1 in 100.",
            "s",
            [
                (latency(0.5, "ingest"), "p50 from ingest"),
                (latency(0.99, "ingest"), "p99 from ingest"),
                (latency(0.5, "event"), "p50 from event time"),
                (latency(0.99, "event"), "p99 from event time"),
            ],
        ),
        graph(
            "Consumer lag per topic and partition",
            "Messages not yet screened, per partition. One partition growing alone: a hot key "
            "or a stuck worker. All growing: more traffic than the workers can take.",
            "short",
            [
                (
                    "sum by (topic, partition) (shinsa_consumer_lag_messages)",
                    "{{topic}} / {{partition}}",
                )
            ],
            axis="messages",
        ),
        graph(
            "Workers",
            "Workers Prometheus can reach, and workers whose agents run. They differ while a "
            "worker starts or stops.",
            "none",
            [
                ('sum(up{job="shinsa-worker"})', "answering"),
                ("sum(shinsa_worker_up)", "agents running"),
            ],
        ),
        graph(
            "Retries per minute",
            "Kafka sends retried, hot-path transactions aborted (their batch is answered "
            "again), and Redis calls that waited, by store. Non-zero means a dependency is "
            "struggling; the pipeline waits instead of losing orders.",
            "short",
            [
                (f"60 * sum(rate(shinsa_send_retries_total[{RATE}])) or vector(0)", "Kafka sends"),
                (
                    f'60 * sum(rate(shinsa_transactions_total{{result="aborted"}}[{RATE}]))'
                    " or vector(0)",
                    "aborted transactions",
                ),
                (
                    f"60 * sum by (store) (rate(shinsa_redis_retries_total[{RATE}]))",
                    "Redis: {{store}}",
                ),
            ],
            axis="per min",
        ),
    ):
        board = board.with_panel(panel)
    return board


# ---------------------------------------------------------------- Model


def model() -> Any:
    board = new_dashboard(
        "Shinsa — Model",
        "shinsa-model",
        "The online fraud model: how well it ranks, what it scores, what it learns from.",
    )
    board = board.with_row(dashboard.Row("Right now"))
    for panel in (
        number(
            "Model version",
            "The model checkpoint the workers score with (more than one during a roll-out).",
            "none",
            "max by (version) (shinsa_model_info)",
            legend="{{version}}",
            text_mode=common.BigValueTextMode.NAME,
        ),
        number(
            "Model state",
            "Cold start: the model has not learned enough labels yet and the policy rules "
            "decide alone. Warm: the model's score takes part in every decision.",
            "none",
            "min(shinsa_model_warm)",
            mappings=text_map(**{"0": ("cold start", "orange"), "1": ("warm", "green")}),
        ),
        number(
            "Labels learned",
            "Outcomes the model in use has learned from; it takes part in decisions once "
            "it has learned SHINSA_MODEL_MIN_LABELS of them.",
            "short",
            "max(shinsa_model_labels_learned)",
        ),
        number(
            "ROC AUC",
            "How well the model ranks fraud above good orders, measured on each order before "
            "its outcome was known (1 = perfect, 0.5 = coin toss).",
            "none",
            "max(shinsa_model_roc_auc >= 0)",
            thresholds=steps((None, "red"), (0.75, "yellow"), (0.85, "green")),
            decimals=3,
        ),
        number(
            "Learner",
            "Exactly one worker learns (it holds a lease in Redis); the others only score. "
            "0 means nobody learns and the model stands still.",
            "none",
            "sum(shinsa_learner_active)",
            mappings=text_map(**{"0": ("none", "red"), "1": ("active", "green")}),
        ),
        number(
            "Policy version",
            "The rule set the workers decide with (a hash of the rules: it changes with "
            "every edit of the policy).",
            "none",
            "max by (version) (shinsa_policy_info)",
            legend="{{version}}",
            text_mode=common.BigValueTextMode.NAME,
        ),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("Quality"))
    for panel in (
        graph(
            "Ranking quality",
            "Progressive ROC AUC (fraud ranked above good orders) and average precision "
            "(how clean the top of the ranking is), each score judged before its label was "
            "known. Falling after a version marker: roll the model back (`shinsa model "
            "history`, `shinsa model rollback`). The challenger's "
            "(scored in shadow) beside them: above for long, `shinsa model promote` it.",
            "none",
            [
                ("max(shinsa_model_roc_auc >= 0)", "ROC AUC"),
                ("max(shinsa_model_average_precision >= 0)", "average precision"),
                ("max(shinsa_model_challenger_roc_auc >= 0)", "challenger ROC AUC"),
                ("max(shinsa_model_challenger_average_precision >= 0)", "challenger AP"),
            ],
            max_value=1,
        ),
        graph(
            "Log loss",
            "How far the predicted probabilities are from what happened (lower is better); "
            "it rises when the model is confidently wrong.",
            "none",
            [("max(shinsa_model_log_loss >= 0)", "log loss")],
        ),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("Scores and labels"))
    score_heatmap = (
        heatmap.Panel()
        .title("Score distribution")
        .description(
            "How many orders got each fraud score (0 = surely good, 1 = surely fraud), over "
            "time. Most orders should sit near 0; a shift to the right means riskier traffic "
            "or a changed model."
        )
        .datasource(DATASOURCE)
        .height(8)
        .span(12)
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit("none").axis_label("score"))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
        )
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
        .cell_values(heatmap.CellValues().unit("short"))
        # heatmap format: Grafana turns Prometheus's cumulative buckets into counts per band
        .with_target(
            query(f"sum by (le) (increase(shinsa_model_score_bucket[{RATE}]))", "{{le}}").format(
                PromQueryFormat.HEATMAP
            )
        )
    )
    for panel in (
        score_heatmap,
        graph(
            "Labels by result per minute",
            "What became of each outcome: learned, corrected (the label changed), duplicate, "
            "waiting for its order's features (pending) or never matched (unmatched).",
            "short",
            [(f"60 * sum by (result) (rate(shinsa_labels_total[{RATE}]))", "{{result}}")],
            stacked=True,
            axis="per min",
        ),
        graph(
            "Labels learned",
            "Outcomes the current model has learned from, over time. Flat while outcomes "
            "arrive: the learner is stuck (see Learner above).",
            "short",
            [("max(shinsa_model_labels_learned)", "labels")],
            span=8,
        ),
        graph(
            "Label delay",
            "Time from an order to its outcome, over the last hour: how long the model waits "
            "to learn whether it was right. Chargebacks take weeks.",
            "s",
            [
                (
                    "histogram_quantile(0.5, sum by (le) "
                    "(rate(shinsa_label_delay_seconds_bucket[1h])))",
                    "p50",
                ),
                (
                    "histogram_quantile(0.9, sum by (le) "
                    "(rate(shinsa_label_delay_seconds_bucket[1h])))",
                    "p90",
                ),
            ],
            span=8,
        ),
        graph(
            "Model load failures",
            "Checkpoints a worker refused (bad signature, unreadable) in each interval; that "
            "worker keeps scoring with its previous model. Should stay at 0.",
            "short",
            [(f"sum(increase(shinsa_model_load_failures_total[{RATE}]))", "refused")],
            span=8,
        ),
    ):
        board = board.with_panel(panel)
    return board


# ---------------------------------------------------------------- Credit


BAND_COLOURS = {
    "A": "dark-green",
    "B": "green",
    "C": "yellow",
    "D": "orange",
    "E": "red",
    "COLD": "text",
}
UNPAID_RATIO_ALERT = 1.5  # ShinsaCreditUnpaidRising (rules/alerts.yml)
CREDIT_AUC_STEPS = ((None, "red"), (0.65, "yellow"), (0.72, "green"))  # ShinsaCreditModelAucFalling


def colour_by_band(panel: Panel) -> Panel:
    """Credit bands from A (best, dark green) to E (worst, red); COLD in the text colour."""
    for band, colour in BAND_COLOURS.items():
        panel = panel.override_by_name(
            band,
            [DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": colour})],
        )
    return panel


def credit_approval(window: str, over: str = "rate") -> str:
    """Share of each credit band's deferred orders approved (bands without orders left out;
    every band × decision series exists from a worker's start, at 0)."""
    return (
        f'sum by (band) ({over}(shinsa_credit_decisions_total{{decision="APPROVE"}}[{window}]))'
        f" / (sum by (band) ({over}(shinsa_credit_decisions_total[{window}])) > 0)"
    )


# unpaid / (paid + unpaid) of each order month, per worker, then the max across workers (the
# same as shinsa:credit_unpaid_rate_by_cohort:ratio)
COHORT_UNPAID_RATE = (
    'max by (cohort) (sum without (outcome) (shinsa_credit_cohort_labels{outcome="unpaid"}) '
    "/ (sum without (outcome) (shinsa_credit_cohort_labels) > 0))"
)


def credit() -> Any:
    board = new_dashboard(
        "Shinsa — Credit",
        "shinsa-credit",
        "The credit check (支払い能力) of deferred-payment orders: approvals and yen by credit "
        "band, the balance outstanding, how each month's orders were repaid, and the credit "
        "model. Aggregates only: no buyer appears.",
    )
    board = board.with_row(dashboard.Row("Right now"))
    for panel in (
        number(
            "Credit model state",
            "Cold: the credit model has not learned enough repayments (and unpaid ones) yet, "
            "every deferred order is in band COLD and only the credit limits decide. Warm: its "
            "score sorts orders into bands A (best) to E (worst) and can review or decline.",
            "none",
            "min(shinsa_credit_model_warm)",
            mappings=text_map(**{"0": ("cold start", "orange"), "1": ("warm", "green")}),
        ),
        number(
            "Repayment labels learned",
            "Repayments (PAID) and defaults (UNPAID) of deferred orders the credit model in use "
            "has learned; it decides once it has learned SHINSA_MODEL_MIN_LABELS of them.",
            "short",
            "max(shinsa_credit_model_labels_learned)",
        ),
        number(
            "Credit ROC AUC",
            "How well the credit model ranks orders that went unpaid above repaid ones, each "
            "judged before its repayment was known (1 = perfect, 0.5 = coin toss). Below 0.65 "
            "after 500 labels raises ShinsaCreditModelAucFalling.",
            "none",
            "max(shinsa_credit_model_roc_auc >= 0)",
            thresholds=steps(*CREDIT_AUC_STEPS),
            decimals=3,
        ),
        number(
            "Credit average precision",
            "How clean the top of the credit model's ranking is: the share of unpaid orders "
            "among those it scores riskiest. Compare with the unpaid rate (a coin toss scores "
            "that).",
            "none",
            "max(shinsa_credit_model_average_precision >= 0)",
            decimals=3,
        ),
        number(
            "Unpaid rate: recent months ÷ the six before",
            "Unpaid rate of the two newest order months over that of the six months before "
            "(1 = unchanged). Above 1.5 for 2 hours raises ShinsaCreditUnpaidRising. Empty "
            "until each side has 50 repayment labels.",
            "none",
            "max(shinsa_credit_unpaid_rate_ratio)",
            thresholds=steps((None, "green"), (1.2, "yellow"), (UNPAID_RATIO_ALERT, "red")),
            mappings=[
                SpecialValueMap(
                    options=dashboard_special(SpecialValueMatch.NA_N, "too few labels yet", 0)
                )
            ],
            decimals=2,
        ),
        number(
            "Outstanding deferred balance",
            "Yen approved on deferred payment (後払い) and not yet repaid, all bands (every "
            "worker reports the same total; the max is taken).",
            "currencyJPY",
            "sum(max by (band) (shinsa_credit_outstanding_yen))",
        ),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("Approvals by credit band"))
    for panel in (
        colour_by_band(
            bars(
                "Approval rate by credit band",
                "Share of each band's deferred orders approved in the selected period. It "
                "should fall from A to E; COLD orders were decided by the credit limits alone.",
                "percentunit",
                credit_approval(RANGE, "increase"),
                "{{band}}",
                max_value=1,
                thresholds=steps((None, "red"), (0.8, "yellow"), (0.9, "green")),
            )
        ),
        colour_by_band(
            graph(
                "Approval rate by credit band over time",
                "Share of each band's deferred orders approved. A band whose rate moves at a "
                "policy marker: the credit thresholds (credit_review_score, credit_limit) "
                "changed.",
                "percentunit",
                [(credit_approval(RATE), "{{band}}")],
                max_value=1,
            )
        ),
        colour_by_band(
            graph(
                "Deferred orders per minute by credit band",
                "Deferred-payment orders decided per minute, stacked by band. More orders in D "
                "and E than before: riskier buyers, or a changed credit model.",
                "short",
                [
                    (
                        f"60 * sum by (band) (rate(shinsa_credit_decisions_total[{RATE}]))",
                        "{{band}}",
                    )
                ],
                stacked=True,
                axis="orders / min",
            )
        ),
        colour_by_band(
            graph(
                "Deferred yen approved per minute by credit band",
                "Yen of deferred orders approved per minute, stacked by band: the credit "
                "extended, and how risky it is.",
                "currencyJPY",
                [
                    (
                        "60 * sum by (band) (rate(shinsa_credit_decided_yen_total"
                        f'{{decision="APPROVE"}}[{RATE}]))',
                        "{{band}}",
                    )
                ],
                stacked=True,
            )
        ),
        bars(
            "Deferred yen decided by credit band and decision",
            "Yen of deferred orders decided in the selected period, by band and decision "
            "(only those with any): what each band approved, sent to review and declined.",
            "currencyJPY",
            f"sum by (band, decision) (increase(shinsa_credit_decided_yen_total[{RANGE}])) > 0",
            "{{band}} {{decision}}",
            span=24,
        ),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("Exposure"))
    board = board.with_panel(
        colour_by_band(
            graph(
                "Outstanding deferred balance by credit band",
                "Yen approved and not yet repaid, by the band each order was approved in "
                "(every worker reports the same totals; the max is taken). Growth in D and E "
                "is the risk the unpaid rates below will show weeks later.",
                "currencyJPY",
                [("max by (band) (shinsa_credit_outstanding_yen)", "{{band}}")],
                span=24,
                stacked=True,
            )
        )
    )
    board = board.with_row(dashboard.Row("Repayment by order month (cohorts, JST)"))
    ratio = (
        graph(
            "Unpaid rate of recent months against the six before",
            "Unpaid rate of the two newest order months over that of the six before them, "
            "over time; the dashed line is the alert's 1.5. A young month reports its unpaid "
            "orders after 30 days, its repayments within 14: it looks good at first.",
            "none",
            [("max(shinsa_credit_unpaid_rate_ratio)", "recent ÷ before")],
            span=8,
        )
        .thresholds(steps((None, "green"), (UNPAID_RATIO_ALERT, "red")))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        )
    )
    for panel in (
        bars(
            "Unpaid rate by order month",
            "Share of each month's deferred orders with a known repayment that went unpaid "
            "(unpaid / (paid + unpaid), the credit model's labels; the 13 newest months). "
            "Recent months are incomplete: see their label counts beside.",
            "percentunit",
            COHORT_UNPAID_RATE,
            "{{cohort}}",
            span=8,
            thresholds=steps((None, "green"), (0.02, "yellow"), (0.05, "red")),
        ),
        bars(
            "Repayment labels by order month",
            "Repayments and defaults learned for each month's orders (paid + unpaid): how much "
            "the unpaid rate beside rests on.",
            "short",
            "sum by (cohort) (max by (cohort, outcome) (shinsa_credit_cohort_labels))",
            "{{cohort}}",
            span=8,
        ),
        ratio,
    ):
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("Credit model"))
    for panel in (
        graph(
            "Credit model ranking quality",
            "The credit model's progressive ROC AUC and average precision, each score judged "
            "before its repayment was known. Falling after a version marker: roll the model "
            "back (the credit model is part of the checkpoint).",
            "none",
            [
                ("max(shinsa_credit_model_roc_auc >= 0)", "ROC AUC"),
                ("max(shinsa_credit_model_average_precision >= 0)", "average precision"),
            ],
            span=8,
            max_value=1,
        ),
        graph(
            "Repayment labels per minute by result",
            "What became of each PAID or UNPAID outcome in the credit model: learned, "
            "corrected (the label changed), duplicate, or no_credit (not a deferred order).",
            "short",
            [(f"60 * sum by (result) (rate(shinsa_credit_labels_total[{RATE}]))", "{{result}}")],
            span=8,
            stacked=True,
            axis="per min",
        ),
        graph(
            "Repayment labels learned over time",
            "Repayment labels the credit model in use has learned. Flat while deferred orders "
            "are repaid: the learner is stuck (Learner on the Model dashboard).",
            "short",
            [("max(shinsa_credit_model_labels_learned)", "labels")],
            span=8,
        ),
    ):
        board = board.with_panel(panel)
    return board


# ---------------------------------------------------------------- output

# ---------------------------------------------------------------- the お月玉 campaign


def month_figure(kind: str, period: str = "current") -> str:
    return f'sum(shinsa_campaign_month{{kind="{kind}",period="{period}"}})'


def campaign() -> Any:
    board = new_dashboard(
        "Shinsa — お月玉 campaign",
        "shinsa-campaign",
        "The card campaign: tickets earned from logins and card purchases, this month against "
        "last month, and the campaign worker at work. Aggregates only: no person appears.",
        (CAMPAIGN_CHANGED,),
    )
    board = board.with_row(dashboard.Row("This month (JST)"))
    for title, description, kind in (
        (
            "Tickets issued",
            "Tickets issued this JST month so far, revoked ones included.",
            "issued",
        ),
        (
            "Tickets revoked",
            "Tickets taken back this month: their purchase was confirmed fraud or charged back.",
            "revoked",
        ),
        (
            "Participants",
            "Members holding at least one live ticket this month: the people in the draw.",
            "participants",
        ),
        (
            "Eligible members",
            "Members who logged in successfully at least once this month: their card "
            "purchases of 500 yen or more earn tickets.",
            "eligible",
        ),
    ):
        board = board.with_panel(number(title, description, "short", month_figure(kind), span=6))
    board = board.with_row(dashboard.Row("Month over month"))
    for title, kind in (
        ("Tickets issued: this month and last", "issued"),
        ("Participants: this month and last", "participants"),
    ):
        board = board.with_panel(
            graph(
                title,
                "This month so far (current) against the whole of last month (previous), "
                "from the campaign worker's month figures in Redis.",
                "short",
                [
                    (month_figure(kind), "this month"),
                    (month_figure(kind, "previous"), "last month"),
                ],
            )
        )
    board = board.with_row(dashboard.Row("Flow"))
    board = board.with_panel(
        graph(
            "Tickets per hour",
            "Ledger records written per hour by action; a redelivered purchase re-sends its "
            "record, so this can slightly exceed the month figures.",
            "short",
            [("sum by (action) (increase(shinsa_campaign_tickets_total[1h]))", "{{action}}")],
        )
    )
    board = board.with_panel(
        graph(
            "Card purchases and tickets",
            "Approved card purchases per hour (from screening) beside tickets issued: tickets "
            "stopping while purchases flow raises ShinsaCampaignTicketsStopped.",
            "short",
            [
                (
                    'sum(increase(shinsa_decisions_by_method_total{method="CARD",'
                    'decision="APPROVE"}[1h]))',
                    "card purchases approved",
                ),
                (
                    'sum(increase(shinsa_campaign_tickets_total{action="ISSUED"}[1h]))',
                    "tickets issued",
                ),
            ],
        )
    )
    board = board.with_panel(
        graph(
            "Campaign worker input",
            "Events per second the campaign worker read, by topic and what it did with them "
            "(unlinked: a login of an account without KYC makes nobody eligible).",
            "ops",
            [
                (
                    f"sum by (topic, result) (rate(shinsa_campaign_events_total[{RATE}]))",
                    "{{topic}} {{result}}",
                )
            ],
            span=24,
        )
    )
    return board


DASHBOARDS: dict[str, Callable[[], Any]] = {
    "business-kpis.json": business,
    "pipeline-health.json": pipeline,
    "model.json": model,
    "campaign.json": campaign,
    "credit.json": credit,
}


def render() -> dict[str, str]:
    """File name → the dashboard's JSON text, deterministic (sorted keys)."""
    out = {}
    for name, make in DASHBOARDS.items():
        built = json.loads(json.dumps(make().build(), cls=JSONEncoder))
        out[name] = json.dumps(finish(built), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return out


def main(argv: list[str]) -> int:
    stale = []
    for name, text in render().items():
        path = OUT / name
        if "--check" in argv:
            if not path.exists() or path.read_text("utf-8") != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
        print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python -m monitoring.dashboards")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
