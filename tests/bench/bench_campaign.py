"""Does the campaign slow screening? Screening p50 / p99 at a paced rate near capacity, first
without, then with a campaign worker at work on the same host (the campaign's own role and
consumer group, a surge of logins to it), in one run.

    .venv/bin/python -m tests.bench.bench_campaign [--backlog 6000] [--seconds 10] [--logins 30000]

Needs the local stack (`shinsa stack up`). Topics of a fresh prefix; a campaign for this month
is applied first. The paced rate is 80 % of the capacity measured on the backlog. On these
2-core machines the two workers share the CPU: the "with" phase shows what co-locating the
roles costs; deployed apart, the campaign worker takes nothing from screening but the broker.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

import orjson
from rich.table import Table

from agents.campaign import jst_month, to_ms
from streams.clients import DeliveryTracker, make_producer, prepare, produce_one, read_topic
from streams.codec import SchemaRegistry
from streams.settings import load_settings
from streams.tools import stack
from streams.tools.demo import percentile, start_worker, stop_worker, worker_env
from tests.bench.bench_pipeline import (
    CommittedCount,
    backlog_seconds,
    console,
    generate,
    paced_phase,
    produce,
    wait_for,
)


def apply_campaign(settings, month: str) -> None:
    campaign = {
        "id": "bench",
        "name": "bench",
        "months": [month],
        "min_amount_yen": 500,
        "methods": ["CARD", "DEFERRED"],
        "daily_cap": 3,
        "winners_per_month": 10_000,
        "prize_yen": 10_000,
    }
    producer = make_producer(settings)
    tracker = DeliveryTracker()
    produce_one(producer, settings.topic("campaigns"), b"bench", orjson.dumps(campaign), tracker)
    producer.flush(30)


def logins(registry: SchemaRegistry, n: int) -> list:
    now = datetime.now(UTC)
    return [
        prepare(
            registry,
            "logins",
            {
                "login_id": f"bl-{i}",
                "account_id": f"acct-{i % 5000}",
                "event_time": now.isoformat(),
                "method": "PASSWORD",
                "success": True,
            },
        )
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=6000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--logins", type=int, default=30_000)
    args = parser.parse_args()
    run = f"bench-camp-{int(time.time())}"
    settings = load_settings(topic_prefix=f"{run}.", app_id=f"{run}-shinsa")
    stack.create_topics(settings)
    registry = SchemaRegistry(settings.schema_dir)
    apply_campaign(settings, jst_month(to_ms(datetime.now(UTC))))
    logs = settings.data_dir / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    merchants, backlog = generate(registry, args.backlog, 1, "backlog")
    produce(settings, settings.topic("merchants"), merchants, "producing merchants")
    produce(settings, settings.topic("orders"), backlog, "producing the backlog")
    log = logs / f"{run}-worker.log"
    worker = start_worker(settings, log, env=worker_env(settings))
    campaign = None
    watch = CommittedCount(settings, [settings.topic("decisions"), settings.topic("dlq")])
    results = {}
    try:
        wait_for(watch, len(backlog), "backlog", 600, worker, log)
        decided = [
            registry.decode("Decision", m.value())
            for m in read_topic(settings, settings.topic("decisions"))
        ]
        capacity = len(decided) / max(backlog_seconds(decided), 1e-3)
        rate = round(0.8 * capacity, -1)
        count = int(rate * args.seconds)
        _, quiet = generate(registry, count, 2, "without campaign")
        results["without campaign"] = paced_phase(
            settings, watch, watch.total(), "without", quiet, rate, worker, log, 600
        )
        campaign_log = logs / f"{run}-campaign.log"
        campaign = start_worker(settings, campaign_log, env=worker_env(settings), role="campaign")
        deadline = time.monotonic() + 60
        while "hot path campaign: assigned" not in campaign_log.read_text("utf-8", "replace"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the campaign worker did not start: see {campaign_log}")
            time.sleep(0.3)
        produce(settings, settings.topic("logins"), logins(registry, args.logins), "login surge")
        _, busy = generate(registry, count, 3, "with campaign")
        results["with campaign"] = paced_phase(
            settings, watch, watch.total(), "with", busy, rate, worker, log, 600
        )
        tickets = sum(1 for _ in read_topic(settings, settings.topic("campaign-tickets")))
    finally:
        watch.close()
        if campaign is not None:
            stop_worker(campaign)
        stop_worker(worker)
    table = Table(title=f"screening at {rate:,.0f} orders/s (80 % of {capacity:,.0f}/s)")
    for column in ("phase", "orders", "p50 ms", "p99 ms", "max ms", "longest pause ms"):
        table.add_column(column, justify="right")
    out = {"capacity_per_s": capacity, "rate_per_s": rate, "tickets": tickets}
    for name, phase in results.items():
        lat = phase.latency_ms
        row = phase.as_json()
        out[name] = row
        table.add_row(
            name,
            f"{phase.orders:,}",
            f"{percentile(lat, 0.5):,.0f}",
            f"{percentile(lat, 0.99):,.0f}",
            f"{max(lat):,.0f}",
            f"{phase.longest_pause_ms:,.0f}",
        )
    console.print(table)
    console.print(f"campaign ledger records written during the run: {tickets:,}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
