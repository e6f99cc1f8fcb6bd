"""A credit-default export of the public credit-card default data's design, for `shinsa eval`.

    .venv/bin/python -m tests.bench.credit_data OUT.csv [--clients 30000] [--seed 0]
    .venv/bin/shinsa eval OUT.csv --label default.payment.next.month --time STATEMENT_AT \
        --ignore ID --delay 30d

The public credit-default data (UCI "default of credit card clients", Taiwan 2005: 30,000
clients, 22 % defaults) is not on these machines; this writes data of its published design so
the online credit model can be set against batch baselines here. Same columns as the UCI file:

    ID, LIMIT_BAL, SEX (1 male, 2 female), EDUCATION (1 graduate school, 2 university,
    3 high school, 4 others, 5-6 unknown, 0), MARRIAGE (1 married, 2 single, 3 others, 0), AGE,
    PAY_0, PAY_2 .. PAY_6 (repayment status in September, August .. April: -2 no consumption,
    -1 paid duly, 0 revolving credit, 1 .. 8 months of delay), BILL_AMT1 .. 6 (statement
    balances, September .. April), PAY_AMT1 .. 6 (amounts paid in those months),
    default.payment.next.month (0/1)

plus STATEMENT_AT, which is NOT in the original (its rows have no time at all): a made-up time
for each client's row (read it as when the latest statement was drawn), uniform over six months
from 2005-04-01, independent of everything else, so that the rows can be replayed in time (the
data stay stationary: a split in time is a random split). A default is known about a month
after the statement: `--delay 30d`.

The latent model (amounts in NT$):
- demographics at the published shares (60 % women; 35 / 47 / 16 % graduate school, university,
  high school; 45 % married, more so with age; age 21-79, mean 35);
- a hidden financial strain per client, N(0, 1), that the observed columns only partly reveal;
- LIMIT_BAL log-normal (median 130k; higher with education and age, lower with strain), in
  steps of 10k, 10k .. 1M;
- a habit per client: inactive, transactor (pays in full most months) or revolver (pays part),
  the strained revolve a little more; a month-by-month delinquency chain (a missed payment makes
  a month of delay, a further miss two and more, paying up cures it; the strained miss more and
  cure less) started a month before April; a month without delay is -2 (nothing owed and
  nothing spent), -1 (paid in full) or 0 (paid part);
- balances carried month to month: last balance - payment, with interest when revolving and a
  fee when late, plus spending (a share of the limit, log-normal, correlated month to month;
  inactive clients rarely spend) up to the limit (fees may pass it); a few overpayments leave a
  negative balance; payments by status: the whole balance (-1), a log-normal part of it, ~8 %
  typically (0), half the late pay a little, the others nothing;
- default next month, logistic in: a step in the latest status (-2, -1 and 0 low, 0 lowest as
  published; 1 higher; 2 and more far higher), a further step when the delay persists (PAY_2 ≥ 2)
  and when a late client is also near the limit (an interaction), utilisation (balance / limit,
  steeper past 0.8), nothing paid on a balance, the log of the last two payments and their share
  of the balance, and weakly a low limit, age (young and old), education and sex; plus the hidden
  strain and a larger noise no column shows (a lost job). The intercept is solved for 22 %.

What is published of the original, and this data (seed 0): by PAY_0 -2 / -1 / 0 / 1 / ≥ 2,
13 / 17 / 13 / 34 / 70 % default (here 15 / 16 / 12 / 36 / 69 %), PAY_0 shares
9 / 19 / 49 / 12 / 10 % (here 9 / 19 / 51 / 8 / 13 %); logistic regression on the raw columns
~0.72-0.77 ROC AUC, gradient boosting ~0.78 (here, on a random half: 0.74 and 0.78).
Vectorised with numpy: the default size takes well under a second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

START = np.datetime64("2005-04-01T00:00:00", "s")
SPREAD_S = 183 * 86_400  # statement times: six months
MONTHS = 6  # index 0 is September (PAY_0, BILL_AMT1, PAY_AMT1), 5 is April
EDUCATION = ((1, 0.353), (2, 0.468), (3, 0.164), (4, 0.004), (5, 0.0093), (6, 0.0017), (0, 0.0))
INACTIVE, TRANSACTOR, REVOLVER = 0, 1, 2
DEFAULT_SHARE = 0.2212
LABEL = "default.payment.next.month"


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def demographics(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    sex = np.where(rng.random(n) < 0.396, 1, 2)
    values, shares = zip(*EDUCATION, strict=True)
    p = np.array(shares) + 0.0005  # a few 0s, as in the published file
    education = rng.choice(values, n, p=p / p.sum())
    age = np.clip(21 + rng.gamma(2.3, 6.3, n), 21, 79).astype(np.int64)
    married = rng.random(n) < sigmoid((age - 34) / 5) * 0.9
    marriage = np.where(married, 1, 2)
    marriage[rng.random(n) < 0.011 * (age / 35)] = 3
    marriage[rng.random(n) < 0.002] = 0
    return {"SEX": sex, "EDUCATION": education, "MARRIAGE": marriage, "AGE": age}


def history(
    rng: np.random.Generator, limit: np.ndarray, strain: np.ndarray, habit: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Six months of (status, balance, payment), September first, from a month before April."""
    n = len(limit)
    late = np.zeros(n, dtype=np.int64)  # months of delay
    spend_share = np.where(habit == REVOLVER, 0.06, 0.035) * np.exp(0.2 * strain)
    spend_share *= np.exp(rng.normal(0, 0.7, n))
    balance = limit * np.clip(spend_share * rng.uniform(1, 6, n), 0, 1.0)
    balance[habit == INACTIVE] *= rng.random((habit == INACTIVE).sum()) < 0.3
    shock = rng.normal(0, 0.6, n)  # the client's spending, correlated month to month
    status = np.empty((MONTHS, n), dtype=np.int64)
    bills = np.empty((MONTHS, n))
    paid = np.empty((MONTHS, n))
    for m in range(MONTHS + 1):  # m = 0: March, only to start the chain
        u = rng.random(n)
        miss = u < sigmoid(-2.3 + 0.8 * strain + 0.4 * (habit == REVOLVER))
        cure = u < sigmoid(np.where(late == 1, 1.1, -1.3) - 0.6 * strain)
        worse = u > 1 - np.where(late == 1, 0.0, 0.06)  # past two months: mostly stays
        owed = balance > 0
        late = np.where(
            late == 0,
            miss & owed,
            np.where(cure, 0, np.minimum(late + ((late == 1) | worse), 8)),
        )
        full = (habit == TRANSACTOR) & (rng.random(n) < 0.6) | (habit == INACTIVE)
        part = np.clip(rng.lognormal(np.log(0.08), 0.8, n), 0.02, 0.9)
        payment = np.where(
            late > 0,
            np.where(rng.random(n) < 0.5, balance * part * 0.3, 0.0),
            np.where(full, balance, balance * part),
        )
        payment = np.maximum(payment, 0)
        rate = np.where((late > 0) | ~full, 0.015, 0.0) + np.where(late > 0, 0.01, 0.0)
        shock = 0.8 * shock + 0.6 * rng.normal(0, 0.6, n)
        spends = rng.random(n) < np.where(habit == INACTIVE, 0.2, 0.92)
        spend = spends * limit * np.minimum(spend_share * np.exp(shock), 0.5)
        carried = (balance - payment) * (1 + rate)
        cap = np.where(late > 0, 1.1, 1.0) * limit  # spending stops at the limit, fees do not
        new_balance = np.maximum(np.minimum(carried + spend, cap), carried)
        overpaid = (late == 0) & full & (rng.random(n) < 0.03)  # a credit balance
        extra = rng.uniform(100, 5000, overpaid.sum())
        payment[overpaid] = np.maximum(balance[overpaid], 0) + extra
        new_balance[overpaid] = -extra
        current = np.where((balance <= 0) & (spend == 0), -2, np.where(full, -1, 0))
        if m > 0:
            month = MONTHS - m  # 5: April .. 0: September
            status[month] = np.where(late > 0, late, current)
            bills[month] = np.round(new_balance)
            paid[month] = np.round(payment)
        balance = new_balance
    return status, bills, paid


def default_logit(
    rng: np.random.Generator,
    cols: dict[str, np.ndarray],
    status: np.ndarray,
    bills: np.ndarray,
    paid: np.ndarray,
    strain: np.ndarray,
) -> np.ndarray:
    """The default's log-odds, up to the intercept."""
    pay0, pay2 = status[0], status[1]
    limit = cols["LIMIT_BAL"]
    utilisation = np.clip(bills[0] / limit, -0.2, 1.5)
    owed_before = np.maximum(bills[1], 0)
    paid_share = np.where(owed_before > 0, np.minimum(paid[0] / np.maximum(owed_before, 1), 1), 1)
    step = np.select(
        [pay0 <= -2, pay0 == -1, pay0 == 0, pay0 == 1], [0.1, 1.1, 0.0, 0.9], default=1.8
    )
    age = cols["AGE"]
    return (
        step
        + 0.5 * ((pay0 >= 2) & (pay2 >= 2))
        + 0.6 * ((pay0 >= 1) & (utilisation > 0.85))
        + 1.0 * utilisation
        + 1.5 * np.maximum(utilisation - 0.8, 0)
        - 0.3 * paid_share
        + 0.4 * ((paid[0] == 0) & (owed_before > 0))
        - 0.1 * np.log1p(paid[0])
        - 0.06 * np.log1p(paid[1])
        - 0.2 * np.log(limit / 140_000)
        + 0.035 * np.maximum(28 - age, 0)
        + 0.02 * np.maximum(age - 40, 0)
        + np.select(
            [cols["EDUCATION"] == 2, cols["EDUCATION"] == 3, cols["EDUCATION"] >= 4],
            [0.1, 0.15, -1.0],
            default=0.0,
        )
        + 0.12 * (cols["SEX"] == 1)
        + 0.6 * strain
        + rng.normal(0, 1.4, len(limit))  # what no column shows: a lost job, an illness
    )


def generate(clients: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = clients
    cols = demographics(rng, n)
    strain = rng.normal(0, 1, n)
    log_limit = (
        np.log(120_000)
        + 0.35 * (cols["EDUCATION"] == 1)
        - 0.3 * (cols["EDUCATION"] == 3)
        + 0.02 * np.clip(cols["AGE"] - 35, -14, 15)
        - 0.3 * strain
        + rng.normal(0, 0.7, n)
    )
    limit = np.clip(np.round(np.exp(log_limit) / 10_000) * 10_000, 10_000, 1_000_000)
    cols = {"LIMIT_BAL": limit, **cols}
    weights = np.stack([-0.1 - 0.1 * strain, 0.6 - 0.2 * strain, 1.3 + 0.1 * strain], axis=1)
    cumulative = np.cumsum(np.exp(weights), axis=1)
    habit = (rng.random(n)[:, None] * cumulative[:, -1:] > cumulative).sum(axis=1)
    status, bills, paid = history(rng, limit, strain, habit)
    logit = default_logit(rng, cols, status, bills, paid, strain)
    low, high = -15.0, 15.0
    for _ in range(50):  # the intercept for the published share of defaults
        mid = (low + high) / 2
        low, high = (mid, high) if sigmoid(logit + mid).mean() < DEFAULT_SHARE else (low, mid)
    default = rng.random(n) < sigmoid(logit + low)
    when = START + rng.integers(0, SPREAD_S, n).astype("timedelta64[s]")
    names = ["PAY_0", *(f"PAY_{m}" for m in range(2, MONTHS + 1))]
    return pa.table(
        {
            "ID": np.arange(1, n + 1),
            "LIMIT_BAL": limit.astype(np.int64),
            **{k: cols[k] for k in ("SEX", "EDUCATION", "MARRIAGE", "AGE")},
            **{name: status[m] for m, name in enumerate(names)},
            **{f"BILL_AMT{m + 1}": bills[m].astype(np.int64) for m in range(MONTHS)},
            **{f"PAY_AMT{m + 1}": paid[m].astype(np.int64) for m in range(MONTHS)},
            LABEL: default.astype(np.int8),
            "STATEMENT_AT": pa.array(np.datetime_as_string(when), pa.string()),
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--clients", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    table = generate(args.clients, args.seed)
    pa_csv.write_csv(table, args.output)
    share = table.column(LABEL).to_numpy().mean()
    print(
        f"{table.num_rows:,} clients, {share:.2%} default → {args.output} "
        f"({time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
