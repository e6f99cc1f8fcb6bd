"""The campaign's monthly draw at the card seed's scale: 1M participants holding 30M tickets,
10,000 winners. Prints the time and the peak memory of each step.

    .venv/bin/python -m tests.bench.bench_draw [--participants 1000000] [--tickets 30000000]
        [--ledger 1000000]

- draw: agents/draw.py `draw` on tickets per person (weights from a skewed distribution
  summing to --tickets), the step `shinsa campaign draw` runs once the ledger is read;
- ledger: `reduce_ledger` + `tickets_by_person` + `ledger_digest` on --ledger decoded ledger
  records (in memory), per record, to extrapolate the 30M-record month;
- decode: Avro decoding of CampaignTicket records per record (reading the topic adds the
  broker's fetch, measured by `make bench`'s passthroughs).
No broker or Redis needed.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import tracemalloc

import numpy as np
from rich.console import Console
from rich.table import Table

from agents.draw import draw, ledger_digest, reduce_ledger, tickets_by_person
from streams.codec import SchemaRegistry
from streams.settings import load_settings


def weights(participants: int, tickets: int, rng: np.random.Generator) -> np.ndarray:
    raw = rng.pareto(1.5, participants) + 1
    counts = np.maximum(1, np.round(raw / raw.sum() * tickets)).astype(np.int64)
    counts[0] += tickets - counts.sum()  # exactly `tickets` in all
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=1_000_000)
    parser.add_argument("--tickets", type=int, default=30_000_000)
    parser.add_argument("--ledger", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    counts = weights(args.participants, args.tickets, rng)
    tickets = {f"i{n:07d}": int(c) for n, c in enumerate(counts)}

    tracemalloc.start()
    t0 = time.perf_counter()
    winners = draw(tickets, b"\x01" * 32, 10_000)
    draw_s = time.perf_counter() - t0
    draw_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(winners) == 10_000

    records = [
        {
            "campaign_id": "c",
            "month": "2026-11",
            "purchase_id": f"o{n}",
            "identity_id": f"i{n % args.participants:07d}",
            "day": "2026-11-15",
            "action": "ISSUED",
        }
        for n in range(args.ledger)
    ]
    t0 = time.perf_counter()
    table = reduce_ledger(records, "c", "2026-11")
    tickets_by_person(table)
    ledger_digest(table)
    ledger_us = (time.perf_counter() - t0) / args.ledger * 1e6

    registry = SchemaRegistry(load_settings().schema_dir)
    encoded = [
        registry.encode("CampaignTicket", registry.from_json("CampaignTicket", r | {"at": 0}))
        for r in records[:100_000]
    ]
    t0 = time.perf_counter()
    for raw in encoded:
        registry.decode("CampaignTicket", raw)
    decode_us = (time.perf_counter() - t0) / len(encoded) * 1e6

    month_s = draw_s + args.tickets * (ledger_us + decode_us) / 1e6
    result = {
        "participants": args.participants,
        "tickets": int(counts.sum()),
        "draw_s": draw_s,
        "draw_peak_mb": draw_peak / 1e6,
        "ledger_us_per_record": ledger_us,
        "decode_us_per_record": decode_us,
        "month_of_30m_records_s": month_s,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    table_out = Table(title="campaign draw")
    table_out.add_column("measure")
    table_out.add_column("value", justify="right")
    table_out.add_row(
        f"draw: {args.participants:,} people, {result['tickets']:,} tickets", f"{draw_s:.1f} s"
    )
    table_out.add_row("draw: peak traced memory", f"{result['draw_peak_mb']:.0f} MB")
    table_out.add_row("ledger table + digest, per record", f"{ledger_us:.2f} µs")
    table_out.add_row("Avro decode, per record", f"{decode_us:.2f} µs")
    table_out.add_row(f"a month of {args.tickets:,} records, extrapolated", f"{month_s:.0f} s")
    table_out.add_row("process peak RSS", f"{result['max_rss_mb']:.0f} MB")
    Console().print(table_out)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
