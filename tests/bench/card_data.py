"""A card-transaction export of the public benchmark's design, for `shinsa eval` (issue 15).

    .venv/bin/python -m tests.bench.card_data OUT.csv [--customers 5000] [--terminals 10000]
        [--days 183] [--seed 0]

The public card benchmark the model is judged on (1.75M transactions over six months, 0.84 %
fraud) is kept aside; this writes data of the same published design so that anyone can run the
same comparison here (numbers in README, "Model quality"):

- customers and terminals at random points of a 100 × 100 square; a customer pays at the
  terminals within radius 5, a Poisson number of times a day (mean 0–4), around midday, amounts
  normal around the customer's own mean (5–100) with a spread of half of it;
- fraud 1: any amount above 220;
- fraud 2: every day two terminals are compromised: all their transactions of the next 28 days
  are fraud (only a terminal's known frauds can reveal it);
- fraud 3: every day three customers' credentials leak: a third of their transactions of the
  next 14 days are fraud, with the amount multiplied by 5 (the customer's habits reveal it).

Columns: TX_ID, TX_DATETIME, CUSTOMER, TERMINAL, TX_AMOUNT, TX_FRAUD, and TX_SCENARIO (which
fraud, 0 for none: pass it as `--pattern TX_SCENARIO` so it is reported, never learned).
Vectorised with numpy: the default size takes a few seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

START = np.datetime64("2026-04-01T00:00:00", "s")
DAY_S = 86_400
RADIUS = 5.0


def customer_terminals(
    customers: np.ndarray, terminals: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's reachable terminals, flattened: (offsets into `flat`, flat ids)."""
    lists = []
    for start in range(0, len(customers), 500):  # a 500 × 10,000 distance block at a time
        block = customers[start : start + 500]
        dist = np.hypot(
            block[:, None, 0] - terminals[None, :, 0], block[:, None, 1] - terminals[None, :, 1]
        )
        lists.extend(np.flatnonzero(row < radius) for row in dist)
    sizes = np.array([len(x) for x in lists])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return offsets, np.concatenate(lists) if lists else np.array([], dtype=np.int64)


def generate(customers: int, terminals: int, days: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    where_c = rng.uniform(0, 100, (customers, 2))
    mean_amount = rng.uniform(5, 100, customers)
    std_amount = mean_amount / 2
    per_day = rng.uniform(0, 4, customers)
    where_t = rng.uniform(0, 100, (terminals, 2))
    offsets, flat = customer_terminals(where_c, where_t, RADIUS)
    reachable = np.diff(offsets)

    counts = rng.poisson(per_day[:, None], (customers, days))
    cust = np.repeat(np.repeat(np.arange(customers), days), counts.ravel())
    day = np.repeat(np.tile(np.arange(days), customers), counts.ravel())
    second = rng.normal(DAY_S / 2, 20_000, len(cust))
    amount = rng.normal(mean_amount[cust], std_amount[cust])
    low = amount < 0
    amount[low] = rng.uniform(0, mean_amount[cust[low]] * 2)
    keep = (second > 0) & (second < DAY_S) & (reachable[cust] > 0)
    cust, day, second, amount = cust[keep], day[keep], second[keep].astype(np.int64), amount[keep]
    pick = (rng.random(len(cust)) * reachable[cust]).astype(np.int64)
    term = flat[offsets[cust] + pick]
    amount = np.round(amount, 2)

    t_order = np.lexsort((second, day))
    cust, day, second, amount, term = (a[t_order] for a in (cust, day, second, amount, term))
    scenario = np.zeros(len(cust), dtype=np.int8)
    scenario[amount > 220] = 1
    for d in range(days):
        hit = np.isin(term, rng.choice(terminals, 2, replace=False))
        scenario[hit & (day >= d) & (day < d + 28)] = 2
    for d in range(days):
        leaked = rng.choice(customers, 3, replace=False)
        rows = np.flatnonzero(np.isin(cust, leaked) & (day >= d) & (day < d + 14))
        chosen = rng.choice(rows, len(rows) // 3, replace=False)
        amount[chosen] = np.round(amount[chosen] * 5, 2)
        scenario[chosen] = 3
    when = START + (day * DAY_S + second).astype("timedelta64[s]")
    return pa.table(
        {
            "TX_ID": np.arange(len(cust)),
            "TX_DATETIME": pa.array(np.datetime_as_string(when), pa.string()),
            "CUSTOMER": cust,
            "TERMINAL": term,
            "TX_AMOUNT": amount,
            "TX_FRAUD": (scenario > 0).astype(np.int8),
            "TX_SCENARIO": scenario,
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    table = generate(args.customers, args.terminals, args.days, args.seed)
    pa_csv.write_csv(table, args.output)
    fraud = table.column("TX_FRAUD").to_numpy().mean()
    print(
        f"{table.num_rows:,} transactions, {fraud:.2%} fraud → {args.output} "
        f"({time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
