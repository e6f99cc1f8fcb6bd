"""The Kafka client's repeated errors are logged once per window, with how many were held."""

from __future__ import annotations

import logging

import pytest

from streams.logs import CLIENT_LOGGERS, Repeats, quiet_repeats


def record(
    msg: str, *args: object, level: int = logging.ERROR, name: str = "aiokafka"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_within_the_window_are_held_and_counted_in_the_next_one_logged():
    now = [0.0]
    repeats = Repeats(window_s=30.0, clock=lambda: now[0])
    template = "Unable connect to node with id %s: %s"
    assert repeats.filter(record(template, 1, "Connection refused"))
    passed = []
    for second in range(1, 30):
        now[0] = float(second)
        passed.append(repeats.filter(record(template, 1, f"refused {second}")))
    assert not any(passed)  # 29 held back
    now[0] = 31.0
    later = record(template, 1, "Connection refused")
    assert repeats.filter(later)
    assert later.getMessage() == (
        "Unable connect to node with id 1: Connection refused (29 more like this in the last 31 s)"
    )
    now[0] = 62.0
    alone = record(template, 1, "Connection refused")
    assert repeats.filter(alone) and "more like this" not in alone.getMessage()


def test_other_messages_levels_and_loggers_are_their_own_and_info_passes():
    repeats = Repeats(window_s=30.0, clock=lambda: 0.0)
    assert repeats.filter(record("Unable to update metadata from %s", [1]))
    assert not repeats.filter(record("Unable to update metadata from %s", [1]))
    assert repeats.filter(record("Failed fetch messages from %s: %s", 1, "x"))
    assert repeats.filter(record("Unable to update metadata from %s", [1], level=logging.WARNING))
    assert repeats.filter(record("Unable to update metadata from %s", [1], name="aiokafka.conn"))
    info = record("Joined group", level=logging.INFO)
    assert repeats.filter(info) and repeats.filter(info)


def test_the_worker_s_client_loggers_hold_their_repeats(caplog: pytest.LogCaptureFixture):
    before = {name: list(logging.getLogger(name).filters) for name in CLIENT_LOGGERS}
    logger = logging.getLogger("aiokafka.consumer.fetcher")
    try:
        quiet_repeats()
        with caplog.at_level(logging.ERROR, logger="aiokafka.consumer.fetcher"):
            for _ in range(100):
                logger.error("Failed fetch messages from %s: %s", 1, "NodeNotReadyError")
        assert len(caplog.records) == 1
    finally:
        for name, filters in before.items():
            logging.getLogger(name).filters[:] = filters
