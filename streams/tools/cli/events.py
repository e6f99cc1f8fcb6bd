"""`shinsa produce`, `simulate`, `decisions` and `dlq`: events into the topics, and what came
out of them."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from streams.errors import UserError
from streams.tools.cli.common import console, err, settings
from streams.tools.publish import encode_events, send_prepared, summarize_topics, write_events


def produce(
    file: Annotated[Path, typer.Argument(help="JSON lines; '-' for standard input.")],
    topic: Annotated[
        str | None,
        typer.Option(
            help="Every line is a record of this topic (orders, payments, ...). "
            'Without it each line is {"topic": ..., "value": {...}}.'
        ),
    ] = None,
) -> None:
    """Validate JSON lines against the schemas and publish them as Avro.

    Nothing is sent unless every line is valid; invalid lines are listed with their numbers.
    """
    import orjson

    from streams.clients import prepare
    from streams.codec import CodecError, SchemaRegistry

    s = settings()
    registry = SchemaRegistry(s.schema_dir)
    if str(file) != "-" and not file.exists():
        raise UserError(f"{file}: no such file")
    lines = (
        sys.stdin.read().splitlines() if str(file) == "-" else file.read_text("utf-8").splitlines()
    )
    prepared, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if topic is None:
                if not isinstance(obj, dict) or "topic" not in obj or "value" not in obj:
                    raise CodecError(
                        "envelope", 'expected {"topic": ..., "value": {...}} (or pass --topic)'
                    )
                prepared.append(prepare(registry, obj["topic"], obj["value"]))
            else:
                prepared.append(prepare(registry, topic, obj))
        except orjson.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON ({exc.msg})")
        except CodecError as exc:
            problems.append(f"line {number}: {exc.reason}: {exc.detail}")
    if problems:
        shown = "\n".join(problems[:50])
        more = f"\n… and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise UserError(f"{len(problems)} invalid line(s), nothing was sent:\n{shown}{more}")
    sent = send_prepared(s, [(p.topic, p.key, p.value) for p in prepared], "producing")
    console.print(f"sent {sent} events")


def simulate(
    orders: Annotated[int, typer.Option(help="Orders to generate.", min=1)] = 2000,
    seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 42,
    fraud_rate: Annotated[
        float, typer.Option(help="Share of orders that are fraud.", min=0, max=1)
    ] = 0.05,
    invalid_rate: Annotated[
        float, typer.Option(help="Share of events deliberately broken.", min=0, max=1)
    ] = 0.0,
    merchants: Annotated[int, typer.Option(help="Merchants.", min=1)] = 40,
    days: Annotated[
        float, typer.Option(help="Event-time span, ending now (or --end).", min=0.1)
    ] = 30.0,
    end: Annotated[
        str | None, typer.Option(help="End of the timeline, ISO-8601 with offset.")
    ] = None,
    rate: Annotated[
        float, typer.Option(help="Events per second; 0 = as fast as possible.", min=0)
    ] = 0.0,
    output: Annotated[
        Path | None, typer.Option(help="Write JSON lines here instead of Kafka.")
    ] = None,
    wallet: Annotated[
        int,
        typer.Option(
            help="Wallet payments (charges, shop payments, transfers, withdrawals).", min=0
        ),
    ] = 0,
    wallet_fraud_rate: Annotated[
        float, typer.Option(help="Share of wallet activities that are fraud.", min=0, max=1)
    ] = 0.03,
    campaign: Annotated[
        bool,
        typer.Option(
            help="Shape traffic for the お月玉 campaign: members who never log in, heavy card "
            "users who hit the daily cap, and the ticket_farming pattern."
        ),
    ] = False,
    people: Annotated[
        int,
        typer.Option(
            help="Buyers (0: one per three orders). Fewer buyers order more often each: "
            "longer repayment histories for the credit model.",
            min=0,
        ),
    ] = 0,
) -> None:
    """Generate realistic Japanese traffic with named fraud patterns and publish it."""
    from datetime import UTC, datetime

    from streams.tools.simulate import SimConfig, Simulator

    end_time = datetime.now(UTC)
    if end:
        try:
            end_time = datetime.fromisoformat(end)
        except ValueError:
            raise UserError(
                f"--end {end!r} is not ISO-8601 (e.g. 2026-11-01T00:00:00+09:00)"
            ) from None
        if end_time.tzinfo is None:
            raise UserError("--end needs a UTC offset, e.g. 2026-11-01T00:00:00+09:00")
    cfg = SimConfig(
        orders=orders,
        seed=seed,
        fraud_rate=fraud_rate,
        merchants=merchants,
        days=days,
        invalid_rate=invalid_rate,
        end=end_time,
        wallet_payments=wallet,
        wallet_fraud_rate=wallet_fraud_rate,
        campaign=campaign,
        people=people,
    )
    events = list(Simulator(cfg).events())
    if output is not None:
        write_events(events, output)
        console.print(f"wrote {len(events)} events to {output}")
        return
    s = settings()
    encoded = encode_events(s, events)
    sent = send_prepared(s, encoded, "simulating", rate)
    console.print(f"sent {sent} events ({summarize_topics(events)})")


def decisions(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep waiting for new ones.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
    limit: Annotated[int, typer.Option(help="Show at most the last N (table mode).", min=1)] = 50,
) -> None:
    """Decisions from the decisions topic: a table, or JSON lines with --json."""
    from streams.clients import read_topic
    from streams.codec import CodecError, SchemaRegistry, datum_to_json

    s = settings()
    registry = SchemaRegistry(s.schema_dir)
    rows: list[dict[str, Any]] = []
    for msg in read_topic(s, s.topic("decisions"), follow=follow):
        try:
            d = registry.decode("Decision", msg.value())
        except CodecError as exc:
            err.print(f"[yellow]skipping undecodable decision at offset {msg.offset()}: {exc}")
            continue
        if as_json:
            sys.stdout.write(datum_to_json(d).decode() + "\n")
            sys.stdout.flush()
        elif follow:
            console.print(decision_line(d))
        else:
            rows.append(d)
    if not as_json and not follow:
        counts = Counter(r["decision"] for r in rows)
        table = Table(
            "order",
            "merchant",
            "amount (¥)",
            "decision",
            "score",
            "reasons",
            "latency ms",
            title=f"last {min(limit, len(rows))} of {len(rows)} decisions "
            f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})",
        )
        for r in sorted(rows, key=lambda r: r["decided_at"])[-limit:]:
            table.add_row(
                r["order_id"],
                r["merchant_id"],
                f"{r['amount']:,}",
                colour(r["decision"]),
                f"{r['score']:.2f}",
                ", ".join(r["reasons"]),
                f"{r['latency_ingest_ms']:.0f}",
            )
        console.print(table)


def colour(decision: str) -> str:
    return {
        "APPROVE": "[green]APPROVE[/]",
        "REVIEW": "[yellow]REVIEW[/]",
        "DECLINE": "[red]DECLINE[/]",
    }.get(decision, decision)


def decision_line(d: dict[str, Any]) -> str:
    return (
        f"{d['order_id']}  {colour(d['decision'])}  ¥{d['amount']:,}  score {d['score']:.2f}  "
        f"{', '.join(d['reasons'])}"
    )


def dlq(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
) -> None:
    """Dead letters: where each came from and why (payloads are not shown: they may hold PII)."""
    import orjson

    from streams.clients import read_topic
    from streams.dlq import DETAIL, REASON, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC

    s = settings()
    rows = []
    for msg in read_topic(s, s.topic("dlq")):
        h = {k: v.decode("utf-8", "replace") for k, v in (msg.headers() or [])}
        rows.append(
            {
                "topic": h.get(SOURCE_TOPIC),
                "partition": h.get(SOURCE_PARTITION),
                "offset": h.get(SOURCE_OFFSET),
                "reason": h.get(REASON),
                "detail": h.get(DETAIL),
                "bytes": len(msg.value() or b""),
            }
        )
    if as_json:
        for r in rows:
            sys.stdout.write(orjson.dumps(r).decode() + "\n")
        return
    table = Table(
        "source",
        "partition",
        "offset",
        "reason",
        "detail",
        "bytes",
        title=f"{len(rows)} dead letters",
    )
    for r in rows[-100:]:
        table.add_row(
            *(str(r[k]) for k in ("topic", "partition", "offset", "reason", "detail", "bytes"))
        )
    console.print(table)
