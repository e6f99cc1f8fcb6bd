"""Charts of the dashboards from a running Prometheus, for the README and for people without
Grafana: one PNG per dashboard with four of its key panels, queried exactly as the dashboard
JSON says (Grafana's variables filled in for the chosen range and step).

    python -m monitoring.render_charts --prometheus http://127.0.0.1:9090 --minutes 30

Data comes from a real Prometheus: `shinsa stack up --monitoring`, a worker and traffic
(`shinsa simulate --rate 40`), or the integration test's. Nothing is drawn without data: a
panel whose queries return nothing says so on the chart.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "monitoring" / "grafana" / "dashboards"
OUT = ROOT / "docs" / "img"
KEY_PANELS = {
    "business-kpis.json": (
        "Orders per minute by decision",
        "GMV per minute by decision",
        "Decision mix",
        "Orders per minute by merchant category",
    ),
    "pipeline-health.json": (
        "Events in per topic",
        "Decision latency",
        "Consumer lag per topic and partition",
        "Dead letters per minute by reason",
    ),
    "model.json": (
        "Ranking quality",
        "Log loss",
        "Labels learned",
        "Labels by result per minute",
    ),
}
COLOURS = {"APPROVE": "#3a9a3a", "REVIEW": "#e0b000", "DECLINE": "#d03030"}

Series = tuple[str, list[datetime], list[float]]


def query_range(base: str, expr: str, start: float, end: float, step: int) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": f"{step}s"})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as r:
        answer = json.loads(r.read())
    if answer["status"] != "success":
        raise RuntimeError(f"Prometheus refused {expr}: {answer.get('error')}")
    return answer["data"]["result"]


def fill_variables(expr: str, minutes: int, step: int) -> str:
    """What Grafana would substitute for this range and step (rate window ≥ 4 steps)."""
    return (
        expr.replace("$__rate_interval", f"{max(4 * step, 60)}s")
        .replace("$__range", f"{minutes}m")
        .replace("$__interval", f"{step}s")
    )


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or (
        ", ".join(f"{k}={v}" for k, v in labels.items()) or "value"
    )


def panel_series(base: str, panel: dict, start: float, end: float, step: int) -> list[Series]:
    minutes = max(1, round((end - start) / 60))
    out = []
    for target in panel["targets"]:
        expr = fill_variables(target["expr"], minutes, step)
        for result in query_range(base, expr, start, end, step):
            points = [(float(t), float(v)) for t, v in result["values"]]
            points = [(t, v) for t, v in points if math.isfinite(v)]
            if points:
                times = [datetime.fromtimestamp(t, tz=UTC) for t, _ in points]
                name = legend(target.get("legendFormat", ""), result["metric"])
                out.append((name, times, [v for _, v in points]))
    return sorted(out, key=lambda s: s[0])


def formatter(unit: str) -> FuncFormatter:
    def fmt(value: float, _pos: int) -> str:
        if unit == "currencyJPY":
            return f"¥{value:,.0f}"
        if unit == "percentunit":
            return f"{value:.0%}"
        if unit == "s":
            return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.1f} s"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"

    return FuncFormatter(fmt)


def draw(ax: Any, panel: dict, series: list[Series]) -> None:
    ax.set_title(panel["title"], fontsize=11, loc="left")
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    ax.yaxis.set_major_formatter(formatter(unit))
    locator = mdates.AutoDateLocator(tz=UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax.grid(alpha=0.3)
    if not series:
        ax.text(0.5, 0.5, "no data in this range", ha="center", va="center", transform=ax.transAxes)
        return
    for name, times, values in series[:12]:
        ax.plot(times, values, label=name, linewidth=1.6, color=COLOURS.get(name))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left", ncol=2 if len(series) > 4 else 1, framealpha=0.8)


def render(base: str, minutes: int, out: Path, end: float | None = None) -> list[Path]:
    """One PNG per dashboard, four key panels each, over the last `minutes` before `end`."""
    end = end or time.time()
    start = end - minutes * 60
    step = max(5, minutes * 60 // 240)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, titles in KEY_PANELS.items():
        board = json.loads((DASHBOARDS / name).read_text("utf-8"))
        panels = {p["title"]: p for p in board["panels"] if p["type"] != "row"}
        fig, axes = plt.subplots(2, 2, figsize=(13, 7.5), constrained_layout=True)
        for ax, title in zip(axes.flat, titles, strict=True):
            draw(ax, panels[title], panel_series(base, panels[title], start, end, step))
        stamp = datetime.fromtimestamp(end, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        fig.suptitle(f"{board['title']} — last {minutes} min to {stamp}", fontsize=13)
        path = out / name.replace(".json", ".png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--end", type=float, help="Unix time of the range's end (default now)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    for path in render(args.prometheus.rstrip("/"), args.minutes, args.out, args.end):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
