"""`shinsa kpi` and `shinsa monitoring`: business KPIs as a table, and this host's Prometheus
and Alertmanager configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streams.tools.cli.common import console, err, settings

monitoring_app = typer.Typer(help="Prometheus and Alertmanager setup.", no_args_is_help=True)


def kpi(
    url: Annotated[
        str | None,
        typer.Option(help="A worker's /metrics URL (default: this host's SHINSA_METRICS_PORT)."),
    ] = None,
    prometheus: Annotated[
        str | None,
        typer.Option(help="A Prometheus base URL: all workers over --window instead."),
    ] = None,
    window: Annotated[str, typer.Option(help="With --prometheus: e.g. 15m, 1h, 1d.")] = "1h",
) -> None:
    """Business KPIs as a table, from a worker's /metrics or from Prometheus."""
    from streams.tools.kpi import show_kpis

    show_kpis(settings(), console, url=url, prometheus=prometheus, window=window)


@monitoring_app.command("render")
def monitoring_render(
    output: Annotated[
        Path | None, typer.Option(help="Directory (default: $SHINSA_DATA_DIR/monitoring).")
    ] = None,
) -> None:
    """Write this host's prometheus.yml and alertmanager.yml (webhook: SHINSA_ALERT_WEBHOOK_URL)."""
    from streams.tools import stack

    s = settings()
    for path in stack.render_monitoring(s, output):
        console.print(f"wrote {path}")
    if not s.alert_webhook_url.get_secret_value():
        err.print("[yellow]SHINSA_ALERT_WEBHOOK_URL is not set: no alertmanager.yml written")
