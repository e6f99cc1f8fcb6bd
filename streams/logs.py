"""Repeated client errors, logged once per window.

While the broker is down, Faust's aiokafka clients log the same few errors hundreds of times a
second (measured in `make chaos`: 3,762 "Unable connect to node", 1,820 "Unable to update
metadata" and 1,385 "Failed fetch messages" lines from one worker in a 29 s outage). The first
of each is logged; its repeats within the window are counted, and the next one logged after
the window says how many there were. The hot path's own messages are not filtered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

REPEAT_WINDOW_S = 30.0
# the loggers of Faust's Kafka client (aiokafka/client.py, conn.py, consumer/*.py)
CLIENT_LOGGERS = (
    "aiokafka",
    "aiokafka.conn",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
)


class Repeats(logging.Filter):
    """Lets the first of each warning or error (by logger, level and message template) through
    per window, and counts the rest."""

    def __init__(
        self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window_s, self.clock = window_s, clock
        # (logger, level, template) → (when last let through, repeats held back since)
        self.seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        last = self.seen.get(key)
        if last is not None and now - last[0] < self.window_s:
            self.seen[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.msg = (
                f"{record.msg} ({last[1]} more like this in the last {now - last[0]:.0f} s)"
            )
        self.seen[key] = (now, 0)
        return True


def quiet_repeats(names: Iterable[str] = CLIENT_LOGGERS, window_s: float = REPEAT_WINDOW_S) -> None:
    """Filter the repeats of these loggers' own records (a logger's filter does not see its
    children's records, so each is named)."""
    repeats = Repeats(window_s)
    for name in names:
        logging.getLogger(name).addFilter(repeats)
