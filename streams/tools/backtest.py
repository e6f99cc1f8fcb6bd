"""`shinsa eval`: replay a labelled history through the production feature and model code.

Offline numbers are only worth something if they come from the code that runs online, with
labels arriving as late as they do online. So the replay is an event-time simulation of the
learner: every transaction is scored when it happens; its label is learned `delay` later (or
when the simulator's outcome arrived); a label never reaches the model, nor any label-based
feature, before its time. Every score used in the metrics was given before its label was
learned (progressive validation, as agents/model.py does online).

Two inputs:
- the simulator's JSON lines (`shinsa simulate --output`): orders go through the pipeline's own
  stages (attributes, the Redis identity graph in a scratch namespace, enrichment, per-identity
  velocity, `order_features`); labels come from the outcomes in the file;
- a fraud team's CSV or Parquet export: numeric columns as they are, plus per-entity velocity
  (`agents.features.velocity`) and per-entity risk (the share of an entity's earlier
  transactions labelled fraud, counting only labels known by then).

Rows compared: the streaming model with the delay, the same with no delay (each label learned
right after its score: an upper bound), and batch scikit-learn baselines trained on the first
half in time and tested on the second half (on all first-half labels, as offline backtests
usually do, and on only those known at the split). The streaming rows are also scored on the
second half alone, to compare like with like.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import math
import re
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from agents.attributes import order_attributes
from agents.credit import (
    OUTCOME_EVENTS,
    Account,
    apply_event,
    buyer_traits,
    credit_features,
    empty_account,
    is_held,
    outstanding,
)
from agents.enrich import EnrichedOrder, enrich_order
from agents.entities import (
    ORDER_ACTIVITY,
    EntityState,
    activity_features,
    amount_bin,
    entity_values,
    known_risk,
    order_entities,
)
from agents.features import (
    PastOrder,
    add_to_history,
    failures_before,
    history_before,
    order_features,
)
from agents.model import (
    ESTIMATORS,
    ModelState,
    average_precision,
    credit_label_of,
    credit_state,
    label_of,
    log_loss,
    recall_at_review_rate,
    roc_auc,
)
from agents.segments import jst_date
from agents.validate import Rejection, check_order, decode_event
from streams.errors import UserError
from streams.records import Merchant, Order, Outcome
from streams.settings import Settings
from streams.tools.backtest_wallet import pattern_recall

OUTCOME = "outcome"  # --delay outcome: a label is known when the simulator's outcome arrived
DELAY_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
DELAY_PATTERN = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
RESOLVE_BATCH = 1000  # orders per identity script call (the worker's default batch)
TARGETS = ("fraud", "credit")  # what is judged: fraud, or the repayment of deferred orders
# Replay phases at one instant: a label that became known by then is learned before the
# transactions of that instant are scored; a no-delay label right after its own score.
LEARN, SCORE, LEARN_AFTER_SCORE = 0, 1, 2
TRUE_LABELS = frozenset({"1", "1.0", "true"})
FALSE_LABELS = frozenset({"0", "0.0", "false"})
EPOCH_SECONDS_MAX = 1e11  # later than year 5000: the numbers are milliseconds, not seconds


def parse_delay(text: str) -> int | None:
    """Milliseconds of a delay written like 30m, 12h, 7d (or 0); None for `outcome`."""
    value = text.strip().lower()
    if value == OUTCOME:
        return None
    if value in ("0", "none"):
        return 0
    match = DELAY_PATTERN.fullmatch(value)
    if not match:
        raise UserError(
            f"--delay {text!r}: expected a number and a unit (s, m, h, d, w) such as 30m, 12h "
            f"or 7d, 0 for none, or {OUTCOME!r} (simulator files: when each outcome arrived)"
        )
    return round(float(match.group(1)) * DELAY_UNITS_MS[match.group(2)])


def delay_text(delay_ms: int | None) -> str:
    if delay_ms is None:
        return OUTCOME
    if delay_ms == 0:
        return "none"
    for unit in ("d", "h", "m", "s"):
        if delay_ms % DELAY_UNITS_MS[unit] == 0:
            return f"{delay_ms // DELAY_UNITS_MS[unit]}{unit}"
    return f"{delay_ms}ms"


def quiet(note: str) -> None:
    """Where notes go when nobody shows them."""


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# ------------------------------------------------------------------ the replay


@dataclass(slots=True)
class Txn:
    """One transaction to replay: when, its label, and its label-independent features."""

    time_ms: int
    label: int | None  # None: no outcome in the file; scored, not evaluated
    outcome_ms: int | None  # when the simulator's outcome arrived (--delay outcome)
    x: dict[str, float]
    entities: tuple[tuple[str, str], ...] = ()  # (column, value): keys of the risk features


@dataclass
class History:
    """A labelled history in event-time order, whatever file it came from."""

    txns: list[Txn]
    source: str  # "simulator" or "table"
    notes: list[str] = field(default_factory=list)
    patterns: list[str | None] = field(default_factory=list)  # wallet: each payment's truth


class EntityRisk:
    """Each entity's known labels (agents/entities.py), added at the time each became known."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], EntityState] = {}

    def learn(self, entities: Sequence[tuple[str, str]], known_ms: int, label: int) -> None:
        for key in entities:
            state = self.states.get(key)
            if state is None:
                state = self.states[key] = EntityState()
            state.learn(known_ms, label)

    def features(self, entities: Sequence[tuple[str, str]], now_ms: int) -> dict[str, float]:
        return known_risk([(key[0], self.states.get(key)) for key in entities], now_ms)


def label_times(txns: Sequence[Txn], delay_ms: int | None) -> list[int | None]:
    """When each label becomes known: `delay` after the transaction, or its outcome's time."""
    if delay_ms is None:
        return [t.outcome_ms if t.label is not None else None for t in txns]
    return [t.time_ms + delay_ms if t.label is not None else None for t in txns]


def schedule(txns: Sequence[Txn], known_at: Sequence[int | None]) -> list[tuple[int, int, int]]:
    """(time, phase, index) of every score and learn, in the order the replay runs them.

    Learn events after the last transaction change nothing measured and are left out.
    """
    events = [(t.time_ms, SCORE, i) for i, t in enumerate(txns)]
    end = txns[-1].time_ms if txns else 0
    for i, at in enumerate(known_at):
        if at is None:
            continue
        if at > txns[i].time_ms:
            if at <= end:
                events.append((at, LEARN, i))
        else:  # no delay (or an outcome stamped before its order): right after the score
            events.append((txns[i].time_ms, LEARN_AFTER_SCORE, i))
    events.sort()
    return events


class FeatureRows:
    """The features of labelled transactions as they were scored, kept compactly (CSR).

    For the batch baselines: a million-row export must not become a million dicts.
    """

    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self.index: dict[int, int] = {}  # transaction index → row
        self.indptr = array("q", [0])
        self.indices = array("i")
        self.data = array("d")

    def add(self, txn_index: int, x: Mapping[str, float]) -> None:
        self.index[txn_index] = len(self.index)
        for name, value in x.items():
            self.indices.append(self.names.setdefault(name, len(self.names)))
            self.data.append(value)
        self.indptr.append(len(self.indices))

    def dense(self, txn_indices: Sequence[int]) -> Any:
        """A float matrix of these transactions (absent features are 0, as one-hot needs)."""
        import numpy as np
        from scipy.sparse import csr_matrix

        matrix = csr_matrix(
            (
                np.frombuffer(self.data, dtype=np.float64),
                np.frombuffer(self.indices, dtype=np.int32),
                np.frombuffer(self.indptr, dtype=np.int64),
            ),
            shape=(len(self.index), len(self.names)),
        )
        return matrix[[self.index[i] for i in txn_indices]].toarray()


@dataclass
class Replay:
    scores: list[float]
    learned: int
    seconds: float
    rows: FeatureRows | None = None


Tick = Callable[[int], None]
EventHook = Callable[[str, int, int, Mapping[str, float]], None]


def replay(
    txns: Sequence[Txn],
    known_at: Sequence[int | None],
    kind: str,
    *,
    collect: bool = False,
    on_event: EventHook | None = None,
    tick: Tick | None = None,
    credit: bool = False,
) -> Replay:
    """Score every transaction and learn every label at its time, with the production model.

    `on_event(what, index, at_ms, features)` sees each "score" and "learn" as it happens (the
    tests use it to prove no label is used early); `collect` keeps the scored features of the
    labelled transactions for the batch baselines; `credit`: the credit model's (logistic).
    """
    started = time.perf_counter()
    model = credit_state() if credit and kind == "logreg" else ModelState(kind=kind)
    risk = EntityRisk()
    rows = FeatureRows() if collect else None
    scores = [math.nan] * len(txns)
    pending: dict[int, Mapping[str, float]] = {}
    learned = 0
    for n, (at, phase, i) in enumerate(schedule(txns, known_at), 1):
        txn = txns[i]
        if phase == SCORE:
            x = txn.x | risk.features(txn.entities, at) if txn.entities else txn.x
            scores[i] = model.score(x)
            if txn.label is not None:
                pending[i] = x
                if rows is not None:
                    rows.add(i, x)
            if on_event is not None:
                on_event("score", i, at, x)
        else:
            assert txn.label is not None
            x = pending.pop(i)
            model.learn(x, txn.label, prior_score=scores[i])
            risk.learn(txn.entities, at, txn.label)
            learned += 1
            if on_event is not None:
                on_event("learn", i, at, x)
        if tick is not None and n % 1000 == 0:
            tick(1000)
    return Replay(scores, learned, time.perf_counter() - started, rows)


# ------------------------------------------------------------------ metrics


def recall_key(rate: float) -> str:
    return f"recall_at_{rate * 100:g}pct"


def evaluate(
    scores: Sequence[float], labels: Sequence[int], rate: float
) -> dict[str, float | int | None]:
    """The numbers of one row of the comparison.

    `recall_ceiling`: the best recall a review of that share allows; below 1 when frauds
    outnumber the reviews, and then recall near it means every review was a fraud.
    """
    positives = sum(labels)
    reviews = max(1, round(len(labels) * rate))
    return {
        "roc_auc": roc_auc(scores, labels),
        "average_precision": average_precision(scores, labels),
        recall_key(rate): recall_at_review_rate(scores, labels, rate) if labels else None,
        "recall_ceiling": min(1.0, reviews / positives) if positives else None,
        "log_loss": log_loss(scores, labels),
        "labelled": len(labels),
        "positives": positives,
    }


@dataclass(frozen=True)
class Split:
    """The labelled transactions, and their halves in time (for the batch baselines)."""

    labelled: list[int]
    first: list[int]
    second: list[int]
    at_ms: int


def split_halves(txns: Sequence[Txn]) -> Split:
    labelled = [i for i, t in enumerate(txns) if t.label is not None]
    if not labelled:
        return Split([], [], [], 0)
    at = txns[labelled[len(labelled) // 2]].time_ms
    first = [i for i in labelled if txns[i].time_ms < at]
    second = [i for i in labelled if txns[i].time_ms >= at]
    return Split(labelled, first, second, at)


def streaming_metrics(
    txns: Sequence[Txn], run: Replay, split: Split, rate: float
) -> dict[str, Any]:
    def on(indices: list[int]) -> dict[str, Any]:
        labels = [txns[i].label for i in indices]
        return evaluate([run.scores[i] for i in indices], labels, rate)  # type: ignore[arg-type]

    return on(split.labelled) | {
        "learned": run.learned,
        "seconds": round(run.seconds, 2),
        "second_half": on(split.second),
    }


BATCH_ROWS = {
    "batch": "LogisticRegression, standard scaling; first half",
    "batch_hgb": "HistGradientBoostingClassifier; first half",
    "batch_at_split": "LogisticRegression, standard scaling; labels known at the split",
}


def batch_models() -> dict[str, Any] | None:
    """Fresh scikit-learn models per batch row; None when scikit-learn (a dev extra) is absent."""
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        return None

    def logreg() -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))

    return {
        "batch": logreg(),
        "batch_hgb": HistGradientBoostingClassifier(random_state=0),
        "batch_at_split": logreg(),
    }


def batch_baselines(
    txns: Sequence[Txn],
    rows: FeatureRows,
    split: Split,
    known_at: Sequence[int | None],
    rate: float,
    tick: Tick | None = None,
) -> dict[str, dict[str, Any]]:
    """Batch models trained on the first half in time, tested on the second half.

    `batch` and `batch_hgb` learn every first-half label, as a classic offline backtest does
    (optimistic: some of those labels arrived only during the second half). `batch_at_split`
    learns only the labels known at the split under the delay: what a team retraining on the
    split day would have had.
    """
    models = batch_models()
    if models is None:
        note = "skipped: scikit-learn is not installed (pip install -e '.[dev]')"
        return {key: {"skipped": note} for key in BATCH_ROWS}
    known = [i for i in split.first if (at := known_at[i]) is not None and at <= split.at_ms]
    y_test = [txns[i].label or 0 for i in split.second]
    x_test = rows.dense(split.second) if y_test else None
    out: dict[str, dict[str, Any]] = {}
    for key, model in models.items():
        train = known if key == "batch_at_split" else split.first
        y_train = [txns[i].label or 0 for i in train]
        if len(set(y_train)) < 2 or not y_test:
            out[key] = {"skipped": "skipped: no labels of both kinds to train on"}
            continue
        started = time.perf_counter()
        model.fit(rows.dense(train), y_train)
        scores = [float(p) for p in model.predict_proba(x_test)[:, 1]]
        out[key] = {"model": BATCH_ROWS[key], **evaluate(scores, y_test, rate)}
        out[key] |= {
            "train": len(train),
            "train_positives": sum(y_train),
            "seconds": round(time.perf_counter() - started, 2),
        }
        if tick is not None:
            tick(1)
    return out


# ------------------------------------------------------------------ simulator input


@dataclass
class Simulated:
    """What the backtest needs of a simulator file: merchants, orders, labels."""

    merchants: dict[str, Merchant]
    orders: list[Order]  # event-time order
    labels: dict[str, tuple[int, int]]  # order id → (label, ms when it became known)
    skipped: Counter[str] = field(default_factory=Counter)
    # device id → event ms of its failed card authorisations, sorted (agents/devices.py)
    failed_auths: dict[str, list[int]] = field(default_factory=dict)
    patterns: dict[str, str] = field(default_factory=dict)  # fraud order id → its pattern
    # what settles deferred orders, in time order: (event ms, order id, account event)
    settlements: list[tuple[int, str, str]] = field(default_factory=list)
    credit_labels: dict[str, tuple[int, int]] = field(default_factory=dict)  # repayments


def read_simulated(path: Path, registry: Any) -> Simulated:
    """Merchants, valid orders and their labels from `{"topic", "value"}` JSON lines.

    Invalid events are skipped and counted, as the worker would dead-letter them. An order
    with several outcomes takes its first label, unless a loss is reported later (a
    chargeback after payment): then 1, known from that report on.
    """
    merchants: dict[str, Merchant] = {}
    orders: list[Order] = []
    outcomes: list[Outcome] = []
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    failed_auths: dict[str, list[int]] = {}
    patterns: dict[str, str] = {}
    settlements: list[tuple[int, str, str]] = []
    names = {
        "merchants": "Merchant",
        "orders": "Order",
        "outcomes": "Outcome",
        "payments": "Payment",
    }
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                envelope = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise UserError(f"{path}:{number}: not valid JSON") from None
            if not isinstance(envelope, dict) or not isinstance(envelope.get("topic"), str):
                raise UserError(
                    f'{path}:{number}: expected {{"topic": ..., "value": {{...}}}} '
                    "as `shinsa simulate --output` writes"
                )
            name = names.get(envelope["topic"])
            if name is None:
                continue  # logins: not used by the model
            record = decode_event(registry, name, orjson.dumps(envelope.get("value")), None)
            if name == "Payment":
                if not isinstance(record, Rejection):
                    record_failed_auth(record, failed_auths)
                    record_repayment(record, settlements)
                continue
            if isinstance(record, Order):
                record = check_order(record, record.event_time) or record
            if isinstance(record, Rejection):
                skipped[f"invalid {envelope['topic']}"] += 1
            elif isinstance(record, Merchant):
                merchants[record.merchant_id] = record
            elif isinstance(record, Order):
                if record.order_id in seen:
                    skipped["duplicate orders"] += 1
                    continue
                seen.add(record.order_id)
                orders.append(record)
                if envelope.get("pattern"):  # the simulator's truth, for recall per pattern
                    patterns[record.order_id] = str(envelope["pattern"])
            else:
                outcomes.append(record)
    orders.sort(key=lambda o: o.event_time)
    for times in failed_auths.values():
        times.sort()
    labels = labels_of(orders, outcomes, skipped)
    credit = labels_of(orders, outcomes, Counter(), credit_label_of)
    for outcome in outcomes:
        event = OUTCOME_EVENTS.get(outcome.kind)
        if event is not None and outcome.subject == "ORDER":
            settlements.append((to_ms(outcome.event_time), outcome.order_id, event))
    settlements.sort()
    return Simulated(
        merchants, orders, labels, skipped, failed_auths, patterns, settlements, credit
    )


def record_failed_auth(payment: Any, failed_auths: dict[str, list[int]]) -> None:
    """Keep a failed card authorisation's time under its device, as agents/devices.py does."""
    if payment.kind == "CARD_AUTH" and payment.status == "FAILED" and payment.device_id:
        failed_auths.setdefault(payment.device_id, []).append(to_ms(payment.event_time))


def record_repayment(payment: Any, settlements: list[tuple[int, str, str]]) -> None:
    """A deferred order's repayment settles it, as agents/exposure.py reads it."""
    if payment.kind == "REPAYMENT" and payment.status == "SUCCEEDED" and payment.order_id:
        settlements.append((to_ms(payment.event_time), payment.order_id, "repaid"))


def labels_of(
    orders: Sequence[Order],
    outcomes: Sequence[Outcome],
    skipped: Counter[str],
    label_fn: Callable[[str], int | None] = label_of,
) -> dict[str, tuple[int, int]]:
    """Each order's label (fraud by default; `credit_label_of` for repayments)."""
    known = {o.order_id for o in orders}
    labels: dict[str, tuple[int, int]] = {}
    for outcome in sorted(outcomes, key=lambda o: o.event_time):
        label = label_fn(outcome.kind)
        if outcome.order_id not in known or label is None:
            skipped["outcomes of unknown orders" if label is not None else "unused outcomes"] += 1
            continue
        current = labels.get(outcome.order_id)
        if current is None or (label and not current[0]):
            labels[outcome.order_id] = (label, to_ms(outcome.event_time))
    return labels


async def _resolve(
    orders: Sequence[Order], settings: Settings, tick: Tick | None
) -> list[dict[str, Any]]:
    from redis import asyncio as aioredis
    from redis.exceptions import RedisError

    from agents.identity import IdentityGraph, drop_namespace, person_keys

    client = aioredis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=3, socket_timeout=60
    )
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise UserError(
            f"Redis at {settings.redis_url} does not answer ({type(exc).__name__}): the backtest "
            "resolves identities with the real graph; start it with `shinsa stack up`"
        ) from None
    namespace = f"{settings.identity_namespace}:eval:{uuid.uuid4().hex[:12]}"
    graph = IdentityGraph(client, namespace, settings.identity_fanout_limit)
    secret = settings.hash_key.get_secret_value().encode()
    found: list[dict[str, Any]] = []
    try:
        for start in range(0, len(orders), RESOLVE_BATCH):
            chunk = orders[start : start + RESOLVE_BATCH]
            times = [to_ms(o.event_time) for o in chunk]
            identities = await graph.resolve(
                [person_keys(o.buyer, secret) for o in chunk],
                times,
                times[-1],
                [o.order_id for o in chunk],
            )
            found.extend(dataclasses.asdict(i) for i in identities)
            if tick is not None:
                tick(len(chunk))
    finally:
        await drop_namespace(client, namespace)
        await client.aclose()
    return found


def resolve_identities(
    orders: Sequence[Order], settings: Settings, tick: Tick | None = None
) -> list[dict[str, Any]]:
    """Each order's identity as the intake stage saw it, in event-time order.

    The real graph (agents/identity_graph.lua) in a scratch namespace, dropped afterwards. The
    script resolves a batch one record after another, so batches give the same identities as
    one call per order.
    """
    return asyncio.run(_resolve(orders, settings, tick))


def enriched_orders(
    sim: Simulated, identities: Sequence[Mapping[str, Any]]
) -> Iterator[tuple[EnrichedOrder, list[PastOrder]]]:
    """Each order enriched as the pipeline does it, with its identity's earlier orders."""
    histories: dict[str, list[PastOrder]] = {}
    for order, identity in zip(sim.orders, identities, strict=True):
        enriched = enrich_order(order, sim.merchants, identity, order_attributes(order))
        past = histories.get(identity["identity_id"], [])
        yield enriched, history_before(past, order.order_id)
        histories[identity["identity_id"]] = add_to_history(
            past, order.order_id, to_ms(order.event_time), order.amount
        )


def simulated_history(
    path: Path, settings: Settings, *, progress: Any = None, say: Callable[[str], None] = quiet
) -> History:
    from streams.codec import SchemaRegistry

    sim = read_simulated(path, SchemaRegistry(settings.schema_dir))
    if not sim.orders:
        raise UserError(f"{path}: no valid orders (is it a `shinsa simulate --output` file?)")
    if sim.skipped:
        say("skipped: " + ", ".join(f"{n} {what}" for what, n in sim.skipped.most_common()))
    with step(progress, "resolving identities", len(sim.orders)) as tick:
        identities = resolve_identities(sim.orders, settings, tick)
    txns = []
    patterns: list[str | None] = []
    states: dict[tuple[str, str], EntityState] = {}
    with step(progress, "features", len(sim.orders)) as tick:
        for n, (enriched, history) in enumerate(enriched_orders(sim, identities), 1):
            order = enriched.order
            at_ms = to_ms(order.event_time)
            label, known_ms = sim.labels.get(order.order_id, (None, None))
            failures = failures_before(sim.failed_auths.get(order.device_id or "", []), at_ms)
            keys = order_entities(
                enriched.identity["identity_id"], order.merchant_id, order.device_id
            )
            habits = [k for k in keys if k[0] in ORDER_ACTIVITY]  # as the worker does
            seen = [(kind, states.get((kind, value))) for kind, value in habits]
            x = order_features(enriched, history, failures, seen)
            for key in habits:  # recorded once the order is decided
                values = entity_values(key[0], order.amount, x)
                states.setdefault(key, EntityState()).record(at_ms, values)
            txns.append(Txn(at_ms, label, known_ms, x, tuple(keys)))
            patterns.append(sim.patterns.get(order.order_id) if label == 1 else None)
            if n % 1000 == 0:
                tick(1000)
    return History(txns, "simulator", patterns=patterns if any(patterns) else [])


class Accounts:
    """Deferred-payment accounts replayed in event time, as agents/exposure.py keeps them:
    every deferred order is opened when it is placed (the backtest cannot know what a policy
    would have declined), settlements apply at their time."""

    def __init__(self, settlements: Sequence[tuple[int, str, str]]) -> None:
        self.settlements, self.next = settlements, 0
        self.accounts: dict[str, Account] = {}
        self.orders: dict[str, tuple[str, int]] = {}  # order id → (identity, event ms)

    def at(self, identity_id: str, now_ms: int) -> Account:
        """The identity's account with every settlement up to `now_ms` applied."""
        while self.next < len(self.settlements) and self.settlements[self.next][0] <= now_ms:
            at_ms, order_id, event = self.settlements[self.next]
            self.next += 1
            owner = self.orders.get(order_id)
            if owner is None or event == "approved":
                continue  # not a deferred order of this history
            account = self.accounts[owner[0]]
            amount = account["open"].get(order_id, 0)
            hours = (at_ms - owner[1]) // 3_600_000
            self.accounts[owner[0]] = apply_event(account, event, order_id, amount, hours)
        return self.accounts.get(identity_id) or empty_account()

    def open(self, identity_id: str, account: Account, order: Order, at_ms: int) -> None:
        self.accounts[identity_id] = apply_event(account, "approved", order.order_id, order.amount)
        self.orders[order.order_id] = (identity_id, at_ms)


def credit_history(
    path: Path, settings: Settings, *, progress: Any = None, say: Callable[[str], None] = quiet
) -> History:
    """The deferred orders of a simulator file with their credit features (agents/credit.py)
    from the accounts as each order found them, labelled by their repayments (`--target
    credit`)."""
    from streams.codec import SchemaRegistry

    sim = read_simulated(path, SchemaRegistry(settings.schema_dir))
    deferred = [o for o in sim.orders if o.payment_method == "DEFERRED"]
    if not deferred:
        raise UserError(f"{path}: no valid deferred-payment orders to judge credit on")
    if sim.skipped:
        say("skipped: " + ", ".join(f"{n} {what}" for what, n in sim.skipped.most_common()))
    with step(progress, "resolving identities", len(sim.orders)) as tick:
        identities = resolve_identities(sim.orders, settings, tick)
    accounts = Accounts(sim.settlements)
    txns = []
    for order, identity in zip(sim.orders, identities, strict=True):
        if order.payment_method != "DEFERRED":
            continue
        at_ms = to_ms(order.event_time)
        identity_id = identity["identity_id"]
        account = accounts.at(identity_id, at_ms)
        merchant = sim.merchants.get(order.merchant_id)
        traits = buyer_traits(order.buyer.birth_date, jst_date(at_ms), order_attributes(order))
        x = credit_features(
            order.amount,
            merchant.category if merchant is not None else "UNKNOWN",
            account["history"],
            outstanding(account),
            len(account["open"]),
            is_held(account),
            (at_ms - (identity.get("first_seen_ms") or at_ms)) / 86_400_000,
            traits,
        )
        label, known_ms = sim.credit_labels.get(order.order_id, (None, None))
        txns.append(Txn(at_ms, label, known_ms, x))
        accounts.open(identity_id, account, order, at_ms)
    return History(txns, "simulator")


def wallet_history(
    path: Path, settings: Settings, *, say: Callable[[str], None] = quiet
) -> History:
    """The wallet payments of a simulator file (streams/tools/backtest_wallet.py)."""
    from streams.codec import SchemaRegistry
    from streams.tools.backtest_wallet import read_wallet

    wallet = read_wallet(path, SchemaRegistry(settings.schema_dir))
    if wallet.skipped:
        say("skipped: " + ", ".join(f"{n} {what}" for what, n in wallet.skipped.most_common()))
    txns = []
    rows = zip(wallet.times, wallet.features, wallet.payment_ids, wallet.entities, strict=True)
    for at_ms, x, payment_id, keys in rows:
        label, known_ms = wallet.labels.get(payment_id, (None, None))
        txns.append(Txn(at_ms, label, known_ms, x, keys))
    return History(txns, "simulator", patterns=wallet.patterns)


# ------------------------------------------------------------------ CSV and Parquet input


@dataclass(frozen=True)
class Columns:
    """Which columns of an export mean what (`--label`, `--time`, `--amount`, `--entity`)."""

    label: str | None
    time: str | None
    amount: str | None = None
    entities: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    pattern: str | None = None  # the truth's pattern name: reported per pattern, never learned


def is_parquet(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


def looks_like_json_lines(path: Path) -> bool:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith(b"{")
    return False


def column_names(path: Path, parquet: bool) -> list[str]:
    if parquet:
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with path.open(encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise UserError(f"{path}: empty file (no header line)")
    return header


def check_columns(path: Path, names: Sequence[str], cols: Columns) -> None:
    shown = ", ".join(names)
    if not cols.label:
        raise UserError(f"{path}: pass --label COL, the 0/1 fraud column (columns: {shown})")
    if not cols.time:
        raise UserError(f"{path}: pass --time COL, the transaction time (columns: {shown})")
    for option, name in [
        ("--label", cols.label),
        ("--time", cols.time),
        ("--amount", cols.amount),
        *(("--entity", e) for e in cols.entities),
        *(("--ignore", e) for e in cols.ignore),
        ("--pattern", cols.pattern),
    ]:
        if name is not None and name not in names:
            raise UserError(f"{option} {name!r}: no such column in {path} (columns: {shown})")


def read_table(path: Path, cols: Columns) -> Any:
    """The export as an Arrow table; in a CSV, label, time and entities are read as text."""
    import pyarrow as pa

    parquet = is_parquet(path)
    names = column_names(path, parquet)
    check_columns(path, names, cols)
    try:
        if parquet:
            import pyarrow.parquet as pq

            return pq.read_table(path)
        from pyarrow import csv as pa_csv

        as_text = {c: pa.string() for c in (cols.label, cols.time, *cols.entities) if c}
        return pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(column_types=as_text))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise UserError(
            f"{path}: cannot be read as {'Parquet' if parquet else 'CSV'}: {exc}"
        ) from None


def parse_label(value: Any) -> int | None:
    """0/1 from 0, 1, true, false (any case); None for an empty cell (or NaN); else ValueError."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower()
    if text == "":
        return None
    if text in TRUE_LABELS:
        return 1
    if text in FALSE_LABELS:
        return 0
    raise ValueError(value)


def parse_labels(values: Sequence[Any], column: str) -> list[int | None]:
    out: list[int | None] = []
    bad: list[str] = []
    for row, value in enumerate(values, 1):
        try:
            out.append(parse_label(value))
        except ValueError:
            out.append(None)
            bad.append(f"row {row}: {value!r}")
    if bad:
        raise UserError(
            f"--label {column!r} must hold 0/1 or true/false; {len(bad)} other value(s): "
            + "; ".join(bad[:3])
        )
    return out


def parse_time(value: Any) -> int:
    """Epoch ms of an ISO 8601 time (no offset: UTC) or of epoch seconds; ValueError if not."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isfinite(seconds) or abs(seconds) >= EPOCH_SECONDS_MAX:
            raise ValueError(value)
        return round(seconds * 1000)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return parse_time(float(text))
        except ValueError:
            moment = datetime.fromisoformat(text)
    else:
        raise ValueError(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_ms(moment)


def parse_times(values: Sequence[Any], column: str) -> list[int]:
    out: list[int] = []
    for row, value in enumerate(values, 1):
        try:
            out.append(parse_time(value))
        except (ValueError, TypeError, OverflowError):
            raise UserError(
                f"--time {column!r}, row {row}: {value!r} is neither an ISO 8601 time "
                "(2026-10-01T12:00:00+09:00) nor epoch seconds"
            ) from None
    return out


def numeric_columns(table: Any, cols: Columns) -> tuple[list[str], list[str]]:
    """(used as features, ignored as not numeric): every column not named by an option."""
    import pyarrow.types as pt

    named = {cols.label, cols.time, cols.pattern, *cols.entities, *cols.ignore}
    used, ignored = [], []
    for f in table.schema:
        if f.name in named:
            continue
        kind = f.type
        numeric = pt.is_integer(kind) or pt.is_floating(kind) or pt.is_decimal(kind)
        (used if numeric or pt.is_boolean(kind) else ignored).append(f.name)
    return used, ignored


def finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def amount_features(amount: float) -> dict[str, float]:
    """The amount as the model sees it: its log, and its quarter-octave bin (agents/entities.py)."""
    return {"amount_log": math.log1p(amount), f"amount_bin={amount_bin(amount)}": 1.0}


CODE_VALUES = 16  # a column with at most this many integer values is a code (a status, a step)
WIDE_ABOVE = 1_000.0  # a column reaching beyond ± this is an amount: the model sees its signed log


@dataclass(frozen=True)
class ColumnKinds:
    """How each numeric column reaches the linear model. A code's steps get one weight each
    (`PAY_0=2` is not twice `PAY_0=1`); a wide amount is seen as its signed log, so a few huge
    values do not flatten the rest. Read from the column's values, as its type is, never from
    the labels."""

    codes: frozenset[str]
    wide: frozenset[str]


def column_kinds(numbers: Mapping[str, Sequence[Any]]) -> ColumnKinds:
    codes, wide = set(), set()
    for name, values in numbers.items():
        seen: set[float] = set()
        reach = 0.0
        for value in values:
            v = finite(value)
            if v is None:
                continue
            reach = max(reach, abs(v))
            if len(seen) <= CODE_VALUES:
                seen.add(v)
        if len(seen) <= CODE_VALUES and all(v.is_integer() for v in seen):
            codes.add(name)
        elif reach > WIDE_ABOVE:
            wide.add(name)
    return ColumnKinds(frozenset(codes), frozenset(wide))


def signed_log(value: float) -> float:
    return math.copysign(math.log1p(abs(value)), value)


def column_features(name: str, value: float, kinds: ColumnKinds) -> dict[str, float]:
    if name in kinds.codes:
        return {name: value, f"{name}={int(value)}": 1.0}
    if name in kinds.wide:
        return {name: signed_log(value)}
    return {name: value}


def table_history(
    path: Path, cols: Columns, *, progress: Any = None, say: Callable[[str], None] = quiet
) -> History:
    """Transactions of a CSV or Parquet export: numeric columns, the amount, and each entity's
    activity before the transaction (agents/entities.py; the known-risk part is added by the
    replay, when labels are known)."""
    table = read_table(path, cols)
    if table.num_rows == 0:
        raise UserError(f"{path}: empty file (no rows)")
    used, ignored = numeric_columns(table, cols)
    if cols.amount is not None and cols.amount not in used:
        raise UserError(f"--amount {cols.amount!r} is not a numeric column")
    notes = []
    if ignored:
        notes.append(f"not numeric, not used as features: {', '.join(ignored)}")
        say(notes[-1])
    labels = parse_labels(table.column(cols.label).to_pylist(), cols.label)
    times = parse_times(table.column(cols.time).to_pylist(), cols.time)
    numbers = {c: table.column(c).to_pylist() for c in used}
    amounts = numbers[cols.amount] if cols.amount else None
    kinds = column_kinds({c: v for c, v in numbers.items() if c != cols.amount})
    if kinds.codes or kinds.wide:
        notes.append(
            f"codes, one weight per value: {', '.join(sorted(kinds.codes)) or '-'}; "
            f"amounts, as signed logs: {', '.join(sorted(kinds.wide)) or '-'}"
        )
        say(notes[-1])
    entities = {c: table.column(c).to_pylist() for c in cols.entities}
    patterns = (
        [None if v in (None, "") else str(v) for v in table.column(cols.pattern).to_pylist()]
        if cols.pattern
        else []
    )
    order = sorted(range(len(times)), key=times.__getitem__)
    states: dict[tuple[str, str], EntityState] = {}
    txns = []
    ordered_patterns: list[str | None] = []
    with step(progress, "features", len(order)) as tick:
        for n, r in enumerate(order, 1):
            at_ms = times[r]
            x: dict[str, float] = {}
            for c in used:
                if (v := finite(numbers[c][r])) is not None:
                    x |= column_features(c, v, kinds)
            amount = max(0.0, finite(amounts[r]) or 0.0) if amounts else 0.0  # refunds: 0
            if amounts:
                x |= amount_features(amount)
            keys = tuple(
                (c, str(v)) for c in cols.entities if (v := entities[c][r]) not in (None, "")
            )
            for key in keys:
                state = states.get(key)
                x |= activity_features(key[0], state, at_ms, amount)
                if state is None:
                    state = states[key] = EntityState()
                state.record(at_ms, entity_values(key[0], amount, x))
            txns.append(Txn(at_ms, labels[r], None, x, keys))
            if patterns:  # legitimate transactions have no pattern, whatever the column says
                ordered_patterns.append(patterns[r] if labels[r] == 1 else None)
            if n % 1000 == 0:
                tick(1000)
    return History(txns, "table", notes, ordered_patterns)


# ------------------------------------------------------------------ the command


@dataclass(frozen=True)
class EvalOptions:
    delay: str | None = None  # None: `outcome` for simulator files, 7d for exports
    estimator: str = "logreg"
    review_rate: float = 0.01
    columns: Columns = field(default_factory=lambda: Columns(None, None))
    payments: bool = False  # a simulator file's wallet payments instead of its orders
    target: str = "fraud"  # or "credit": deferred orders' repayments (agents/credit.py)


def step(progress: Any, what: str, total: int) -> Any:
    """A progress bar for one step (rich Progress from the CLI), or nothing."""
    import contextlib

    if progress is None:
        return contextlib.nullcontext(lambda n: None)

    @contextlib.contextmanager
    def bar() -> Iterator[Tick]:
        task = progress.add_task(what, total=total, rate="")
        started = time.perf_counter()
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            elapsed = max(time.perf_counter() - started, 1e-6)
            progress.update(task, completed=done, rate=f"{done / elapsed:,.0f}/s")

        yield tick
        progress.update(task, completed=total)

    return bar()


def input_kind(path: Path) -> str:
    """ "simulator" (JSON lines) or "table" (CSV, Parquet); a clear error for no usable file."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    if not is_parquet(path) and looks_like_json_lines(path):
        return "simulator"
    return "table"


def resolve_delay(text: str | None, kind: str) -> int | None:
    """The delay in ms (None: each outcome's time); by default `outcome` or 7 days."""
    if text is None:
        return None if kind == "simulator" else DELAY_UNITS_MS["d"] * 7
    delay_ms = parse_delay(text)
    if delay_ms is None and kind != "simulator":
        raise UserError("--delay outcome needs a simulator file; give a duration such as 7d")
    return delay_ms


def load_history(
    path: Path,
    kind: str,
    options: EvalOptions,
    settings: Settings,
    progress: Any,
    say: Callable[[str], None],
) -> History:
    if kind == "table":
        if options.payments:
            raise UserError("--payments reads a simulator file (`shinsa simulate --wallet N`)")
        return table_history(path, options.columns, progress=progress, say=say)
    if options.payments:
        if options.target == "credit":
            raise UserError("--target credit judges deferred orders, not wallet payments")
        return wallet_history(path, settings, say=say)
    if options.target == "credit":
        return credit_history(path, settings, progress=progress, say=say)
    cols = options.columns
    if any((cols.label, cols.time, cols.amount, cols.entities, cols.ignore)):
        say("a simulator file: --label, --time, --amount, --entity and --ignore are not used")
    return simulated_history(path, settings, progress=progress, say=say)


def run_eval(
    path: Path,
    options: EvalOptions,
    settings: Settings,
    *,
    progress: Any = None,
    say: Callable[[str], None] = quiet,
) -> dict[str, Any]:
    """The whole backtest: load, replay with the delay and without, batch baselines."""
    if options.estimator not in ESTIMATORS:
        raise UserError(f"--estimator {options.estimator!r}: one of {', '.join(ESTIMATORS)}")
    if options.target not in TARGETS:
        raise UserError(f"--target {options.target!r}: one of {', '.join(TARGETS)}")
    if not 0 < options.review_rate < 1:
        raise UserError(f"--review-rate {options.review_rate}: a share between 0 and 1")
    started = time.perf_counter()
    kind = input_kind(path)
    delay_ms = resolve_delay(options.delay, kind)
    history = load_history(path, kind, options, settings, progress, say)
    txns = history.txns
    prepared = time.perf_counter() - started
    split = split_halves(txns)
    if not split.labelled:
        raise UserError(f"{path}: no labelled transactions (no outcomes or labels in the file)")
    known_at = label_times(txns, delay_ms)
    credit = options.target == "credit"
    with step(progress, f"replay, delay {delay_text(delay_ms)}", len(txns) * 2) as tick:
        delayed = replay(txns, known_at, options.estimator, collect=True, tick=tick, credit=credit)
    with step(progress, "replay, no delay", len(txns) * 2) as tick:
        no_delay = replay(txns, label_times(txns, 0), options.estimator, tick=tick, credit=credit)
    rate = options.review_rate
    started_batch = time.perf_counter()
    assert delayed.rows is not None
    with step(progress, "batch baselines", len(BATCH_ROWS)) as tick:
        batch = batch_baselines(txns, delayed.rows, split, known_at, rate, tick)
    return {
        "file": str(path),
        "input": kind,
        "estimator": options.estimator,
        "delay": delay_text(delay_ms),
        "review_rate": rate,
        "orders": len(txns),
        "labelled": len(split.labelled),
        "positives": sum(txns[i].label or 0 for i in split.labelled),
        "split_time": datetime.fromtimestamp(split.at_ms / 1000, UTC).isoformat(),
        "subject": "payments" if options.payments else "orders",
        "target": options.target,
        "label": options.columns.label if kind == "table" else None,
        "delayed": streaming_metrics(txns, delayed, split, rate),
        "no_delay": streaming_metrics(txns, no_delay, split, rate),
        **batch,
        **(
            {"patterns": pattern_recall(delayed.scores, history.patterns, split.second, rate)}
            if history.patterns
            else {}
        ),
        "seconds": {
            "prepare": round(prepared, 2),
            "batch": round(time.perf_counter() - started_batch, 2),
            "total": round(time.perf_counter() - started, 2),
        },
    }


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def caption(report: Mapping[str, Any]) -> str:
    lines = [
        f"labels: learned after delay {report['delay']!r}, at once (none), all of the 1st half, "
        "or only those known at the split"
    ]
    ceilings = [
        report["delayed"]["recall_ceiling"],
        report["delayed"]["second_half"]["recall_ceiling"],
    ]
    if all(c is not None and c < 1 for c in ceilings):
        lines.append(
            f"more {positive_noun(report)} than reviews: "
            f"R@{report['review_rate'] * 100:g}% is at most "
            f"{ceilings[0]:.3f} (all), {ceilings[1]:.3f} (2nd half)"
        )
    seconds = [f"prepare {report['seconds']['prepare']:.0f}"]
    seconds += [
        f"{name} {report[key]['seconds']:.0f}"
        for name, key in (("stream", "delayed"), ("no delay", "no_delay"))
    ]
    seconds += [
        f"{name} {report[key]['seconds']:.0f}"
        for name, key in (("logreg", "batch"), ("HGB", "batch_hgb"))
        if "seconds" in report.get(key, {})
    ]
    lines.append("seconds: " + ", ".join(seconds))
    return "\n".join(lines)


def noun(report: Mapping[str, Any]) -> str:
    """What the report's rows are: payments, orders (simulator) or transactions (export)."""
    if report.get("subject") == "payments":
        return "payments"
    return "orders" if report.get("input") == "simulator" else "transactions"


def positive_noun(report: Mapping[str, Any]) -> str:
    """What a positive is: unpaid (credit), fraud (simulator), or the export's label column."""
    if report.get("target") == "credit":
        return "unpaid"
    return report.get("label") or "fraud"


def report_table(report: Mapping[str, Any]) -> Any:
    """The comparison as a rich table (fits 80 columns): streaming rows, then batch rows."""
    from rich import box
    from rich.table import Column, Table

    recall = recall_key(report["review_rate"])
    table = Table(
        Column("model", no_wrap=True),
        Column("labels", no_wrap=True),
        Column("scored", no_wrap=True),
        "labelled",
        "ones" if report.get("label") else positive_noun(report),  # an export: label = 1
        "ROC AUC",
        "AP",
        f"R@{report['review_rate'] * 100:g}%",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        title=f"{report['orders']} {noun(report)}, "
        f"{report['labelled']} labelled, "
        f"{report['positives']} {positive_noun(report)}; "
        f"2nd half from {report['split_time'][:16]}",
        caption=caption(report),
    )
    kind = f"stream {report['estimator']}"
    rows = [(kind, report["delay"], "all", report["delayed"])]
    rows += [(kind, report["delay"], "2nd half", report["delayed"]["second_half"])]
    rows += [(kind, "none", "all", report["no_delay"])]
    rows += [(kind, "none", "2nd half", report["no_delay"]["second_half"])]
    rows += [("batch logreg", "1st half", "2nd half", report["batch"])]
    rows += [("batch HGB", "1st half", "2nd half", report["batch_hgb"])]
    rows += [("batch logreg", "at split", "2nd half", report["batch_at_split"])]
    skipped = set()
    for model, labels, scored, metrics in rows:
        if "skipped" in metrics:
            table.add_row(model, labels, "skipped", *["—"] * 5)
            skipped.add(metrics["skipped"])
            continue
        table.add_row(
            model,
            labels,
            scored,
            str(metrics["labelled"]),
            str(metrics["positives"]),
            *(_fmt(metrics[k]) for k in ("roc_auc", "average_precision", recall)),
        )
    if skipped:
        table.caption = "\n".join([table.caption or "", *sorted(skipped)])
    patterns = report.get("patterns")
    if patterns:
        caught = ", ".join(
            f"{name} {share:.2f}"
            for name, share in patterns.items()
            if name not in ("threshold", "legitimate_flagged")
        )
        table.caption = "\n".join(
            [
                table.caption or "",
                f"stream, delay {report['delay']}, 2nd half: flagging "
                f"{patterns['legitimate_flagged']:.1%} of legitimate {noun(report)} catches "
                f"{caught}",
            ]
        )
    return table
