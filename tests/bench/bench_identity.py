"""Identity resolution (名寄せ) speed: resolutions per second of one process on the local Redis.

    .venv/bin/python -m tests.bench.bench_identity [--records 50000] [--seed 1]

Needs the local Redis (`shinsa stack up`), reached on loopback. The records are the labelled
set of tests/bench/eval_identity.py (simulated people, 1–5 variously written records each,
households and namesakes), shuffled. Every timed run resolves into a fresh Redis namespace that
is dropped afterwards, with the normalizers' caches cleared first, on uvloop like the worker.
Japan Post's postal table is loaded before timing, as the worker loads it at start.

Measured, per record:
- person_keys alone, cold (caches cleared, one pass over all records, as a stream sees them)
  and warm (a second pass over records that all fit in the caches: returning buyers), also
  with person_keys' own cache bypassed (warm normalizers only);
- the script call alone: IdentityGraph.resolve per batch of 1000 on precomputed keys, and of
  that the bare EVALSHA (Redis running identity_graph.lua plus the loopback round trip);
- end to end with batches of 1000, 100 and 1 (batch 1 on a few thousand records only), each
  batch as the intake agent resolves it: `resolve_overlapped`, the keys of the next chunk
  computed while Redis runs the script on this one: resolutions per second, the number that
  counts. Its split: time in person_keys, and the rest (script time the overlap did not hide,
  the calls' Python side);
- for comparison, batch 1000 not overlapped: all keys of a batch, then one script call.

Prints a rich table, then one JSON line with every number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from redis import asyncio as aioredis
from rich import box
from rich.console import Console
from rich.table import Table

from agents import normalize
from agents.identity import (
    SCRIPT,
    IdentityGraph,
    Lookup,
    PersonKeys,
    drop_namespace,
    person_keys,
    resolve_overlapped,
)
from streams.records import Address, Buyer
from streams.settings import Settings, load_settings
from tests.bench.eval_identity import build

T = TypeVar("T")
TARGET_RATE = 5000.0  # resolutions/s per worker process
BATCH = 1000  # the worker's default batch (SHINSA_BATCH_SIZE)
BATCH_ONE_RECORDS = 3000  # records resolved one script call each
WARM_RECORDS = 5000  # fits in the normalizers' caches (agents.normalize.CACHE_SIZE)
RECORDS_PER_PERSON = 2.5  # mean of eval_identity.RECORDS_WEIGHTS
_WARM_UP = Buyer(name="x", address=Address(postal_code="", street=""))


def clear_caches() -> None:
    """Forget every normalized value (and cached person keys): the next call starts cold."""
    normalize.clear_caches()
    clear = getattr(person_keys, "cache_clear", None)
    if clear is not None:
        clear()


def event_time(i: int) -> int:
    """The i-th record's event time (ms), as the intake agent passes it."""
    return 1_790_000_000_000 + i


def records(n: int, seed: int) -> list[Buyer]:
    _, labelled = build(int(n / RECORDS_PER_PERSON) + 50, seed)
    while len(labelled) < n:  # rare: fewer records than the mean promised
        _, more = build(n // 10 + 50, seed + len(labelled))
        labelled += more
    return [r.buyer for r in labelled[:n]]


def per_record_us(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / n * 1e6


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Bench:
    """Timed runs against one Redis client; each run in its own namespace, dropped after."""

    def __init__(self, settings: Settings, secret: bytes) -> None:
        self.settings = settings
        self.secret = secret
        self.client = aioredis.Redis.from_url(settings.redis_url)
        self.limit = settings.identity_fanout_limit
        self.script = self.client.register_script(SCRIPT)
        self.dropped = 0

    async def resolve(
        self, graph: IdentityGraph, people: list[PersonKeys], first: int
    ) -> list[str]:
        """One script call, with event times and order ids as the intake agent passes them."""
        times = [event_time(first + i) for i in range(len(people))]
        ids = [f"o-{first + i}" for i in range(len(people))]
        found = await graph.resolve(people, times, times[-1], ids)
        return [i.identity_id for i in found]

    @contextlib.asynccontextmanager
    async def namespace(self) -> AsyncIterator[str]:
        """A fresh namespace for one run, dropped right after it (Redis stays small)."""
        ns = f"bench-identity-{uuid.uuid4().hex[:10]}"
        try:
            yield ns
        finally:
            self.dropped += await drop_namespace(self.client, ns)

    async def warm_up(self) -> None:
        """Before timing: the script into Redis (EVALSHA → NOSCRIPT → SCRIPT LOAD) and Japan
        Post's table into memory (the worker reads it at start)."""
        normalize.postal_table()
        async with self.namespace() as ns:
            graph = IdentityGraph(self.client, ns, self.limit)
            await self.resolve(graph, [person_keys(_WARM_UP, b"")], 0)

    async def end_to_end(self, buyers: Sequence[Buyer], batch: int) -> dict[str, float]:
        """What the intake agent does per batch (resolve_overlapped), cold, in a fresh namespace.

        `person_keys_us` is the time spent computing keys; the rest is the script calls' share
        that the overlap did not hide, plus the Python side of the calls.
        """
        clear_caches()
        ids: list[str] = []
        keys_s = 0.0

        def prepare(i: int) -> Lookup[int]:
            nonlocal keys_s
            t0 = time.perf_counter()
            keys = person_keys(buyers[i], self.secret)
            keys_s += time.perf_counter() - t0
            return Lookup(keys, event_time(i), f"o-{i}", i)

        async with self.namespace() as ns:
            graph = IdentityGraph(self.client, ns, self.limit)
            start = time.perf_counter()
            for first in range(0, len(buyers), batch):
                indices = range(first, min(first + batch, len(buyers)))
                done = await resolve_overlapped(graph, indices, prepare, event_time(indices[-1]))
                assert done.error is None and not done.unresolved, done.error
                ids += [identity.identity_id for _, identity in done.found]
            elapsed = time.perf_counter() - start
        return self._run_stats(buyers, batch, elapsed, keys_s, ids)

    async def sequential(self, buyers: Sequence[Buyer], batch: int) -> dict[str, float]:
        """Keys for a whole batch, then one script call: the agent before the overlap."""
        clear_caches()
        ids: list[str] = []
        keys_s = 0.0
        async with self.namespace() as ns:
            graph = IdentityGraph(self.client, ns, self.limit)
            start = time.perf_counter()
            for i, chunk in enumerate(chunks(buyers, batch)):
                t0 = time.perf_counter()
                people = [person_keys(b, self.secret) for b in chunk]
                keys_s += time.perf_counter() - t0
                ids += await self.resolve(graph, people, i * batch)
            elapsed = time.perf_counter() - start
        return self._run_stats(buyers, batch, elapsed, keys_s, ids)

    @staticmethod
    def _run_stats(
        buyers: Sequence[Buyer], batch: int, elapsed: float, keys_s: float, ids: list[str]
    ) -> dict[str, float]:
        n = len(buyers)
        return {
            "records": n,
            "batch": batch,
            "seconds": elapsed,
            "per_second": n / elapsed,
            "us_per_record": elapsed / n * 1e6,
            "person_keys_us": keys_s / n * 1e6,
            "script_us": (elapsed - keys_s) / n * 1e6,
            "identities_assigned": len(set(ids)),
        }

    async def script_only(self, people: list[PersonKeys]) -> dict[str, float]:
        """IdentityGraph.resolve on precomputed keys, then the bare EVALSHA on prepared JSON."""
        async with self.namespace() as ns:
            graph = IdentityGraph(self.client, ns, self.limit)
            start = time.perf_counter()
            for i, chunk in enumerate(chunks(people, BATCH)):
                await self.resolve(graph, list(chunk), i * BATCH)
            resolve_us = (time.perf_counter() - start) / len(people) * 1e6
        payloads = [
            orjson.dumps(
                [
                    {
                        "k": list(p.keys),
                        "n": p.name,
                        "t": t,
                        "a": p.attributes,
                        "s": list(p.spellings),
                        "o": f"o-{t}",
                    }
                    for t, p in enumerate(chunk, start=i * BATCH)
                ]
            )
            for i, chunk in enumerate(chunks(people, BATCH))
        ]
        async with self.namespace() as ns:
            start = time.perf_counter()
            for payload in payloads:
                await self.script(args=[ns, self.limit, 0, payload])
            evalsha_us = (time.perf_counter() - start) / len(people) * 1e6
        return {"resolve_us": resolve_us, "evalsha_us": evalsha_us}

    async def close(self) -> None:
        await self.client.aclose()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """On uvloop, like the worker (streams/tools/worker.py)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the worker
        return asyncio.run(coro)
    return uvloop.run(coro)


async def measure(settings: Settings, buyers: list[Buyer], secret: bytes) -> dict[str, Any]:
    bench = Bench(settings, secret)
    out: dict[str, Any] = {}
    try:
        await bench.warm_up()
        clear_caches()
        people: list[PersonKeys] = []
        out["person_keys_cold_us"] = per_record_us(
            lambda: people.extend(person_keys(b, secret) for b in buyers), len(buyers)
        )
        warm = buyers[:WARM_RECORDS]
        clear_caches()
        for b in warm:
            person_keys(b, secret)
        out["person_keys_warm_us"] = per_record_us(
            lambda: [person_keys(b, secret) for b in warm], len(warm)
        )
        # The same records with warm normalizers but without person_keys' own cache (if any):
        # a returning buyer who changed one field still pays the hashing and assembly.
        uncached = getattr(person_keys, "__wrapped__", person_keys)
        out["person_keys_warm_normalizers_us"] = per_record_us(
            lambda: [uncached(b, secret) for b in warm], len(warm)
        )
        out.update(await bench.script_only(people))
        out["sequential"] = await bench.sequential(buyers, BATCH)
        out["runs"] = [
            await bench.end_to_end(buyers, BATCH),
            await bench.end_to_end(buyers, 100),
            await bench.end_to_end(buyers[:BATCH_ONE_RECORDS], 1),
        ]
    finally:
        out["keys_dropped"] = bench.dropped
        await bench.close()
    return out


def report(console: Console, args: argparse.Namespace, m: dict[str, Any], build_s: float) -> dict:
    runs = {r["batch"]: r for r in m["runs"]}
    headline = runs[BATCH]["per_second"]
    table = Table(
        title=f"Identity resolution speed — one process, local Redis on loopback, "
        f"{args.records} records (seed {args.seed})",
        box=box.SIMPLE_HEAVY,
        title_justify="left",
    )
    table.add_column("measure")
    table.add_column("records", justify="right")
    table.add_column("µs / record", justify="right")
    table.add_column("per second", justify="right")
    table.add_column("of which person_keys / rest µs", justify="right")
    table.add_column("goal", justify="right")
    rows = [
        ("person_keys, cold caches", args.records, m["person_keys_cold_us"]),
        ("person_keys, warm caches", min(WARM_RECORDS, args.records), m["person_keys_warm_us"]),
        (
            "  warm normalizers, person_keys itself uncached",
            min(WARM_RECORDS, args.records),
            m["person_keys_warm_normalizers_us"],
        ),
        (f"script call: IdentityGraph.resolve, batch {BATCH}", args.records, m["resolve_us"]),
        ("  of which bare EVALSHA (Redis + loopback)", args.records, m["evalsha_us"]),
    ]
    for name, n, us in rows:
        table.add_row(name, str(n), f"{us:.1f}", f"{1e6 / us:,.0f}", "", "")
    ends = [
        (f"end to end, batch {BATCH}", runs[BATCH]),
        ("  not overlapped (all keys, then one call)", m["sequential"]),
        ("end to end, batch 100", runs[100]),
        ("end to end, batch 1", runs[1]),
    ]
    for name, r in ends:
        goal = ""
        if r is runs[BATCH]:
            ok = r["per_second"] >= TARGET_RATE
            goal = f"[{'green' if ok else 'red'}]≥ {TARGET_RATE:,.0f}/s {'✓' if ok else '✗'}[/]"
        table.add_row(
            name,
            str(r["records"]),
            f"{r['us_per_record']:.1f}",
            f"{r['per_second']:,.0f}",
            f"{r['person_keys_us']:.1f} / {r['script_us']:.1f}",
            goal,
        )
    console.print(table)
    console.print(
        f"records built in {build_s:.1f} s · "
        f"identities (batch {BATCH} run): {runs[BATCH]['identities_assigned']} · "
        f"scratch keys dropped: {m['keys_dropped']}"
    )
    return {
        "records": args.records,
        "seed": args.seed,
        "resolutions_per_s": round(headline),
        "resolutions_per_s_batch_1000": round(runs[BATCH]["per_second"]),
        "resolutions_per_s_batch_100": round(runs[100]["per_second"]),
        "resolutions_per_s_batch_1": round(runs[1]["per_second"]),
        "resolutions_per_s_batch_1000_not_overlapped": round(m["sequential"]["per_second"]),
        "batch_1_records": runs[1]["records"],
        "us_per_record_end_to_end": round(runs[BATCH]["us_per_record"], 2),
        "end_to_end_person_keys_us": round(runs[BATCH]["person_keys_us"], 2),
        "end_to_end_script_us": round(runs[BATCH]["script_us"], 2),
        "person_keys_cold_us": round(m["person_keys_cold_us"], 2),
        "person_keys_warm_us": round(m["person_keys_warm_us"], 2),
        "person_keys_warm_normalizers_us": round(m["person_keys_warm_normalizers_us"], 2),
        "script_call_us": round(m["resolve_us"], 2),
        "evalsha_us": round(m["evalsha_us"], 2),
        "target_per_s": TARGET_RATE,
        "target_met": headline >= TARGET_RATE,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000, help="Records to resolve.")
    parser.add_argument("--seed", type=int, default=1, help="Seed of the simulated records.")
    args = parser.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    settings = load_settings()
    secret = settings.hash_key.get_secret_value().encode()
    start = time.perf_counter()
    buyers = records(args.records, args.seed)
    build_s = time.perf_counter() - start
    m = _run(measure(settings, buyers, secret))
    out = report(console, args, m, build_s)
    print(json.dumps(out, ensure_ascii=False))
    return out


if __name__ == "__main__":
    main()
