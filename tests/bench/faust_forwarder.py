"""The Faust reference of the benchmark: orders → the same key and bytes → an output topic.

It runs the product's own Faust app (streams/app.py, from the same SHINSA_* environment as a
worker) on uvloop with `-l info`, as streams/tools/worker.py does, and its agent has the shape of
agents/screen.py (`take_events` batches, `app.producer.send`, every send of a batch awaited in
the loop body) minus the screening. So the pipeline's cost over it is the cost of screening.

    SHINSA_TOPIC_PREFIX=... SHINSA_APP_ID=... BENCH_FORWARD_TO=<topic> \
        python -m tests.bench.faust_forwarder
"""

from __future__ import annotations

import asyncio
import os
from typing import Any


def register_forwarder(app: Any, source: str, target: str, batch: int, timeout: float) -> None:
    """Add the agent that forwards every message of `source` to `target`."""

    async def forward_orders(stream: Any) -> None:
        async for events in stream.take_events(batch, timeout):
            futures = [
                await app.producer.send(target, e.message.key, e.message.value, None, None, None)
                for e in events
            ]
            await asyncio.gather(*futures)

    source_topic = app.topic(source, key_type=bytes, value_type=bytes)
    app.agent(source_topic, name="forward_orders")(forward_orders)


def run() -> None:
    # uvloop before the app touches an event loop, as streams/tools/worker.py does
    import uvloop

    uvloop.install()
    from faust.worker import Worker

    from streams.app import build_runtime
    from streams.settings import load_settings

    rt = build_runtime(load_settings())
    app, settings = rt.app, rt.settings

    register_forwarder(
        app,
        settings.topic("orders"),
        os.environ["BENCH_FORWARD_TO"],
        settings.batch_size,
        settings.batch_timeout,
    )
    print(f"faust forwarder: {settings.topic('orders')} → {os.environ['BENCH_FORWARD_TO']}")
    Worker(app, loglevel="info").execute_from_commandline()


if __name__ == "__main__":
    run()
