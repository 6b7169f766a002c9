"""Seeded, vectorised card-transaction simulator.

Follows the design of *Reproducible Machine Learning for Credit Card Fraud Detection -
Practical Handbook* (Le Borgne et al., ULB, 2022), chapter 3 "Transaction data simulator",
implemented here from its description:

* customers: home on a 100x100 grid, mean amount U(5, 100) with std = mean/2, mean daily
  transaction count U(0, 4), daily count Poisson;
* terminals: uniform on the same grid; a customer uses the terminals within radius ``r`` of home,
  one chosen uniformly per transaction;
* time of day ~ N(noon, 20 000 s) (draws outside the day discarded); amount ~ N(mean, std),
  negatives redrawn from U(0, 2 * mean);
* fraud: (1) every amount > 220; (2) each day 2 random terminals compromised for 28 days;
  (3) each day 3 random customers compromised for 14 days, a third of their transactions get
  their amount x5 and are fraud.

Run as a DVC stage: ``python -m deepflow.usecases.fraud.simulate`` (params ``fraud.simulate``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DAY_S = 86_400


@dataclass(frozen=True)
class SimulationParams:
    n_customers: int = 5_000
    n_terminals: int = 10_000
    n_days: int = 183
    start_date: str = "2018-04-01"
    radius: float = 5.0
    seed: int = 0
    amount_threshold: float = 220.0  # scenario 1
    terminals_per_day: int = 2  # scenario 2
    terminal_days: int = 28
    customers_per_day: int = 3  # scenario 3
    customer_days: int = 14


def simulate(p: SimulationParams) -> pd.DataFrame:
    """Return one row per transaction, time-ordered, with labels and fraud scenario."""
    rng = np.random.default_rng(p.seed)
    cust_xy = rng.uniform(0, 100, size=(p.n_customers, 2))
    mean_amount = rng.uniform(5, 100, size=p.n_customers)
    std_amount = mean_amount / 2
    mean_per_day = rng.uniform(0, 4, size=p.n_customers)
    term_xy = rng.uniform(0, 100, size=(p.n_terminals, 2))

    # Terminals within the radius of each customer, as a CSR-like (offsets, flat indices) pair.
    neighbours = _terminals_within(cust_xy, term_xy, p.radius)
    n_avail = np.array([len(n) for n in neighbours])
    offsets = np.concatenate([[0], np.cumsum(n_avail)[:-1]])
    flat = np.concatenate(neighbours) if n_avail.sum() else np.zeros(0, dtype=np.int64)

    counts = rng.poisson(mean_per_day[:, None], size=(p.n_customers, p.n_days))  # (C, D)
    counts[n_avail == 0] = 0  # a customer with no terminal in reach never transacts
    cell = np.repeat(np.arange(counts.size), counts.ravel())
    customer, day = cell // p.n_days, cell % p.n_days

    tod = rng.normal(DAY_S / 2, 20_000, size=len(cell)).astype(np.int64)
    keep = (tod > 0) & (tod < DAY_S)
    customer, day, tod = customer[keep], day[keep], tod[keep]
    n = len(customer)

    amount = rng.normal(mean_amount[customer], std_amount[customer])
    neg = amount < 0
    amount[neg] = rng.uniform(0, 2 * mean_amount[customer[neg]])
    amount = np.round(amount, 2)

    pick = np.floor(rng.uniform(size=n) * n_avail[customer]).astype(np.int64)
    terminal = flat[offsets[customer] + pick]

    seconds = day * DAY_S + tod
    order = np.argsort(seconds, kind="stable")
    customer, terminal, amount, seconds, day = (
        a[order] for a in (customer, terminal, amount, seconds, day)
    )

    fraud = np.zeros(n, dtype=np.int8)
    scenario = np.zeros(n, dtype=np.int8)
    big = amount > p.amount_threshold
    fraud[big], scenario[big] = 1, 1

    by_terminal = _Index(terminal, p.n_terminals)
    for d in range(p.n_days):
        for t in rng.choice(p.n_terminals, size=p.terminals_per_day, replace=False):
            rows = by_terminal.rows(t)
            rows = rows[(day[rows] >= d) & (day[rows] < d + p.terminal_days)]
            fraud[rows], scenario[rows] = 1, 2

    by_customer = _Index(customer, p.n_customers)
    for d in range(p.n_days):
        chosen = rng.choice(p.n_customers, size=p.customers_per_day, replace=False)
        rows = np.concatenate([by_customer.rows(c) for c in chosen])
        rows = rows[(day[rows] >= d) & (day[rows] < d + p.customer_days)]
        hit = rng.choice(rows, size=len(rows) // 3, replace=False) if len(rows) else rows
        amount[hit] = np.round(amount[hit] * 5, 2)
        fraud[hit], scenario[hit] = 1, 3

    start = pd.Timestamp(p.start_date)
    return pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(n, dtype=np.int64),
            "TX_DATETIME": start + pd.to_timedelta(seconds, unit="s"),
            "CUSTOMER_ID": customer.astype(np.int64),
            "TERMINAL_ID": terminal.astype(np.int64),
            "TX_AMOUNT": amount,
            "TX_TIME_SECONDS": seconds.astype(np.int64),
            "TX_TIME_DAYS": day.astype(np.int64),
            "TX_FRAUD": fraud,
            "TX_FRAUD_SCENARIO": scenario,
        }
    )


def _terminals_within(cust_xy: np.ndarray, term_xy: np.ndarray, radius: float) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for start in range(0, len(cust_xy), 512):  # (512, T) distance blocks keep memory small
        block = cust_xy[start : start + 512]
        d2 = ((block[:, None, :] - term_xy[None, :, :]) ** 2).sum(-1)
        out.extend(np.flatnonzero(row < radius**2) for row in d2)
    return out


class _Index:
    """Row positions grouped by an integer key (a sort plus offsets)."""

    def __init__(self, keys: np.ndarray, n_keys: int) -> None:
        self.order = np.argsort(keys, kind="stable")
        self.bounds = np.searchsorted(keys[self.order], np.arange(n_keys + 1))

    def rows(self, key: int) -> np.ndarray:
        return self.order[self.bounds[key] : self.bounds[key + 1]]


def main() -> None:
    from deepflow.settings import stage_params

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/interim/fraud/transactions.parquet"))
    args = parser.parse_args()
    params = SimulationParams(**stage_params("fraud.simulate"))
    df = simulate(params)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(args.out, index=False)
    print(f"{len(df):,} transactions, fraud rate {df.TX_FRAUD.mean():.4f} -> {args.out}")


if __name__ == "__main__":
    main()
