"""`shinsa explain ORDER`: why an order was decided as it was, from its DecisionTrace.

The screen agent writes one trace per decision to the `traces` topic, keyed by order id
(agents/screen.py `trace_of`). Only the partition the key maps to is read, and, when the
order's feature snapshot is still in Redis, only from around the order's time; the newest
trace of the key wins (a worker restarted after a crash may have written it twice, alike).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from agents.reasons import ALLOW_LISTED, DECISION_REASONS, MODEL_PREFIX
from streams.codec import SchemaRegistry
from streams.errors import UserError
from streams.settings import Settings
from streams.tools.review import CLOCK_MARGIN_MS, decode_all, read_keys

COLOURS = {"APPROVE": "green", "REVIEW": "yellow", "DECLINE": "red"}


# ---------------------------------------------------------------- reading


def trace_since_ms(settings: Settings, order_id: str) -> int:
    """Where the trace can start on the topic (Kafka time, ms): the snapshot's event time less
    the intake's clock allowance; 0 (the beginning) without a snapshot or without Redis."""
    from redis.exceptions import RedisError

    from streams.tools.review import load_snapshot

    try:
        snapshot = load_snapshot(settings, order_id)
    except RedisError:
        return 0  # Redis only narrows the search; the topic is the record
    if not snapshot or not snapshot.get("t"):
        return 0
    return int(snapshot["t"]) - CLOCK_MARGIN_MS


def find_trace(settings: Settings, order_id: str) -> dict[str, Any]:
    """The newest DecisionTrace of the order, or a UserError when there is none."""
    registry = SchemaRegistry(settings.schema_dir)
    topic = settings.topic("traces")
    since = {order_id.encode(): trace_since_ms(settings, order_id)}
    newest = None
    with contextlib.closing(read_keys(settings, topic, since)) as messages:
        for trace in decode_all(registry, "DecisionTrace", messages):
            if trace["order_id"] == order_id:
                newest = trace  # one partition, read in order: the last is the newest
    if newest is None:
        raise UserError(
            f"no decision trace for order {order_id!r} on {topic}: the order is unknown, not "
            "decided yet, or its trace is past the topic's retention (`shinsa decisions` lists "
            "decided orders)"
        )
    return newest


# ---------------------------------------------------------------- presenting (pure)


def describe(code: str) -> str:
    """A reason code's catalogue entry; MODEL:<feature> codes share the MODEL_PREFIX entry."""
    if code in DECISION_REASONS:
        return DECISION_REASONS[code]
    if code.startswith(MODEL_PREFIX):
        return DECISION_REASONS[MODEL_PREFIX]
    return "(not in the catalogue: a newer worker's code?)"


def fired_status(trace: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Each rule that fired and what became of it (an allow-list entry overrides rules)."""
    reasons = set(trace["reasons"])
    out = []
    for code in trace["fired"]:
        if code in reasons:
            status = "decided (in the reasons)"
        elif ALLOW_LISTED in reasons:
            status = "overridden by the allow list"
        else:
            status = "fired, not in the reasons"
        out.append((code, status))
    return out


def number(value: float) -> str:
    """Yen limits with separators, scores and flags as they are."""
    if value == int(value) and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:.4g}"


def coloured(decision: str) -> str:
    colour = COLOURS.get(decision)
    return f"[{colour}]{decision}[/]" if colour else decision


def summary_table(trace: Mapping[str, Any]) -> Table:
    shadow = trace.get("shadow")
    table = Table("field", "value", title=f"order {escape(trace['order_id'])}")
    rows = [
        ("decision", coloured(trace["decision"])),
        ("score", f"{trace['score']:.4f}"),
        ("decided at", trace["decided_at"].isoformat(timespec="milliseconds")),
        ("policy version", trace["policy_version"]),
        (
            "merchant override",
            "yes: the merchant's own rules" if trace["merchant_override"] else "no",
        ),
        ("allowed methods", ", ".join(trace["allowed_methods"] or []) or "any"),
        ("model version", trace["model_version"]),
        ("model warm", "yes" if trace["model_warm"] else "no (cold start: rules decide)"),
        ("model score", f"{trace['model_score']:.4f}"),
        (
            "shadow decision",
            f"{coloured(shadow['decision'])} (score {shadow['score']:.4f}, policy "
            f"{shadow['policy_version']}: {', '.join(shadow['reasons'])})"
            if shadow
            else "— (no shadow policy)",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def pairs_table(title: str, header: tuple[str, str], rows: list[tuple[str, str]]) -> Table:
    table = Table(*header, title=title)
    for row in rows or [("—", "")]:
        table.add_row(*map(escape, row))
    return table


def trace_renderables(trace: Mapping[str, Any]) -> list[RenderableType]:
    """Everything in the trace, as tables for a terminal."""
    hits = [(kind, ", ".join(found)) for kind, found in sorted(trace["list_hits"].items()) if found]
    contributions = sorted(trace["contributions"].items(), key=lambda kv: -kv[1])
    return [
        summary_table(trace),
        pairs_table("reasons", ("code", "meaning"), [(c, describe(c)) for c in trace["reasons"]]),
        pairs_table("rules fired", ("rule", "outcome"), fired_status(trace)),
        pairs_table("list hits", ("list", "matched"), hits),
        pairs_table(
            "rule inputs",
            ("input", "value"),
            [(k, number(v)) for k, v in sorted(trace["inputs"].items())],
        ),
        pairs_table(
            "thresholds",
            ("rule", "value"),
            [(k, number(v)) for k, v in sorted(trace["thresholds"].items())],
        ),
        pairs_table(
            "model contributions (logit)",
            ("feature", "raised the score by"),
            [(k, f"{v:+.4f}") for k, v in contributions],
        ),
        pairs_table(
            "features (what the model scored)",
            ("feature", "value"),
            [(k, f"{v:.6g}") for k, v in sorted(trace["features"].items())],
        ),
    ]
