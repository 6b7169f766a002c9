"""Incoming fraud batches from the simulator, drifted on request (``deepflow.drift.make_batch``).

A batch is one week of transactions (so weekends weigh what they weigh in the reference's
training week), after enough simulated history for every window feature to be warm
(``delay_days`` + 30 days), with the same features ``prepare.add_features`` computes for
training. ``drift`` in [0, 1] scales four shifts together:

* amounts: every amount x ``1 + drift`` (inflation, a new customer segment); the handbook's
  "amount > 220 is fraud" rule is applied again afterwards, so the labels stay consistent;
* time of day: ``0.25 * drift`` of the transactions moved into the night (00:00-06:00);
* terminals: ``n_terminals / (1 + drift)`` (a consolidated acquirer network: each terminal sees
  more transactions);
* fraud: compromised terminals and cards per day x ``1 + 2 * drift``.

drift=0 is the reference's simulator with another seed: same distribution, new transactions.
The batch holds ids, time and the feature columns; labels are left out (they arrive late).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from deepflow.drift.batches import batch_name, write_parquet
from deepflow.usecases.fraud.prepare import FEATURES, add_features
from deepflow.usecases.fraud.simulate import DAY_S, SimulationParams, simulate

WINDOW_DAYS = 7
LONGEST_WINDOW = 30  # days, the longest feature window (prepare.WINDOWS)
NIGHT_S = 6 * 3600
IDS = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID"]
TX_PER_CUSTOMER_DAY = 1.9  # the simulator's mean daily count U(0, 4), less draws outside the day


def base_params() -> tuple[SimulationParams, int]:
    """The DVC stages' simulator params and label delay (the reference's data)."""
    from deepflow.settings import stage_params

    return SimulationParams(**stage_params("fraud.simulate")), int(stage_params("fraud.prepare")["delay_days"])


def drifted_params(base: SimulationParams, drift: float, seed: int, n_days: int) -> SimulationParams:
    return replace(base, seed=base.seed + 1000 + seed, n_days=n_days,
                   n_terminals=max(1, round(base.n_terminals / (1 + drift))),
                   terminals_per_day=round(base.terminals_per_day * (1 + 2 * drift)),
                   customers_per_day=round(base.customers_per_day * (1 + 2 * drift)))


def transactions(base: SimulationParams, delay_days: int, rows: int, drift: float, seed: int) -> pd.DataFrame:
    """Featured transactions of the last whole weeks of a drifted simulation, ``rows`` of them
    (fewer only if the simulated weeks hold fewer)."""
    weeks = max(1, math.ceil(rows / (0.9 * TX_PER_CUSTOMER_DAY * WINDOW_DAYS * base.n_customers)))
    warm = delay_days + LONGEST_WINDOW
    p = drifted_params(base, drift, seed, warm + weeks * WINDOW_DAYS)
    tx = simulate(p)
    rng = np.random.default_rng([p.seed, 7])
    if drift > 0:
        tx = _shift(tx, p, drift, rng)
    featured = add_features(tx, delay_days=delay_days)
    window = featured[featured["TX_TIME_DAYS"] >= warm]
    if len(window) > rows:
        window = window.iloc[np.sort(rng.choice(len(window), size=rows, replace=False))]
    return window.reset_index(drop=True)


def _shift(tx: pd.DataFrame, p: SimulationParams, drift: float, rng: np.random.Generator) -> pd.DataFrame:
    tx = tx.copy()
    amount = np.round(tx["TX_AMOUNT"].to_numpy() * (1 + drift), 2)
    seconds = tx["TX_TIME_SECONDS"].to_numpy().copy()
    night = rng.random(len(tx)) < 0.25 * drift
    seconds[night] = (seconds[night] // DAY_S) * DAY_S + rng.integers(0, NIGHT_S, size=int(night.sum()))
    big = (amount > p.amount_threshold) & (tx["TX_FRAUD"].to_numpy() == 0)
    tx["TX_AMOUNT"] = amount
    tx["TX_TIME_SECONDS"] = seconds
    tx["TX_DATETIME"] = pd.Timestamp(p.start_date) + pd.to_timedelta(seconds, unit="s")
    tx.loc[big, "TX_FRAUD"], tx.loc[big, "TX_FRAUD_SCENARIO"] = 1, 1
    tx = tx.sort_values("TX_TIME_SECONDS", kind="stable").reset_index(drop=True)
    tx["TRANSACTION_ID"] = np.arange(len(tx), dtype=np.int64)
    return tx


def make_batch(name: str, out_dir: Path, *, rows: int, drift: float, seed: int, base: SimulationParams | None = None,
               delay_days: int | None = None) -> Path:
    """Write ``<name>-n<rows>-drift<d>-seed<s>.parquet``: ids, time and the 15 features.
    ``base``/``delay_days``: the reference's simulator params (default: ``params.yaml``)."""
    if base is None or delay_days is None:
        stage_base, stage_delay = base_params()
        base = base or stage_base
        delay_days = stage_delay if delay_days is None else delay_days
    frame = transactions(base, delay_days, rows, drift, seed)
    return write_parquet(frame[IDS + list(FEATURES)], out_dir / batch_name(name, rows, drift, seed))
