"""outcomes → join feature snapshot → learn → checkpoint on `models` (one learner for all).

River models are not safe to share, so exactly one learner owns the model: every worker runs
this task, and the one holding a Redis lease learns while the others stand by and take over
when its lease lapses. The learner starts from the newest checkpoint on the `models` topic,
which also records where it stood in the outcomes topic and the labels still waiting for their
snapshots, so a restart neither skips nor repeats a label. It reads every partition of the
outcomes topic in order (no consumer group; the checkpoint holds the offsets) and publishes a
new signed checkpoint every `model_checkpoint_labels` labels or `model_checkpoint_seconds`.

Each outcome becomes a label (agents/model.py `label_of`) and is joined to the order's feature
snapshot (agents/state.py `Snapshot`):

- snapshot found, not learned before: learn, scored progressively with the order's own score;
- learned before with the same label (a repeated outcome): counted as `duplicate`;
- learned before with another label (paid, then charged back): the model learns the correction
  once, outside the progressive metrics (the order was already counted there);
- no snapshot yet (the outcome arrived before its order was screened): the label waits up to
  `label_grace_seconds`, retried every few seconds, then counts as `unmatched` — as do labels
  for orders never screened or whose snapshot expired (`snapshot_ttl_days`).

Invalid outcome events are skipped here: agents/ingest.py dead-letters them once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import TopicPartition

from agents.credit import count_cohort
from agents.entities import RISK_WIDTH, Decayed, risk_values
from agents.model import (
    MODEL_KEY,
    CheckpointError,
    ModelState,
    archive_key,
    credit_label_of,
    decode_checkpoint,
    encode_checkpoint,
    label_of,
)
from agents.scorer import Scorer
from agents.state import Lease, LeaseLost, Snapshot, SnapshotStore, redis_client
from agents.validate import Rejection, decode_event
from streams.app import Runtime
from streams.codec import SchemaRegistry
from streams.follow import whole_topic_consumer
from streams.metrics import CREDIT_LABELS, LABEL_DELAY, LABELS, LEARNER_ACTIVE, OUTCOMES

log = logging.getLogger(__name__)

PENDING_RETRY_SECONDS = 2.0
PROMOTE_CHECK_SECONDS = 1.0
PENDING_MAX = 20_000  # waiting labels ride in the checkpoint, which must stay small


FRAUD, CREDIT = "fraud", "credit"


@dataclass(slots=True)
class Label:
    order_id: str
    label: int
    kind: str
    event_ms: int
    target: str = FRAUD  # which model learns it: fraud, or credit (repayments)

    @property
    def pending_key(self) -> str:
        """Its key among the labels waiting for a snapshot (an outcome may give two)."""
        return self.order_id if self.target == FRAUD else f"{CREDIT}|{self.order_id}"


def to_labels(value: bytes | None, registry: SchemaRegistry, max_bytes: int) -> list[Label]:
    """An outcome's labels: fraud (agents/model.py label_of) and, for an order's repayment
    outcome, credit (credit_label_of). PAID is both; UNPAID credit only; fraud fraud only."""
    outcome = decode_event(registry, "Outcome", value, max_bytes)
    if isinstance(outcome, Rejection):
        return []
    at_ms = int(outcome.event_time.timestamp() * 1000)
    labels = []
    label = label_of(outcome.kind)
    if label is not None:
        # a wallet payment's snapshot is kept under pay:<payment id> (agents/wallet.py)
        ref = f"pay:{outcome.order_id}" if outcome.subject == "PAYMENT" else outcome.order_id
        labels.append(Label(ref, label, outcome.kind, at_ms))
    credit = credit_label_of(outcome.kind)
    if credit is not None and outcome.subject == "ORDER":
        labels.append(Label(outcome.order_id, credit, outcome.kind, at_ms, CREDIT))
    return labels


def join_label(state: ModelState, snapshot: Snapshot, label: Label, uncommitted: set[str]) -> str:
    """Learn one label from its snapshot (updated in place); returns what happened."""
    seen = snapshot.label
    # A label learned by a learner that died before checkpointing it is not in this model.
    in_model = seen is not None and (
        (snapshot.learned_version or 0) <= state.version or label.order_id in uncommitted
    )
    if in_model and seen == label.label:
        return "duplicate"
    prior = None if in_model else snapshot.score
    prior_challenger = None if in_model else snapshot.challenger_score
    state.learn_both(snapshot.features, label.label, prior, prior_challenger)
    snapshot.label, snapshot.learned_version = label.label, state.version + 1
    uncommitted.add(label.order_id)
    if seen is None and snapshot.event_ms:
        LABEL_DELAY.observe(max(0.0, (label.event_ms - snapshot.event_ms) / 1000))
    return "corrected" if in_model else "learned"


def join_credit(state: ModelState, snapshot: Snapshot, label: Label, uncommitted: set[str]) -> str:
    """Learn one repayment label in the credit model from the snapshot's credit features.

    Only deferred orders have them (`no_credit` otherwise). An order reported unpaid stays a
    bad credit outcome when it is repaid later (a cure, not a correction: the identity's
    history counts it as late); a PAID reported first and UNPAID later is corrected once."""
    if snapshot.credit_features is None:
        return "no_credit"
    credit = state.credit_model()
    seen = snapshot.credit_label
    in_model = seen is not None and (
        (snapshot.credit_learned_version or 0) <= state.version
        or f"{CREDIT}|{label.order_id}" in uncommitted
    )
    if in_model and (seen == label.label or seen == 1):
        return "duplicate"
    prior = None if in_model else snapshot.credit_score
    credit.learn(snapshot.credit_features, label.label, prior)
    count_cohort(credit.cohorts, snapshot.event_ms, label.label, seen if in_model else None)
    snapshot.credit_label, snapshot.credit_learned_version = label.label, state.version + 1
    uncommitted.add(f"{CREDIT}|{label.order_id}")
    return "corrected" if in_model else "learned"


class RiskChanges:
    """A batch of labels' additions to their entities' known risk (agents/entities.py).

    A label counts once per order, whatever the learner does: added when the snapshot first
    gets a label, corrected when it changes (paid, then charged back), nothing when a learner
    that lost its model re-learns a label the snapshot already holds."""

    def __init__(self) -> None:
        self.sums: dict[str, Decayed] = {}

    def add(self, refs: Sequence[str], known_ms: int, seen: int | None, label: int) -> None:
        if seen == label or not refs:
            return
        values = risk_values(label, seen)
        for ref in refs:
            sums = self.sums.get(ref)
            if sums is None:
                sums = self.sums[ref] = Decayed(RISK_WIDTH)
            sums.add(known_ms, values)


async def newest_checkpoint(rt: Runtime) -> ModelState:
    """Read the whole models topic and load the newest checkpoint that verifies."""
    settings = rt.settings
    consumer = whole_topic_consumer(settings.kafka_bootstrap, rt.topics.models.get_topic_name())
    await consumer.start()
    secret = rt.secret
    best = ModelState(kind=settings.model_estimator)
    try:
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for msg in messages:
                    if msg.key != MODEL_KEY or msg.value is None:
                        continue
                    try:
                        state = decode_checkpoint(msg.value, secret)
                    except CheckpointError as exc:
                        log.error("learner skips a checkpoint: %s", exc)
                        continue
                    if state.version > best.version:
                        best = state
    finally:
        await consumer.stop()
    return best


class Learner:
    """The learning loop of the lease holder."""

    def __init__(self, rt: Runtime, lease: Lease, store: SnapshotStore, state: ModelState) -> None:
        self.rt, self.settings = rt, rt.settings
        self.lease, self.store, self.state = lease, store, state
        self.uncommitted: set[str] = set()
        self.since_checkpoint = 0  # labels learned since the last checkpoint
        self.dirty = False  # anything else to save (offsets, waiting labels)
        self.last_checkpoint = time.monotonic()
        self.last_renew = time.monotonic()
        self.last_pending = 0.0
        self.last_promote_check = 0.0
        challenger = self.settings.model_challenger
        self.new_challenger = bool(challenger and state.challenger is None)
        if self.new_challenger:
            state.add_challenger(challenger)
            log.info("a %s challenger learns beside %s", challenger, state.name)

    async def run(self) -> None:
        consumer = whole_topic_consumer(
            self.settings.kafka_bootstrap, self.rt.topics.outcomes.get_topic_name()
        )
        await consumer.start()
        try:
            for tp in consumer.assignment():
                if tp.partition in self.state.offsets:
                    consumer.seek(tp, self.state.offsets[tp.partition])
            log.info(
                "learning as %s from %s (%d labels so far)",
                self.lease.token[:8],
                self.state.name,
                self.state.labels,
            )
            if self.new_challenger:  # scorers give it shadow scores from the next order on
                await self.checkpoint()
            while True:
                await self.keep_lease()
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                labels = self.read(batches)
                await self.join(labels)
                await self.retry_pending()
                await self.maybe_change()
                await self.maybe_checkpoint()
        finally:
            await consumer.stop()

    async def keep_lease(self) -> None:
        if time.monotonic() - self.last_renew > self.lease.ttl_ms / 3000:
            await self.lease.renew()
            self.last_renew = time.monotonic()

    def read(self, batches: dict[TopicPartition, list]) -> list[Label]:
        labels = []
        for tp, messages in batches.items():
            for msg in messages:
                found = to_labels(msg.value, self.rt.registry, self.settings.max_event_bytes)
                if found:
                    OUTCOMES.labels(found[0].kind).inc()
                    labels.extend(found)
            if messages:
                self.state.offsets[tp.partition] = messages[-1].offset + 1
                self.dirty = True
        return labels

    async def join(self, labels: list[Label], retry: bool = False) -> None:
        if not labels:
            return
        snapshots = await self.store.load([label.order_id for label in labels])
        learned: list[tuple[str, Snapshot]] = []
        risk = RiskChanges()
        by_order: dict[str, Snapshot] = {}  # one order's outcomes in a batch share it
        for label, found in zip(labels, snapshots, strict=True):
            snapshot = by_order.setdefault(label.order_id, found) if found else None
            if snapshot is None:
                if not retry:
                    self.wait_for_snapshot(label)
                continue
            if retry:
                self.state.pending.pop(label.pending_key, None)
            if label.target == CREDIT:
                result = join_credit(self.state, snapshot, label, self.uncommitted)
                CREDIT_LABELS.labels(result).inc()
            else:
                seen = snapshot.label
                result = join_label(self.state, snapshot, label, self.uncommitted)
                LABELS.labels(result).inc()
                risk.add(snapshot.entities, label.event_ms, seen, label.label)
            if result not in ("duplicate", "no_credit"):
                learned.append((label.order_id, snapshot))  # a repeat rewrites the same
                self.since_checkpoint += 1
            await asyncio.sleep(0)  # learning must not starve scoring in this event loop
        await self.store.mark_learned(learned, list(risk.sums.items()))

    def wait_for_snapshot(self, label: Label) -> None:
        if len(self.state.pending) >= PENDING_MAX:
            LABELS.labels("unmatched").inc()
            return
        LABELS.labels("pending").inc()
        self.state.pending[label.pending_key] = {
            "y": label.label,
            "k": label.kind,
            "t": label.event_ms,
            "g": label.target,
            "until": time.time() + self.settings.label_grace_seconds,
        }
        self.dirty = True  # the pending set is part of the checkpoint: save it in time

    async def retry_pending(self) -> None:
        if not self.state.pending or time.monotonic() - self.last_pending < PENDING_RETRY_SECONDS:
            return
        self.last_pending = time.monotonic()
        now = time.time()
        for order_id, p in list(self.state.pending.items()):
            if p["until"] < now:
                del self.state.pending[order_id]
                LABELS.labels("unmatched").inc()
                self.dirty = True
        waiting = [
            Label(key.rpartition("|")[2], p["y"], p["k"], p["t"], p.get("g", FRAUD))
            for key, p in self.state.pending.items()
        ]
        for start in range(0, len(waiting), 1000):
            await self.join(waiting[start : start + 1000], retry=True)

    async def maybe_change(self) -> None:
        """Apply an operator's request (`shinsa model promote` or `rollback`), and publish the
        checkpoint at once so every scorer switches."""
        if time.monotonic() - self.last_promote_check < PROMOTE_CHECK_SECONDS:
            return
        self.last_promote_check = time.monotonic()
        await self.maybe_roll_back()
        await self.maybe_promote()

    async def maybe_roll_back(self) -> None:
        request = await self.store.take_request(self.store.keys.rollback())
        if not request:
            return
        by = request.get(b"by", b"?").decode()
        try:
            old = decode_checkpoint(request.get(b"checkpoint"), self.rt.secret)
        except CheckpointError as exc:
            log.error("rollback requested by %s refused: %s", by, exc)
            return
        record = self.state.roll_back(old, time.time(), by, request.get(b"credit") == b"1")
        log.warning(
            "rolled back from checkpoint %d to %d (%d → %d labels, credit model too: %s; "
            "requested by %s)",
            record["from"],
            record["to"],
            record["from_labels"],
            record["to_labels"],
            record["credit"],
            by,
        )
        await self.checkpoint()

    async def maybe_promote(self) -> None:
        request = await self.store.take_request(self.store.keys.promote())
        if not request:
            return
        if self.state.challenger is None:
            log.warning("promotion requested, but %s has no challenger", self.state.name)
            return
        record = self.state.promote(time.time(), request.get(b"by", b"?").decode())
        log.warning(
            "promoted the %s challenger over %s (requested by %s)",
            record["to"],
            record["from"],
            record["by"],
        )
        await self.checkpoint()

    async def maybe_checkpoint(self) -> None:
        settings = self.settings
        due = self.since_checkpoint >= settings.model_checkpoint_labels or (
            (self.since_checkpoint or self.dirty)
            and time.monotonic() - self.last_checkpoint >= settings.model_checkpoint_seconds
        )
        if due:
            await self.checkpoint()

    async def checkpoint(self) -> None:
        await self.lease.renew()  # never publish after losing the lease to another learner
        self.state.version += 1
        blob = encode_checkpoint(self.state, self.rt.secret)
        topic = self.rt.topics.models.get_topic_name()
        producer = self.rt.app.producer
        await producer.send_and_wait(topic, MODEL_KEY, blob, None, None, None)
        # the archive: this checkpoint under its own key, and the one that falls out deleted
        await producer.send_and_wait(topic, archive_key(self.state.version), blob, None, None, None)
        if (dropped := self.state.version - self.settings.model_history) > 0:
            await producer.send_and_wait(topic, archive_key(dropped), None, None, None, None)
        log.info(
            "published model %s: %d labels, %d bytes", self.state.name, self.state.labels, len(blob)
        )
        self.uncommitted.clear()
        self.since_checkpoint = 0
        self.dirty = False
        self.last_checkpoint = time.monotonic()


def register(rt: Runtime, scorer: Scorer) -> None:
    """The learner, in this worker's app: it learns only while it holds the lease."""

    async def learn_outcomes() -> None:
        await learn(rt, scorer)

    rt.app.task(learn_outcomes)


async def learn(rt: Runtime, scorer: Scorer) -> None:
    """Wait for the lease, then learn from the newest checkpoint on; stand by when it is
    lost to another worker."""
    settings = rt.settings
    if settings.learner == "off":
        return
    await scorer.loaded.wait()
    client = redis_client(settings)
    lease = Lease(client, settings.identity_namespace, settings.learner_lease_seconds)
    store = SnapshotStore(client, settings.identity_namespace, settings.snapshot_ttl_days * 86400)
    while True:
        try:
            if not await lease.acquire():
                await asyncio.sleep(lease.ttl_ms / 3000)
                continue
            LEARNER_ACTIVE.set(1)
            await Learner(rt, lease, store, await newest_checkpoint(rt)).run()
        except LeaseLost:
            log.warning("learner lease lost to another worker; standing by")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a learner that silently stops would freeze the model
            log.exception("learner failed")
            await rt.app.crash(exc)
            return
        finally:
            LEARNER_ACTIVE.set(0)
