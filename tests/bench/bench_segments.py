"""Merchant audience segments: query time for a merchant with 1M customers, memory per person
and per (merchant, customer), and what segments add to the hot path per approved order.

    .venv/bin/python -m tests.bench.bench_segments [--customers 1000000] [--queries 200]
        [--people 50000] [--merchants 1000]

Needs the local Redis (`shinsa stack up`). Everything runs in a scratch namespace dropped at
the end.

- Query: a merchant's rows are written straight into Redis (random ages, genders,
  prefectures, last purchase days over a year, purchases, yen), then `SegmentService.count`
  runs random segments (1-3 filters each) as the HTTP handler does: key check, one GET of the
  rows, numpy selection, the differencing audit against up to 100 remembered answers. p50 /
  p99 / max over all queries, refused ones included (the audit refuses many random ones).
- Memory: `--people` identities buying at 1-5 of `--merchants` merchants, written through the
  hot path's own save script (HotPathState.save, segments only), then Redis' MEMORY USAGE of
  the person hashes and the merchants' rows and ids: bytes per person and per (merchant,
  customer), and the extrapolation to the wallet seed's scale (10M people, 41,500 merchants,
  3 merchants a person on average).
- Hot path: the save script's time per purchase (a batch of 500 approved orders with their
  segment rows against the same batch without), and the Python side per order
  (`order_purchase`: the age band, gender and prefecture of the buyer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
from redis import asyncio as aioredis
from rich.console import Console
from rich.table import Table

from agents.identity import drop_namespace
from agents.screen import order_purchase
from agents.segments import (
    AGE_BANDS,
    AMOUNT_BANDS,
    GENDERS,
    ROW,
    SegmentService,
    SegmentStore,
    jst_day,
)
from agents.state import Changes, HotPathState
from streams.records import Address, Buyer, Order
from streams.settings import load_settings

console = Console(stderr=True)


def random_rows(n: int, today: int, rng: np.random.Generator) -> bytes:
    rows = np.zeros(n, dtype=ROW)
    rows["last_day"] = today - rng.integers(0, 365, n)
    rows["purchases"] = rng.geometric(0.4, n).clip(1, 65_535)
    rows["spent"] = (rows["purchases"] * rng.lognormal(8, 1, n)).clip(1, 2**32 - 1)
    rows["age"] = rng.integers(0, len(AGE_BANDS), n)
    rows["gender"] = rng.integers(0, len(GENDERS), n)
    rows["prefecture"] = rng.integers(0, 48, n)
    rows["live"] = 1
    return rows.tobytes()


def random_query(rng: random.Random) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for name in rng.sample(["age", "gender", "prefecture", "recency", "frequency", "amount"], 2):
        if name == "age":
            filters["age_bands"] = rng.sample(AGE_BANDS[1:], rng.randint(1, 4))
        elif name == "gender":
            filters["genders"] = [rng.choice(GENDERS[1:])]
        elif name == "prefecture":
            filters["prefectures"] = rng.sample(range(1, 48), rng.randint(1, 8))
        elif name == "recency":
            filters["within_days"] = rng.choice([7, 30, 90, 180])
        elif name == "frequency":
            filters["min_purchases"] = rng.randint(1, 4)
        else:
            filters["amount_bands"] = rng.sample(AMOUNT_BANDS, rng.randint(1, 3))
    return filters


async def bench_query(client: aioredis.Redis, ns: str, customers: int, queries: int) -> dict:
    store = SegmentStore(client, ns)
    today = jst_day(int(time.time() * 1000))
    rng = np.random.default_rng(1)
    started = time.perf_counter()
    await client.set(store.keys.segment_rows("big"), random_rows(customers, today, rng))
    ids = [f"i{n}" for n in range(customers)]
    for start in range(0, customers, 50_000):
        await client.rpush(store.keys.segment_ids("big"), *ids[start : start + 50_000])
    console.print(f"wrote {customers:,} customers in {time.perf_counter() - started:.1f} s")
    key = await store.issue_key("big")
    service = SegmentService(store)
    pick = random.Random(7)
    times, answered, refused = [], 0, 0
    for _ in range(queries):
        t0 = time.perf_counter()
        try:
            audience = await service.count(key, random_query(pick))
            answered += audience.shown is not None
        except Exception:  # a refusal (differencing) costs its time too
            refused += 1
        times.append((time.perf_counter() - t0) * 1000)
    memory = sum(
        [
            await client.memory_usage(store.keys.segment_rows("big")) or 0,
            await client.memory_usage(store.keys.segment_ids("big"), samples=0) or 0,
        ]
    )
    return {
        "customers": customers,
        "queries": queries,
        "answered": answered,
        "refused_or_below_minimum": queries - answered,
        "remembered_answers": len(await store.answered("big")),
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "max_ms": max(times),
        "merchant_bytes": memory,
    }


def buyer(n: int) -> Buyer:
    return Buyer(
        name="x",
        address=Address(postal_code="1000001", prefecture="東京都", street="1"),
        birth_date=f"19{50 + n % 50}-0{1 + n % 9}-1{n % 9}",
        gender=("FEMALE", "MALE", None)[n % 3],
    )


async def bench_memory(
    client: aioredis.Redis, ns: str, people: int, merchants: int
) -> tuple[dict, dict]:
    state = HotPathState(client, ns, b"bench", 86_400)
    store = SegmentStore(client, ns)
    rng = random.Random(3)
    now_ms = int(time.time() * 1000)
    today = jst_day(now_ms)
    pairs = 0
    batch: list[tuple[str, str, int, int, str]] = []
    for person in range(people):
        attrs = f"{1 + person % 9},{person % 3},{1 + person % 47}"
        for merchant in rng.sample(range(merchants), rng.randint(1, 5)):
            batch.append((f"m{merchant}", f"i{person}", today, 1000 + person % 5000, attrs))
            pairs += 1
        if len(batch) >= 2000:
            await state.save(Changes([], [], [], [], segments=batch))
            batch = []
    if batch:
        await state.save(Changes([], [], [], [], segments=batch))
    person_bytes = 0
    for person in range(0, people, max(1, people // 2000)):  # a sample of the person hashes
        person_bytes += (
            await client.memory_usage(store.keys.segment_person(f"i{person}"), samples=0) or 0
        )
    sampled = len(range(0, people, max(1, people // 2000)))
    merchant_bytes = 0
    for merchant in range(merchants):
        for key in (
            store.keys.segment_rows(f"m{merchant}"),
            store.keys.segment_ids(f"m{merchant}"),
        ):
            merchant_bytes += await client.memory_usage(key, samples=0) or 0
    per_person = person_bytes / sampled
    per_pair = merchant_bytes / pairs
    memory = {
        "people": people,
        "merchants": merchants,
        "pairs": pairs,
        "bytes_per_person": per_person,  # its hash: attributes + one slot per merchant
        "bytes_per_pair": per_pair,  # its merchant's row (12 bytes) + its id in the list
        "scale_10m_people_gb": (10_000_000 * per_person + 30_000_000 * per_pair) / 1e9,
    }

    # the hot path: the save script with 500 purchases against the same call without
    purchases = [
        (f"m{rng.randrange(merchants)}", f"i{rng.randrange(people)}", today, 3000, "5,1,13")
        for _ in range(500)
    ]
    with_rows, without = [], []
    for _ in range(30):
        t0 = time.perf_counter()
        await state.save(Changes([], [], [], [], segments=purchases))
        with_rows.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await state.save(Changes([], [], [], [], segments=purchases[:1]))
        without.append(time.perf_counter() - t0)
    order = Order(
        order_id="o1",
        merchant_id="m1",
        event_time=datetime.now(UTC),
        amount=3000,
        payment_method="CARD",
        buyer=buyer(1),
    )
    attributes = {"prefecture_code": "13"}
    t0 = time.perf_counter()
    rounds = 20_000
    for n in range(rounds):
        order_purchase(order, f"i{n}", now_ms, attributes)
    python_us = (time.perf_counter() - t0) / rounds * 1e6
    hot = {
        "save_us_per_purchase": (np.median(with_rows) - np.median(without)) / 499 * 1e6,
        "python_us_per_order": python_us,
    }
    return memory, hot


async def main_async(args: argparse.Namespace) -> dict:
    settings = load_settings()
    client = aioredis.Redis.from_url(settings.redis_url)
    ns = f"bench-seg-{uuid.uuid4().hex[:8]}"
    try:
        query = await bench_query(client, ns, args.customers, args.queries)
        memory, hot = await bench_memory(client, ns, args.people, args.merchants)
    finally:
        await drop_namespace(client, ns)
        await client.aclose()
    return {"query": query, "memory": memory, "hot_path": hot}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--people", type=int, default=50_000)
    parser.add_argument("--merchants", type=int, default=1_000)
    result = asyncio.run(main_async(parser.parse_args()))
    q, m, h = result["query"], result["memory"], result["hot_path"]
    table = Table(title="merchant audience segments")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(f"query p50 ({q['customers']:,} customers)", f"{q['p50_ms']:.1f} ms")
    table.add_row("query p99", f"{q['p99_ms']:.1f} ms")
    table.add_row("query max", f"{q['max_ms']:.1f} ms")
    table.add_row(
        "answered / refused or < 50", f"{q['answered']} / {q['refused_or_below_minimum']}"
    )
    table.add_row("Redis bytes, 1M-customer merchant", f"{q['merchant_bytes']:,}")
    table.add_row("bytes per person", f"{m['bytes_per_person']:.0f}")
    table.add_row("bytes per (merchant, customer)", f"{m['bytes_per_pair']:.1f}")
    table.add_row("10M people × 3 merchants", f"{m['scale_10m_people_gb']:.2f} GB")
    table.add_row("hot path: save script per purchase", f"{h['save_us_per_purchase']:.1f} µs")
    table.add_row("hot path: Python per approved order", f"{h['python_us_per_order']:.1f} µs")
    Console().print(table)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
