"""`shinsa worker` and `shinsa demo`: run the pipeline, alone or with the whole local show."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from streams.tools.cli.common import console, progress, settings


class Role(StrEnum):
    screen = "screen"
    campaign = "campaign"


def worker(
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="info or debug")] = "info",
    role: Annotated[
        Role,
        typer.Option(
            help="screen: orders, payments, control streams, the API; campaign: "
            "the campaign's tickets alone (its own process and consumer group)"
        ),
    ] = Role.screen,
) -> None:
    """Run a worker: screen orders and payments, validate events, serve /metrics (and the API);
    with --role campaign, issue campaign tickets."""
    from streams.tools.worker import run_campaign_worker, run_worker

    settings()  # a bad SHINSA_* variable is reported here, not as a traceback from the app

    sys.argv = [sys.argv[0], "worker"]
    if role is Role.campaign:
        run_campaign_worker(loglevel)
    else:
        run_worker(loglevel)


def demo(
    orders: Annotated[int, typer.Option(help="Orders to simulate.", min=10)] = 3000,
    seed: Annotated[
        int | None, typer.Option(help="Simulator seed (default: from the clock).")
    ] = None,
) -> None:
    """Stack up, a worker, simulated traffic, then decisions, KPIs and where to look next."""
    from streams.tools.demo import run_demo

    run_demo(settings(), orders=orders, seed=seed, console=console, progress=progress)
