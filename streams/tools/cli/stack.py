"""`shinsa stack`: the local Kafka + Redis stack (streams/tools/stack.py does the work)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from streams.settings import Settings
from streams.tools.cli.common import console, err, settings

stack_app = typer.Typer(help="The local Kafka + Redis stack.", no_args_is_help=True)


@stack_app.command("up")
def stack_up(
    monitoring: Annotated[
        bool,
        typer.Option(
            "--monitoring",
            help="Also Prometheus (SHINSA_PROMETHEUS_PORT) scraping the worker, and "
            "Alertmanager when SHINSA_ALERT_WEBHOOK_URL is set.",
        ),
    ] = False,
) -> None:
    """Start Kafka (KRaft) and Redis on loopback if not running, and create the topics."""
    from streams.tools import stack

    s = settings()
    created = stack.up(s, say=lambda m: err.print(f"[dim]{m}[/dim]"))
    if created:
        err.print(f"created topics: {', '.join(created)}")
    if monitoring:
        stack.monitoring_up(s, say=lambda m: err.print(f"[dim]{m}[/dim]"))
    show_status(s)


@stack_app.command("down")
def stack_down() -> None:
    """Stop the services this project started (others are left alone)."""
    from streams.tools import stack

    stopped = stack.down(settings())
    console.print(
        f"stopped: {', '.join(stopped)}" if stopped else "nothing started by shinsa is running"
    )


@stack_app.command("status")
def stack_status() -> None:
    """Each service, its address, and whether shinsa started it."""
    show_status(settings())


def show_status(s: Settings) -> None:
    from streams.tools import stack

    table = Table("service", "address", "state", "started by shinsa", "log")
    for st in stack.status(s):
        state = "[green]up[/green]" if st.answering else "[red]down[/red]"
        table.add_row(
            st.name,
            st.address,
            state,
            f"yes (pid {st.pid})" if st.pid else "no",
            str(st.log) if st.pid else "",
        )
    console.print(table)
