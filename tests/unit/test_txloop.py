"""streams/txloop.py: what the hot path's loop does when a transaction fails, with stand-ins
for librdkafka's producer and consumer (the real broker's failures are in `make chaos` and the
integration tests; these are the branches a broker cannot be made to take on demand)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.delivery import Outgoing
from streams.settings import load_settings
from streams.txloop import MAX_FAILED_PRODUCERS, FatalLoopError, Received, TransactionalLoop


class Producer:
    """Records a transaction's calls; `fail` (a KafkaError) is raised by commit, `abort_fail`
    by abort."""

    def __init__(self, fail: KafkaError | None = None, abort_fail: KafkaError | None = None):
        self.fail, self.abort_fail = fail, abort_fail
        self.produced: list[tuple[str, bytes]] = []
        self.committed = self.aborted = 0

    def begin_transaction(self) -> None:
        pass

    def produce(self, topic: str, value: bytes, key: bytes, headers: Any = None) -> None:
        self.produced.append((topic, value))

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        pass

    def commit_transaction(self, timeout: float) -> None:
        if self.fail is not None:
            raise KafkaException(self.fail)
        self.committed += 1

    def abort_transaction(self, timeout: float) -> None:
        self.aborted += 1
        if self.abort_fail is not None:
            raise KafkaException(self.abort_fail)

    def flush(self, timeout: float) -> int:
        if self.fail is not None and self.fail.fatal():
            raise KafkaException(self.fail)
        return 0


class Consumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def consumer_group_metadata(self) -> object:
        return object()

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


BATCH = [Received("orders", 0, 7, b"k", b"v", 0), Received("orders", 0, 8, b"k", b"v", 0)]
OUT = [Outgoing("decisions", b"k", b"decision")]
FATAL = KafkaError(KafkaError.INVALID_TXN_STATE, "Failed to end transaction", fatal=True)
ABORTABLE = KafkaError(KafkaError._TRANSPORT, "Broker transport failure", txn_requires_abort=True)
FENCED = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)


def loop_with(producer: Producer, replacements: list[Producer]) -> TransactionalLoop:
    async def handler(batch: list[Received]) -> list[Outgoing]:
        return []

    loop = TransactionalLoop(load_settings(), "screen", ["orders"], handler)
    loop.producer, loop.consumer = producer, Consumer()  # type: ignore[assignment]
    loop.assigned = {("orders", 0)}
    loop._new_producer = lambda: replacements.pop(0)  # type: ignore[method-assign]
    return loop


def commit(loop: TransactionalLoop) -> bool:
    return asyncio.run(loop._commit_watched(BATCH, OUT))


def test_a_failed_producer_is_replaced_and_the_batch_read_again() -> None:
    """A fatal error that is not a fence no longer stops the worker: a new producer with the
    process's own transactional.id takes over, and the batch comes again from its start."""
    failed, fresh = Producer(abort_fail=FATAL), Producer()
    failed.fail = ABORTABLE  # the commit fails, then its abort is refused for good
    loop = loop_with(failed, [fresh])
    assert commit(loop) is False
    assert loop.producer is fresh and loop.failed_producers == 1
    assert loop.consumer.seeks == [("orders", 0, 7)]  # type: ignore[union-attr]
    assert commit(loop) is True and fresh.committed == 1 and fresh.produced
    assert loop.failed_producers == 0  # a commit went through: the count starts again


def test_producers_failing_again_and_again_stop_the_worker() -> None:
    loop = loop_with(Producer(FATAL), [Producer(FATAL) for _ in range(MAX_FAILED_PRODUCERS)])
    for _ in range(MAX_FAILED_PRODUCERS):
        assert commit(loop) is False
    with pytest.raises(FatalLoopError, match="producers failed in a row"):
        commit(loop)


def test_a_fenced_producer_stops_the_worker() -> None:
    loop = loop_with(Producer(FENCED), [Producer()])
    with pytest.raises(FatalLoopError, match="fenced"):
        commit(loop)


def test_an_abortable_error_aborts_and_reads_the_batch_again_with_the_same_producer() -> None:
    producer = Producer(ABORTABLE)
    loop = loop_with(producer, [])
    assert commit(loop) is False
    assert loop.producer is producer and producer.aborted == 1
    assert loop.consumer.seeks == [("orders", 0, 7)]  # type: ignore[union-attr]


def test_a_worker_whose_producer_failed_for_good_still_stops() -> None:
    """make chaos: after a fatal error the loop's close flushed the failed producer, which
    raised, so the loop never said it had finished and the worker hung on SIGTERM."""
    loop = loop_with(Producer(FENCED), [])

    async def run_until_fatal() -> None:
        loop._run = lambda: loop._commit_watched(BATCH, OUT)  # type: ignore[method-assign]
        await loop._supervised()

    asyncio.run(run_until_fatal())
    assert loop.finished.is_set()
    assert loop.consumer.closed  # type: ignore[union-attr]
