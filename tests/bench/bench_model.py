"""Model speed: per-order cost of building features and scoring, and of learning, per estimator.

    .venv/bin/python -m tests.bench.bench_model [--orders 20000] [--seed 1]     (`make bench`)

Needs the local Redis (`shinsa stack up`): identities come from the real graph, in a scratch
namespace, exactly as `shinsa eval` prepares them. Everything the scorer gets from upstream
stages is built beforehand and not timed: attributes, identity, enrichment and each identity's
history of earlier orders. Then, for each estimator, orders are replayed in event-time order:

- features + score: `order_features(enriched, history, entities)` with the known risk of the
  order's identity, merchant and device (agents/entities.py; their states kept in memory, as
  the batch gets them from its one Redis read), then `ModelState.score(x)`, timed together per
  order (the scorer's work per order; goal: median ≤ 200 µs), and apart;
- learn: `ModelState.learn(x, label, prior_score)` per labelled order, right after its score
  (the learner's work per label; with no delay the model grows as fast as it can, so later
  orders meet the largest model).

Prints a rich table, then one JSON line with every number (µs, median and p99).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from agents.entities import (
    ORDER_ACTIVITY,
    EntityState,
    entity_values,
    known_risk,
    order_entities,
)
from agents.features import order_features
from agents.model import ESTIMATORS, ModelState
from streams.codec import SchemaRegistry
from streams.settings import load_settings
from streams.tools.backtest import enriched_orders, read_simulated, resolve_identities
from streams.tools.demo import percentile
from streams.tools.publish import write_events
from streams.tools.simulate import SimConfig, Simulator

TARGET_US = 200.0  # median features + score per order
END = datetime(2026, 11, 1, tzinfo=UTC)


def prepare(orders: int, seed: int) -> tuple[list[tuple[Any, list]], list[int | None]]:
    """Enriched orders with their identity histories, and labels, in event-time order."""
    settings = load_settings()
    events = list(Simulator(SimConfig(orders=orders, seed=seed, days=60, end=END)).events())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sim.jsonl"
        write_events(events, path)
        sim = read_simulated(path, SchemaRegistry(settings.schema_dir))
    identities = resolve_identities(sim.orders, settings)
    prepared = list(enriched_orders(sim, identities))
    labels = [sim.labels.get(o.order_id, (None, 0))[0] for o in sim.orders]
    return prepared, labels


def stats(ns: Sequence[int]) -> dict[str, float]:
    us = [n / 1000 for n in ns]
    return {"median": statistics.median(us), "p99": percentile(us, 0.99), "n": len(us)}


def measure(kind: str, prepared: list[tuple[Any, list]], labels: list[int | None]) -> dict:
    """One pass over the orders: time features (entity history and known risk included, from
    in-memory entity states as the batch core gets them from Redis), score and learn."""
    model = ModelState(kind=kind)
    states: dict[tuple[str, str], EntityState] = {}
    clock = time.perf_counter_ns
    features_ns, score_ns, both_ns, learn_ns = [], [], [], []
    for (enriched, history), label in zip(prepared, labels, strict=True):
        order = enriched.order
        at_ms = int(order.event_time.timestamp() * 1000)
        keys = order_entities(enriched.identity["identity_id"], order.merchant_id, order.device_id)
        seen = [(k[0], states.get(k)) for k in keys]
        t0 = clock()
        x = order_features(enriched, history, 0, [e for e in seen if e[0] in ORDER_ACTIVITY])
        x |= known_risk(seen, at_ms)
        t1 = clock()
        score = model.score(x)
        t2 = clock()
        features_ns.append(t1 - t0)
        score_ns.append(t2 - t1)
        both_ns.append(t2 - t0)
        for key in keys:
            if key[0] in ORDER_ACTIVITY:
                values = entity_values(key[0], order.amount, x)
                states.setdefault(key, EntityState()).record(at_ms, values)
        if label is not None:
            t3 = clock()
            model.learn(x, label, prior_score=score)
            learn_ns.append(clock() - t3)
            for key in keys:
                states.setdefault(key, EntityState()).learn(at_ms, label)
    return {
        "features_score_us": stats(both_ns),
        "features_us": stats(features_ns),
        "score_us": stats(score_ns),
        "learn_us": stats(learn_ns),
    }


def report(console: Console, orders: int, results: dict[str, dict]) -> dict[str, Any]:
    table = Table(
        "estimator",
        "features+score median µs",
        "p99 µs",
        "features median",
        "score median",
        "learn median µs",
        "p99 µs",
        box=box.SIMPLE_HEAD,
        title=f"model cost per order ({orders} simulated orders; goal: features+score median "
        f"≤ {TARGET_US:.0f} µs)",
    )
    for kind, r in results.items():
        table.add_row(
            kind,
            f"{r['features_score_us']['median']:.1f}",
            f"{r['features_score_us']['p99']:.1f}",
            f"{r['features_us']['median']:.1f}",
            f"{r['score_us']['median']:.1f}",
            f"{r['learn_us']['median']:.1f}",
            f"{r['learn_us']['p99']:.1f}",
        )
    console.print(table)
    return {
        "orders": orders,
        "target_features_score_median_us": TARGET_US,
        "meets_target": {
            k: r["features_score_us"]["median"] <= TARGET_US for k, r in results.items()
        },
        "estimators": results,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20_000, help="Simulated orders.")
    parser.add_argument("--seed", type=int, default=1, help="Simulator seed.")
    parser.add_argument(
        "--estimator", action="append", choices=ESTIMATORS, help="Only these (repeatable)."
    )
    args = parser.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    with console.status("simulating, resolving identities, enriching"):
        prepared, labels = prepare(args.orders, args.seed)
    results = {}
    for kind in args.estimator or ESTIMATORS:
        with console.status(f"timing {kind}"):
            results[kind] = measure(kind, prepared, labels)
    out = report(console, len(prepared), results)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
