"""Run one Shinsa worker: the hot path (a transactional batch loop), the Faust agents of the
control streams, the /metrics endpoint and the HTTP API (segments), in one process."""

from __future__ import annotations

import gc
import logging


def run_worker(loglevel: str = "info") -> None:
    """The composition root: settings, schema registry, Faust app and topics are built here,
    once, and every agent and hot path is registered with what it needs, explicitly."""
    # uvloop before the app touches an event loop; `-l warn` made Faust 20 % slower (DESIGN.md)
    import uvloop

    uvloop.install()
    from faust.worker import Worker

    from agents import devices, exposure, ingest, lag, learn, merchants, policies, scorer, wallet
    from agents.control import Control
    from agents.screen import screening_loop
    from agents.segments import segment_routes
    from streams.app import build_runtime
    from streams.logs import quiet_repeats
    from streams.metrics import WORKER_UP, serve_metrics
    from streams.settings import load_settings
    from streams.web import WebApi

    quiet_repeats()  # a broker outage floods the log with the Kafka client's retries
    rt = build_runtime(load_settings())
    settings, app = rt.settings, rt.app
    # the control streams: every worker follows them whole
    control = Control(merchants.register(rt), policies.register(rt), scorer.register(rt))
    learn.register(rt, control.scorer)  # learns only in the worker holding the lease
    # the event topics' checks and the stages that read them beside the hot paths
    ingest.register(rt)
    exposure.register(rt)
    devices.register(rt)
    wallet.register(rt)  # the wallet's accounts and logins
    # the hot paths: transactional loops that start, run and stop with the Faust app
    hot_paths = [screening_loop(rt, control), wallet.payments_loop(rt, control)]
    for hot_path in hot_paths:
        app.service(hot_path)
    lag.register(rt, hot_paths)
    app.service(WebApi(settings.api_host, settings.api_port, segment_routes(settings)))

    port = serve_metrics(settings.metrics_port)
    logging.getLogger(__name__).info("metrics on http://127.0.0.1:%d/metrics", port)
    print(f"shinsa worker: metrics on http://127.0.0.1:{port}/metrics", flush=True)
    WORKER_UP.set(1)
    # Everything imported so far (schemas, postal data, the Faust app) lives as long as the
    # worker: keep it out of the collector's scans (measured ~20 µs of GC per order otherwise).
    gc.freeze()
    gc.callbacks.append(freeze_survivors)
    Worker(app, loglevel=loglevel).execute_from_commandline()


def run_campaign_worker(loglevel: str = "info") -> None:
    """`shinsa worker --role campaign`: the campaign's ticket loop alone, in its own process and
    consumer group, so a campaign surge never takes the screening worker's CPU."""
    import uvloop

    uvloop.install()
    from mode import Worker

    from agents.campaign import campaign_loop
    from streams.codec import SchemaRegistry
    from streams.metrics import WORKER_UP, serve_metrics
    from streams.settings import load_settings

    settings = load_settings()
    port = serve_metrics(settings.campaign_metrics_port)
    print(f"shinsa worker (campaign): metrics on http://127.0.0.1:{port}/metrics", flush=True)
    loop = campaign_loop(settings, SchemaRegistry(settings.schema_dir))
    WORKER_UP.set(1)
    Worker(loop, loglevel=loglevel).execute_from_commandline()


def freeze_survivors(phase: str, info: dict[str, int]) -> None:
    """After a full collection, move what survived it to the permanent generation.

    The worker's long-lived objects grow as it runs (identity keys cache, velocity histories,
    the model): full collections scanned them every ~2 s and found nothing (37-148 ms pauses
    with a 30,000-order history, measured). Frozen objects are still freed by reference
    counting; only a cycle among them would wait, and the hot path makes none.
    """
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()
