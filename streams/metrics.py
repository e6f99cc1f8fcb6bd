"""The catalogue of Shinsa's Prometheus metrics (`shinsa_*`), served by every worker.

Labels are bounded: topic names, reason codes, decisions and merchant categories come from
fixed sets; no order, buyer, identity or merchant id is ever a label.
"""

from __future__ import annotations

import json
import socket
from functools import lru_cache
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from streams.settings import SCHEMA_DIR, TOPIC_NAMES, TOPICS

EVENTS_IN = Counter(
    "shinsa_events_in_total", "Events read from an input topic, valid or not.", ["topic"]
)
EVENTS_OUT = Counter(
    "shinsa_events_out_total",
    "Events the broker acknowledged on an output topic (decisions, dead letters, the hop).",
    ["topic"],
)
CONSUMER_LAG = Gauge(
    "shinsa_consumer_lag_messages",
    "Messages of a partition assigned to this worker not yet committed: end offset minus "
    "committed offset (the log start offset while nothing is committed), by the loop that "
    "reads it (screen, pay: the hot paths; agents: Faust's control streams). A topic read by "
    "two loops (payments) has a series for each.",
    ["topic", "partition", "loop"],
)
DLQ = Counter(
    "shinsa_dlq_total",
    "Events sent to the dead-letter topic, by source and reason.",
    ["topic", "reason"],
)
DECISIONS = Counter(
    "shinsa_decisions_total", "Decisions emitted.", ["decision", "merchant_category"]
)
DECIDED_AMOUNT = Counter(
    "shinsa_decided_amount_yen_total",
    "Order amount (yen) of emitted decisions: GMV by outcome.",
    ["decision", "merchant_category"],
)
DECISION_REASONS = Counter(
    "shinsa_decision_reasons_total",
    "Reason codes of emitted decisions (agents/reasons.py; every MODEL:<feature> counts as "
    "MODEL_FEATURE), once per code a decision lists, by decision and subject (ORDER, PAYMENT).",
    ["reason", "decision", "subject"],
)
DECISIONS_BY_METHOD = Counter(
    "shinsa_decisions_by_method_total",
    "Orders decided, by payment method (DEFERRED, CARD, …) and decision.",
    ["method", "decision"],
)
LATENCY = Histogram(
    "shinsa_decision_latency_seconds",
    "Decision time minus the order's or wallet payment's event time (source=event) or Kafka "
    "timestamp (source=ingest).",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
# Model (agents/scorer.py scores, agents/learn.py learns; see agents/model.py).
MODEL_SCORE = Histogram(
    "shinsa_model_score",
    "Fraud probability the model gave each scored order (cold start included).",
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
)
MODEL_INFO = Gauge(
    "shinsa_model_info",
    "1 for the model version this process scores (or learns) with.",
    ["version"],
)
MODEL_WARM = Gauge(
    "shinsa_model_warm", "1 once the model has learned enough labels to decide (else rules only)."
)
MODEL_LABELS = Gauge("shinsa_model_labels_learned", "Labels the current model has learned from.")
MODEL_ROC_AUC = Gauge(
    "shinsa_model_roc_auc", "Progressive ROC AUC of scores given before each label was known."
)
MODEL_AVERAGE_PRECISION = Gauge(
    "shinsa_model_average_precision",
    "Progressive average precision over the most recent labelled predictions.",
)
MODEL_LOG_LOSS = Gauge(
    "shinsa_model_log_loss", "Progressive log loss of scores given before each label was known."
)
MODEL_CHALLENGER_INFO = Gauge(
    "shinsa_model_challenger_info",
    "1 for the challenger's estimator kind, which scores in shadow beside the model (none: "
    "no series).",
    ["kind"],
)
MODEL_CHALLENGER_LABELS = Gauge(
    "shinsa_model_challenger_labels_learned", "Labels the challenger has learned from."
)
MODEL_CHALLENGER_ROC_AUC = Gauge(
    "shinsa_model_challenger_roc_auc",
    "The challenger's progressive ROC AUC (its shadow scores, given before each label).",
)
MODEL_CHALLENGER_AVERAGE_PRECISION = Gauge(
    "shinsa_model_challenger_average_precision",
    "The challenger's progressive average precision.",
)
MODEL_PROMOTED_AT = Gauge(
    "shinsa_model_promoted_timestamp_seconds",
    "When the challenger was last promoted to decide (`shinsa model promote`); 0: never.",
)
MODEL_ROLLED_BACK_AT = Gauge(
    "shinsa_model_rolled_back_timestamp_seconds",
    "When the model was last rolled back to an archived checkpoint (`shinsa model "
    "rollback`); 0: never.",
)
MODEL_RULES_ONLY = Gauge(
    "shinsa_model_rules_only",
    "1 while the kill switch keeps the models out of decisions (`shinsa model off`): the "
    "policy rules decide alone.",
)
MODEL_LOAD_FAILURES = Counter(
    "shinsa_model_load_failures_total",
    "Model checkpoints rejected (bad signature, unreadable); the previous model is kept.",
)
LEARNER_ACTIVE = Gauge("shinsa_learner_active", "1 in the one worker that holds the learner lease.")
OUTCOMES = Counter(
    "shinsa_outcomes_total", "Outcomes (labels) read by the learner, by kind.", ["kind"]
)
LABELS = Counter(
    "shinsa_labels_total",
    "What became of each label: learned, waiting for its snapshot, or unmatched.",
    ["result"],
)
# What the learner does with a label (agents/learn.py), for shinsa_labels_total{result}.
LABEL_RESULTS = ("learned", "corrected", "duplicate", "pending", "unmatched")
LABEL_DELAY = Histogram(
    "shinsa_label_delay_seconds",
    "Time from an order's event time to its outcome's event time.",
    buckets=(3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 60 * 86400),
)
# Credit (支払い能力, agents/credit.py): the second check of deferred-payment orders.
CREDIT_BANDS = ("A", "B", "C", "D", "E", "COLD")  # agents/credit.py credit_band
CREDIT_OUTCOMES = ("paid", "unpaid")
CREDIT_DECISIONS = Counter(
    "shinsa_credit_decisions_total",
    "Deferred-payment orders decided, by credit band (A best … E worst, from the credit "
    "score; COLD while the credit model is not warm) and decision.",
    ["band", "decision"],
)
CREDIT_DECIDED_YEN = Counter(
    "shinsa_credit_decided_yen_total",
    "Amount (yen) of deferred-payment orders decided, by credit band and decision.",
    ["band", "decision"],
)
CREDIT_OUTSTANDING = Gauge(
    "shinsa_credit_outstanding_yen",
    "Outstanding deferred balance (yen) of all identities, by the credit band each order was "
    "approved in (the same in every worker: dashboards take the max).",
    ["band"],
)
CREDIT_COHORT_LABELS = Gauge(
    "shinsa_credit_cohort_labels",
    "Credit outcomes learned, by month of order (cohort, JST YYYY-MM; the 13 newest) and "
    "outcome (paid, unpaid): a cohort's unpaid rate is unpaid / (paid + unpaid).",
    ["cohort", "outcome"],
)
CREDIT_UNPAID_RATIO = Gauge(
    "shinsa_credit_unpaid_rate_ratio",
    "Unpaid rate of the two newest order-month cohorts over that of the six before them "
    "(1: unchanged); NaN until both have enough labels (agents/credit.py).",
)
CREDIT_LABELS = Counter(
    "shinsa_credit_labels_total",
    "What became of each repayment label (PAID, UNPAID) in the credit model: learned, "
    "corrected, duplicate, or no_credit (not a deferred order: nothing to learn).",
    ["result"],
)
CREDIT_LABEL_RESULTS = ("learned", "corrected", "duplicate", "no_credit")
CREDIT_MODEL_WARM = Gauge(
    "shinsa_credit_model_warm",
    "1 once the credit model has learned enough labels to decide (else limits only).",
)
CREDIT_MODEL_LABELS = Gauge(
    "shinsa_credit_model_labels_learned",
    "Repayment labels (PAID, UNPAID) the credit model learned.",
)
CREDIT_MODEL_ROC_AUC = Gauge(
    "shinsa_credit_model_roc_auc",
    "The credit model's progressive ROC AUC (scores given before each repayment was known).",
)
CREDIT_MODEL_AVERAGE_PRECISION = Gauge(
    "shinsa_credit_model_average_precision", "The credit model's progressive average precision."
)
POLICY_INFO = Gauge(
    "shinsa_policy_info", "1 for the policy version this worker decides with.", ["version"]
)
MERCHANTS_KNOWN = Gauge("shinsa_merchants_known", "Merchants in this worker's merchant view.")
WORKER_UP = Gauge("shinsa_worker_up", "1 while the worker's agents run.")
CAMPAIGN_TICKETS = Counter(
    "shinsa_campaign_tickets_total",
    "Campaign ledger records written, by action (ISSUED, REVOKED); a redelivered purchase "
    "re-sends its record and counts again (the ledger is a table keyed by purchase).",
    ["action"],
)
CAMPAIGN_EVENTS = Counter(
    "shinsa_campaign_events_total",
    "Events the campaign worker read, by topic (logins, decisions, outcomes) and result: used, "
    "ignored (declined, failed login, an outcome that revokes nothing), unlinked (a login of "
    "an account without KYC: nobody to make eligible).",
    ["topic", "result"],
)
CAMPAIGN_INFO = Gauge(
    "shinsa_campaign_info",
    "1 per campaign in force on a campaign worker, by campaign and version (a hash of its "
    "definition): a new version is annotated on the campaign dashboard.",
    ["campaign", "version"],
)
CAMPAIGN_MONTH = Gauge(
    "shinsa_campaign_month",
    "A campaign's month so far (period current) and last month (period previous), from Redis: "
    "purchases, issued, revoked, participants (people with a live ticket), eligible (people who "
    "logged in). Campaigns are few and named by operators: a bounded label.",
    ["campaign", "period", "kind"],
)
SEGMENT_ANSWERS = Counter(
    "shinsa_segment_answers_total",
    "Merchant audience segments answered (kind: count, export), each of at least 50 people.",
    ["kind"],
)
SEGMENT_REFUSALS = Counter(
    "shinsa_segment_refusals_total",
    "Segment requests refused, by reason: unauthorized (no valid key), other_merchant, "
    "bad_query, below_minimum (fewer than 50 people), differencing (would single out fewer "
    "than 50 beside an earlier answer).",
    ["reason"],
)
SEGMENT_SECONDS = Histogram(
    "shinsa_segment_query_seconds",
    "Time to answer a segment request (count or export), refusals included.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


# The orders' hot path (agents/screen.py).
SHADOW_DECISIONS = Counter(
    "shinsa_shadow_decisions_total",
    "Orders decided by both the active and the shadow policy, by the pair of decisions.",
    ["active", "shadow"],
)
REPLAYED = Counter(
    "shinsa_decisions_replayed_total",
    "Orders already decided (a redelivery after a crash, a producer's retry, a replay): "
    "answered with the earlier decision, not decided again.",
)

# Wallet payments (agents/wallet.py).
PAYMENT_DECISIONS = Counter(
    "shinsa_payment_decisions_total",
    "Wallet payments decided, by kind (CHARGE, PAY, TRANSFER, WITHDRAW) and decision.",
    ["kind", "decision"],
)
PAYMENT_AMOUNT = Counter(
    "shinsa_payment_amount_yen_total",
    "Yen of wallet payments screened, by kind and decision (DECLINE: blocked).",
    ["kind", "decision"],
)
CASH_OUT_STOPPED = Counter(
    "shinsa_cash_out_stopped_yen_total",
    "Yen of transfers and withdrawals declined or held for review (money kept from leaving).",
    ["kind"],
)
PAYMENTS_REPLAYED = Counter(
    "shinsa_payment_decisions_replayed_total",
    "Payments already decided (a redelivery, a producer's retry): the earlier decision re-sent.",
)

# Identity resolution (agents/intake.py).
IDENTITIES_CREATED = Counter("shinsa_identities_created_total", "New identities resolved.")
IDENTITY_MERGES = Counter("shinsa_identity_merges_total", "Identities merged into older ones.")
SATURATED_KEY_HITS = Counter(
    "shinsa_identity_saturated_key_hits_total",
    "Match keys skipped because they link too many people (help desks, shared mailboxes).",
)

# Policies (agents/policies.py).
POLICY_LOAD_FAILURES = Counter(
    "shinsa_policy_load_failures_total",
    "Published policies refused by a worker (invalid); the previous policy stays in force.",
)

# Redis (agents/state.py): label values are its STORES.
REDIS_RETRIES = Counter(
    "shinsa_redis_retries_total",
    "Redis calls retried because Redis did not answer (the caller waits, nothing is lost), "
    "by store.",
    ["store"],
)

# Credit exposure (agents/exposure.py).
SETTLEMENTS = Counter(
    "shinsa_settlements_total",
    "Repayments and outcomes applied to identities' exposure, or unknown orders.",
    ["event", "result"],
)
OUTSTANDING = Gauge(
    "shinsa_exposure_outstanding_yen",
    "Outstanding deferred balance (yen) of all identities (every worker reports the total).",
)
HELD = Gauge(
    "shinsa_identities_held", "Identities held for an unpaid order (all; the same in every worker)."
)

# The transactional batch loop (streams/txloop.py).
TRANSACTIONS = Counter(
    "shinsa_transactions_total",
    "Hot-path batches by how their Kafka transaction ended (committed, aborted).",
    ["loop", "result"],
)
BATCH_SIZE = Histogram(
    "shinsa_batch_messages",
    "Messages per hot-path batch (one Kafka transaction each).",
    ["loop"],
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000),
)
BATCH_SECONDS = Histogram(
    "shinsa_batch_seconds",
    "Time from a batch's poll to its committed transaction.",
    ["loop"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
STAGE_SECONDS = Histogram(
    "shinsa_batch_stage_seconds",
    "A hot-path batch's time by stage: the loop's queued (polled → handler started, the event "
    "loop's delay), handle and commit, and each handler's own stages (named in code).",
    ["loop", "stage"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)

# Delivery (streams/delivery.py).
SEND_RETRIES = Counter(
    "shinsa_send_retries_total", "Sends that failed and were retried, by output topic.", ["topic"]
)


@lru_cache(maxsize=256)
def logical_topic(full_name: str) -> str | None:
    """The pipeline's name ('orders', 'decisions', ...) of a full topic name, or None.

    Metrics are labelled with logical names so that a topic prefix (one per environment or
    test) never multiplies series; Faust's internal topics are not ours and map to None.
    """
    matches = [name for name in TOPIC_NAMES if full_name.endswith(name)]
    return max(matches, key=len) if matches else None


def enum_symbols(schema: Path, enum_name: str) -> list[str]:
    """The symbols of a named enum anywhere in an Avro schema file."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "enum" and node.get("name") == enum_name:
                found.extend(node["symbols"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(schema.read_text("utf-8")))
    return found


def zero_series(schema_dir: Path = SCHEMA_DIR) -> None:
    """Expose every bounded series of the business counters at 0 from the start.

    Prometheus cannot count the first value of a series it has never seen at 0: a decisions
    counter that first appears at 400 would add nothing to increase() or rate(), and KPIs
    would undercount every worker start. The label values come from the Avro contracts.
    """
    verdicts = enum_symbols(schema_dir / "Decision.avsc", "Verdict")
    categories = [*enum_symbols(schema_dir / "Merchant.avsc", "MerchantCategory"), "UNKNOWN"]
    for decision in verdicts:
        for category in categories:
            DECISIONS.labels(decision, category)
            DECIDED_AMOUNT.labels(decision, category)
    for kind in enum_symbols(schema_dir / "Outcome.avsc", "OutcomeKind"):
        OUTCOMES.labels(kind)
    for result in LABEL_RESULTS:
        LABELS.labels(result)
    for topic, spec in TOPICS.items():
        if spec.flow == "in":
            EVENTS_IN.labels(topic)
        elif spec.flow == "out":
            EVENTS_OUT.labels(topic)
    for source in ("event", "ingest"):
        LATENCY.labels(source)
    for result in CREDIT_LABEL_RESULTS:
        CREDIT_LABELS.labels(result)
    for band in CREDIT_BANDS:
        CREDIT_OUTSTANDING.labels(band)
        for decision in verdicts:
            CREDIT_DECISIONS.labels(band, decision)
            CREDIT_DECIDED_YEN.labels(band, decision)


zero_series()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_metrics(port: int) -> int:
    """Serve /metrics on `port` (0: a free one, so several workers share a host); returns it."""
    port = port or free_port()
    start_http_server(port, addr="127.0.0.1")
    return port
