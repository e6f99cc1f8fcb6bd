"""Run one Shinsa worker: the Faust agents of agents/ plus the /metrics endpoint."""

from __future__ import annotations

import gc
import logging


def run_worker(loglevel: str = "info") -> None:
    # uvloop before the app touches an event loop; `-l warn` made Faust 20 % slower (DESIGN.md)
    import uvloop

    uvloop.install()
    from faust.worker import Worker

    import agents.ingest
    import agents.intake
    import agents.lag
    import agents.learn
    import agents.merchants
    import agents.screen  # noqa: F401  (registers the agents)
    from streams.app import app, settings
    from streams.metrics import WORKER_UP, serve_metrics

    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)  # Faust makes one level
    port = serve_metrics(settings.metrics_port)
    logging.getLogger(__name__).info("metrics on http://127.0.0.1:%d/metrics", port)
    print(f"shinsa worker: metrics on http://127.0.0.1:{port}/metrics", flush=True)
    WORKER_UP.set(1)
    # Everything imported so far (schemas, postal data, the Faust app) lives as long as the
    # worker: keep it out of the collector's scans (measured ~20 µs of GC per order otherwise).
    gc.freeze()
    Worker(app, loglevel=loglevel).execute_from_commandline()
