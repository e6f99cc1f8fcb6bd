"""The hot path's Kafka loop: consume a batch, run the batch core, produce its outputs and commit
the input offsets in one Kafka transaction (exactly-once output, read_committed everywhere).

Why not a Faust agent: Faust's per-message machinery costs ~200 µs a message here, and its
exactly-once mode has open fencing bugs (DESIGN.md). Why not quix-streams: it runs on the same
confluent-kafka transactions but hands the application one record at a time, while the core
wants a whole batch for its one Redis read and one Redis write. So this is a small loop on
confluent-kafka (librdkafka's transactions, KIP-447 group-metadata fencing), run as a service of
the Faust app: started, supervised and stopped with `shinsa worker`, one process, one /metrics.

The loop is strictly poll → handle → commit: rebalance callbacks only run inside poll, so a
partition is never revoked while its batch is in flight. A commit that fails (a rebalance that
bumped the group generation, a broker that restarted) aborts the transaction and rewinds the
batch's partitions to the batch's first offsets: the batch is handled again, and the handler
answers a redelivered message as it did the first time (agents/screen.py keeps each decision
in Redis with the state that produced it). A fenced producer (another process took over this
work) is fatal: the loop stops, logs why and stops the worker rather than write anything more.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as TP
from mode import Service

from streams.delivery import Outgoing, count_sent
from streams.metrics import BATCH_SECONDS, BATCH_SIZE, STAGE_SECONDS, TRANSACTIONS
from streams.settings import Settings

log = logging.getLogger(__name__)

SLOW_BATCH_SECONDS = 0.2  # a batch slower than this is logged with its stages
STOP_GRACE_SECONDS = 5.0
TXN_TIMEOUT_MS = 15_000  # the coordinator aborts a transaction open longer than this
TXN_CALL_SECONDS = 10.0  # librdkafka's own timeout for send_offsets / commit …
COMMIT_WATCHDOG_SECONDS = 20.0  # … and ours, for when it does not keep it
MAX_FAILED_PRODUCERS = 3  # producers failing in a row, no commit between: stop the worker


class Stopwatch:
    """Where a batch's time went: laps by stage, observed in `shinsa_batch_stage_seconds`
    and logged when the batch was slow (a pause is then explained in the worker's log)."""

    def __init__(self, loop: str, started: float | None = None) -> None:
        self.loop = loop
        self.started = self.last = time.perf_counter() if started is None else started
        self.laps: list[tuple[str, float]] = []

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps.append((stage, now - self.last))
        STAGE_SECONDS.labels(self.loop, stage).observe(now - self.last)
        self.last = now

    @property
    def total(self) -> float:
        return self.last - self.started

    def log_if_slow(self, what: str, size: int) -> None:
        if self.total >= SLOW_BATCH_SECONDS:
            stages = ", ".join(f"{stage} {s * 1000:.0f} ms" for stage, s in self.laps)
            log.warning(
                "hot path %s: slow %s of %d messages (%.0f ms): %s",
                self.loop,
                what,
                size,
                self.total * 1000,
                stages,
            )


@dataclass(slots=True)
class Received:
    """One consumed message, as the batch core sees it (no Kafka client types in the core)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def received(msg: Any) -> Received:
    return Received(
        msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1]
    )


Handler = Callable[[list[Received]], Awaitable[list[Outgoing]]]


@dataclass(slots=True)
class Committing:
    """A handled batch, and its transaction's commit (in a thread) once begun."""

    batch: list[Received]
    outgoing: list[Outgoing]
    watch: Stopwatch
    call: asyncio.Future[bool] | None = None  # set when the commit begins


class FatalLoopError(RuntimeError):
    """The producer was fenced, or producers keep failing: this process must not write any
    more."""


class ProducerFailed(RuntimeError):
    """The producer hit a fatal error that is not a fence (seen in `make chaos`: an abort
    refused with INVALID_TXN_STATE after the broker came back). Its transactional.id is this
    process's own, so a new producer with it aborts the open transaction and carries on."""


def next_offsets(batch: Sequence[Received]) -> list[TP]:
    """The offsets to commit for a batch: one past the last message of each partition."""
    last: dict[tuple[str, int], int] = {}
    for m in batch:
        key = (m.topic, m.partition)
        if m.offset >= last.get(key, -1):
            last[key] = m.offset
    return [TP(t, p, o + 1) for (t, p), o in last.items()]


def first_offsets(batch: Sequence[Received]) -> list[TP]:
    """Where to rewind each partition of an aborted batch."""
    first: dict[tuple[str, int], int] = {}
    for m in batch:
        key = (m.topic, m.partition)
        if m.offset < first.get(key, 1 << 62):
            first[key] = m.offset
    return [TP(t, p, o) for (t, p), o in first.items()]


class TransactionalLoop(Service):
    """poll → handler → produce + commit offsets in one transaction, until stopped."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        topics: Sequence[str],
        handler: Handler,
        ready: Callable[[], Awaitable[None]] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings, self.loop_name, self.topics = settings, name, list(topics)
        self.handler, self.ready, self.on_fatal = handler, ready, on_fatal
        self.group = f"{settings.app_id}.{name}"
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        # unique per process: zombies are fenced by the group generation (KIP-447); a producer
        # replaced after a stuck commit reuses it, which fences the stuck one
        self.transactional_id = f"{self.group}.{uuid.uuid4().hex[:12]}"
        self.failed_producers = 0  # replaced after a fatal error since the last commit
        self.stopping = False
        self.finished = asyncio.Event()
        self.assigned: set[tuple[str, int]] = set()
        self.revocations = 0  # revocations seen so far (by the poll thread's callback)
        self.handling: asyncio.Future[list[Outgoing]] | None = None
        for result in ("committed", "aborted"):  # at 0 from the start, so rate() sees the first
            TRANSACTIONS.labels(name, result)

    # ------------------------------------------------------------------ configuration
    def consumer_config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 15000,
            "heartbeat.interval.ms": 3000,
            "fetch.wait.max.ms": 10,
            "queued.max.messages.kbytes": 65536,
        }

    def producer_config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "bootstrap.servers": s.kafka_bootstrap,
            "transactional.id": self.transactional_id,
            "partitioner": "murmur2_random",  # the Java clients' and aiokafka's partitions
            "linger.ms": 1,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 200000,
            # a worker killed mid-transaction leaves it open until this timeout (its
            # transactional.id dies with it), and the next owner of its partitions cannot read
            # their committed offsets until then: at 60 s, make chaos stalled ~60 s a kill
            "transaction.timeout.ms": TXN_TIMEOUT_MS,
            # a transaction begun right after the previous commit (the next batch's, already
            # screened) is refused with CONCURRENT_TRANSACTIONS while the coordinator writes
            # the previous one's markers; librdkafka retries it after this backoff (100 ms by
            # default: measured, it made each commit of a small batch take ~100-200 ms)
            "retry.backoff.ms": 5,
        }

    # ------------------------------------------------------------------ service
    async def on_start(self) -> None:
        self.add_future(self._supervised())

    async def on_stop(self) -> None:
        """Finish the batch in hand; one stuck on an outage (Redis down) is abandoned
        uncommitted: its messages go to the partition's next owner, nothing is lost."""
        self.stopping = True
        if self.consumer is None and self.producer is None:
            return
        try:
            await asyncio.wait_for(self.finished.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            if self.handling is not None and not self.handling.done():
                log.warning("hot path %s: abandoning an unfinished batch to stop", self.loop_name)
                self.handling.cancel()
            await self.finished.wait()

    async def _supervised(self) -> None:
        try:
            await self._run()
        except FatalLoopError as exc:
            log.error("hot path %s stopped: %s", self.loop_name, exc)
            if self.on_fatal is not None:
                self.on_fatal(exc)
        finally:
            try:
                await asyncio.to_thread(self._close)
            finally:
                self.finished.set()  # on_stop waits for it: unset, the worker never exits

    async def _run(self) -> None:
        if self.ready is not None:
            await self.ready()
        if self.stopping:
            return
        self.producer = await asyncio.to_thread(self._new_producer)
        self.consumer = Consumer(self.consumer_config())
        self.consumer.subscribe(self.topics, on_assign=self._assigned, on_revoke=self._revoked)
        log.info("hot path %s consuming %s", self.loop_name, ", ".join(self.topics))
        backoff = 0.1
        # A handled batch is committed while the next one is handled, never while polling:
        # a revocation (it happens inside a poll) then never finds a commit in flight, and a
        # commit never waits on a rebalance that waits on it (tried: a revocation that waited
        # for the commit deadlocked with it until the watchdog). A handled batch waits for the
        # next poll, which returns at once (timeout 0) and commits it alone if nothing came;
        # if that poll revoked partitions, the handled batch is not committed but read again.
        handled: Committing | None = None  # handled, its commit not begun (`call` unset)
        committing: Committing | None = None  # its commit in flight
        try:
            while not self.stopping:
                timeout = 0.0 if handled is not None else self.settings.batch_timeout
                revocations = self.revocations
                batch, polled = await asyncio.to_thread(self._poll, timeout)
                if handled is not None and self.revocations != revocations:
                    # partitions moved in that poll: the handled batch's offsets are no longer
                    # ours to commit (even one given back restarts from its committed offset).
                    # Both batches go back; their decisions, kept in Redis, are answered again.
                    log.info(
                        "hot path %s: rebalanced; the handled batch is read again", self.loop_name
                    )
                    await asyncio.to_thread(self._rewind, [*handled.batch, *batch])
                    handled = None
                    continue
                if handled is not None:
                    committing, handled = self._begin_commit(handled), None
                if not batch:
                    if committing is not None:
                        await self._finish(committing)
                        committing = None
                    continue
                watch = Stopwatch(self.loop_name, started=polled)
                watch.lap("queued")  # polled in the I/O thread → back on the event loop
                self.handling = asyncio.ensure_future(self.handler(batch))
                try:
                    outgoing = await self.handling
                except asyncio.CancelledError:
                    if self.stopping:
                        return  # abandoned uncommitted: redelivered to the next owner
                    raise
                except Exception:  # a bug: never skip the batch, retry it
                    log.exception(
                        "hot path %s: batch of %d failed; retrying", self.loop_name, len(batch)
                    )
                    earlier: list[Received] = []
                    if committing is not None:
                        if not await self._finish(committing):
                            earlier = committing.batch  # aborted: back to its start, too
                        committing = None
                    await asyncio.to_thread(self._rewind, [*earlier, *batch])
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                watch.lap("handle")
                if committing is not None:
                    previous, committing = committing, None
                    if not await self._finish(previous):
                        # aborted and rewound: this batch was read past it, so it comes again
                        # too (its decisions, kept in Redis, are answered again then)
                        await asyncio.to_thread(self._rewind, [*previous.batch, *batch])
                        continue
                backoff = 0.1
                handled = Committing(batch, outgoing, watch)
            if handled is not None:  # stopping: the batch in hand is finished, not dropped
                committing, handled = self._begin_commit(handled), None
        finally:
            if committing is not None:
                await self._finish(committing)

    def _begin_commit(self, handled: Committing) -> Committing:
        """Start committing a handled batch, in a thread."""
        handled.call = asyncio.ensure_future(
            self._commit_timed(handled.batch, handled.outgoing, handled.watch)
        )
        return handled

    async def _commit_timed(
        self, batch: list[Received], outgoing: list[Outgoing], watch: Stopwatch
    ) -> bool:
        committed = await self._commit_watched(batch, outgoing)
        if committed:
            watch.lap("commit")  # when it ended, not when the loop came back for it
        return committed

    async def _finish(self, committing: Committing) -> bool:
        """Wait for a batch's commit; count it if it went through."""
        assert committing.call is not None
        committed = await committing.call
        if committed:
            watch, batch = committing.watch, committing.batch
            BATCH_SIZE.labels(self.loop_name).observe(len(batch))
            BATCH_SECONDS.labels(self.loop_name).observe(watch.total)
            count_sent(o.topic for o in committing.outgoing)
            watch.log_if_slow("batch", len(batch))
        return committed

    async def _commit_watched(self, batch: list[Received], outgoing: list[Outgoing]) -> bool:
        """`_commit`, replacing the producer if the commit hangs: librdkafka's
        send_offsets_to_transaction can ignore its timeout when the group coordinator went away
        (librdkafka #5456, seen here on a broker restart: stuck for good). A new producer with the
        same transactional.id fences the stuck one and aborts its open transaction; the batch
        is rewound and answered again (from the decisions kept in Redis)."""
        producer = self.producer
        call = asyncio.ensure_future(asyncio.to_thread(self._commit, producer, batch, outgoing))
        try:
            committed = await asyncio.wait_for(asyncio.shield(call), COMMIT_WATCHDOG_SECONDS)
        except TimeoutError:
            log.warning(
                "hot path %s: transaction stuck for %.0fs; replacing the producer",
                self.loop_name,
                COMMIT_WATCHDOG_SECONDS,
            )
            call.add_done_callback(lambda f: f.cancelled() or f.exception())  # never awaited
            await self._replace_producer(batch)
            return False
        except ProducerFailed as exc:
            self.failed_producers += 1
            if self.failed_producers > MAX_FAILED_PRODUCERS:
                raise FatalLoopError(
                    f"{self.failed_producers} producers failed in a row, the last: {exc}"
                ) from exc
            log.warning(
                "hot path %s: producer failed (%s); replacing it and retrying the batch",
                self.loop_name,
                exc,
            )
            await self._replace_producer(batch)
            return False
        if committed:
            self.failed_producers = 0
        return committed

    async def _replace_producer(self, batch: list[Received]) -> None:
        """A new producer with the same transactional.id (it fences the old one and aborts its
        open transaction), and the batch rewound to be answered again from Redis."""
        TRANSACTIONS.labels(self.loop_name, "aborted").inc()
        try:
            self.producer = await asyncio.to_thread(self._new_producer)
        except KafkaException as exc:
            raise FatalLoopError(f"no new producer: {exc}") from exc
        await asyncio.to_thread(self._rewind, batch)

    # ------------------------------------------------------------------ in the I/O thread
    def _new_producer(self) -> Producer:
        producer = Producer(self.producer_config())
        producer.init_transactions(60)
        return producer

    def _poll(self, timeout: float) -> tuple[list[Received], float]:
        """Wait up to `timeout` for one message, then take what else is there; and when the
        batch was taken (perf_counter)."""
        assert self.consumer is not None
        first = self.consumer.poll(timeout)
        if first is None:
            return [], time.perf_counter()
        more = self.consumer.consume(self.settings.batch_size - 1, 0) if first else []
        out: list[Received] = []
        for msg in (first, *more):
            err = msg.error()
            if err is None:
                out.append(received(msg))
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("hot path %s: consumer error %s", self.loop_name, err)
        return out, time.perf_counter()

    def _commit(
        self, producer: Producer | None, batch: list[Received], outgoing: list[Outgoing]
    ) -> bool:
        """Produce the batch's outputs and commit its offsets atomically; False if aborted."""
        assert producer is not None and self.consumer is not None
        try:
            producer.begin_transaction()
            for o in outgoing:
                while True:
                    try:
                        producer.produce(o.topic, o.value, o.key, headers=o.headers)
                        break
                    except BufferError:
                        producer.poll(0.01)
            producer.send_offsets_to_transaction(
                next_offsets(batch), self.consumer.consumer_group_metadata(), TXN_CALL_SECONDS
            )
            commit_transaction(producer)
        except KafkaException as exc:
            if producer is not self.producer:  # replaced while stuck: the new one decides
                return False
            error = exc.args[0]
            if error.code() == KafkaError._FENCED:
                TRANSACTIONS.labels(self.loop_name, "aborted").inc()
                raise FatalLoopError(f"producer fenced: {error}") from exc
            if error.fatal():
                raise ProducerFailed(str(error)) from exc
            log.warning(
                "hot path %s: transaction aborted (%s); retrying the batch", self.loop_name, error
            )
            self._abort(producer)
            self._rewind(batch)
            TRANSACTIONS.labels(self.loop_name, "aborted").inc()
            return False
        TRANSACTIONS.labels(self.loop_name, "committed").inc()
        return True

    def _abort(self, producer: Producer) -> None:
        try:
            producer.abort_transaction(30)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError._FENCED:
                raise FatalLoopError(f"producer fenced while aborting: {exc}") from exc
            if exc.args[0].fatal():
                raise ProducerFailed(f"while aborting: {exc}") from exc
            log.warning("hot path %s: abort failed: %s", self.loop_name, exc)

    def _rewind(self, batch: list[Received]) -> None:
        """Seek a batch's partitions back so it is consumed again (if still ours)."""
        assert self.consumer is not None
        for tp in first_offsets(batch):
            if (tp.topic, tp.partition) not in self.assigned:
                continue  # revoked: its next owner starts at the committed offset
            try:
                self.consumer.seek(tp)
            except KafkaException as exc:
                log.warning(
                    "hot path %s: rewind of %s[%d] failed: %s",
                    self.loop_name,
                    tp.topic,
                    tp.partition,
                    exc,
                )

    def _assigned(self, _consumer: Any, partitions: list[TP]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}
        log.info("hot path %s: assigned %s", self.loop_name, describe(partitions))

    def _revoked(self, _consumer: Any, partitions: list[TP]) -> None:
        # inside a poll: no commit is in flight then (see _run); a batch handled but not yet
        # committed is dropped by the loop when it sees this count move
        self.revocations += 1
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}
        log.info("hot path %s: revoked %s", self.loop_name, describe(partitions))

    def measure_lag(self) -> dict[tuple[str, int], int]:
        """End offset minus committed offset per assigned partition (broker round trips: call
        it from another thread than the loop's, agents/lag.py does)."""
        if self.consumer is None:
            return {}
        tps = [TP(t, p) for t, p in sorted(self.assigned)]
        lags = {}
        for tp in self.consumer.committed(tps, timeout=2) if tps else []:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=2)
            position = tp.offset if tp.offset != OFFSET_INVALID and tp.offset >= 0 else low
            lags[(tp.topic, tp.partition)] = max(high - position, 0)
        return {k: v for k, v in lags.items() if k in self.assigned}  # not revoked meanwhile

    def _close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()  # leaves the group: its partitions move at once
            except (KafkaException, RuntimeError) as exc:
                log.warning("hot path %s: consumer close: %s", self.loop_name, exc)
        if self.producer is not None:
            try:
                self.producer.flush(10)
            except KafkaException as exc:  # a fenced or failed producer: nothing left to send
                log.warning("hot path %s: producer flush: %s", self.loop_name, exc)


def commit_transaction(producer: Producer) -> None:
    """Commit, retrying what librdkafka says is retriable (a timeout before the commit began)."""
    while True:
        try:
            producer.commit_transaction(TXN_CALL_SECONDS)
            return
        except KafkaException as exc:
            if exc.args[0].retriable() and not exc.args[0].txn_requires_abort():
                continue
            raise


def describe(partitions: Sequence[TP]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
