"""Fraud features and the frozen train/val/test split (DVC stage ``fraud_prepare``).

Features are the handbook's baseline set (chapter 3.4): weekend and night flags; per customer
the count and mean amount over the last 1, 7 and 30 days; per terminal the count and fraud risk
over 1, 7 and 30 days, *shifted back by the label delay*, because fraud labels arrive late.

Split (the handbook's protocol): train on ``train_days`` from ``train_start``; the following
``delay_days`` are the validation window (used only for early stopping and model choice); the
``test_days`` after them are the test window. Evaluation days drop every customer already known
to be compromised (a fraud observed before ``max(day - delay, train_end)``).

Every split row also carries its card's last ``history`` transactions as flat ``PREV{k}_*``
columns (``sequences.py``), looked up in the whole table before splitting, so that history
crosses split boundaries the way it does in production.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepflow.kinds.tabular import sequences

DAY_S = 86_400
WINDOWS = (1, 7, 30)

FEATURES = [
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    *[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW" for w in WINDOWS],
    *[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW" for w in WINDOWS],
    *[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW" for w in WINDOWS],
    *[f"TERMINAL_ID_RISK_{w}DAY_WINDOW" for w in WINDOWS],
]


@dataclass(frozen=True)
class SplitParams:
    train_start: str = "2018-07-25"
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7
    history: int = 5  # previous transactions of the card attached to each row (sequence models)


def rolling_sum(group: np.ndarray, seconds: np.ndarray, values: np.ndarray, window_s: int) -> np.ndarray:
    """Per row: sum of ``values`` of the same group with time in ``(t - window_s, t]``.

    Rows must be time-ordered; ties count the rows up to and including the current one
    (what pandas' time-based ``rolling`` does).
    """
    order = np.lexsort((np.arange(len(group)), seconds, group))  # by group, time, position
    key = group[order].astype(np.int64) * (1 << 36) + seconds[order].astype(np.int64)
    csum = np.concatenate([[0.0], np.cumsum(values[order], dtype=np.float64)])
    left = np.searchsorted(key, key - window_s, side="right")
    out = np.empty(len(group), dtype=np.float64)
    out[order] = csum[np.arange(1, len(key) + 1)] - csum[left]
    return out


def add_features(tx: pd.DataFrame, delay_days: int = 7) -> pd.DataFrame:
    """Return ``tx`` (time-ordered) with the baseline feature columns added."""
    out = tx.copy()
    dt = out["TX_DATETIME"]
    out["TX_DURING_WEEKEND"] = (dt.dt.day_of_week >= 5).astype(np.int8)
    out["TX_DURING_NIGHT"] = (dt.dt.hour <= 6).astype(np.int8)

    t = out["TX_TIME_SECONDS"].to_numpy()
    ones = np.ones(len(out))
    cust = out["CUSTOMER_ID"].to_numpy()
    amount = out["TX_AMOUNT"].to_numpy()
    for w in WINDOWS:
        n = rolling_sum(cust, t, ones, w * DAY_S)
        s = rolling_sum(cust, t, amount, w * DAY_S)
        out[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = n
        out[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = s / n  # n >= 1: the row itself counts

    term = out["TERMINAL_ID"].to_numpy()
    fraud = out["TX_FRAUD"].to_numpy().astype(np.float64)
    d = delay_days * DAY_S
    n_delay = rolling_sum(term, t, ones, d)
    f_delay = rolling_sum(term, t, fraud, d)
    for w in WINDOWS:
        n_win = rolling_sum(term, t, ones, d + w * DAY_S) - n_delay
        f_win = rolling_sum(term, t, fraud, d + w * DAY_S) - f_delay
        out[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = n_win
        out[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = np.divide(
            f_win, n_win, out=np.zeros_like(f_win), where=n_win > 0
        )
    return out


def split(df: pd.DataFrame, p: SplitParams) -> dict[str, pd.DataFrame]:
    """Cut the train, validation (delay window) and test windows; drop known-compromised cards."""
    day0 = pd.Timestamp(p.train_start)
    days = (df["TX_DATETIME"] - day0).dt.days.to_numpy()  # 0 = first training day
    train_end = p.train_days
    train = df[(days >= 0) & (days < train_end)]

    fraud_days = days[(df["TX_FRAUD"] == 1).to_numpy() & (days >= 0)]
    fraud_customers = df["CUSTOMER_ID"].to_numpy()[(df["TX_FRAUD"] == 1).to_numpy() & (days >= 0)]

    def evaluation_window(first: int, n_days: int) -> pd.DataFrame:
        parts = []
        for day in range(first, first + n_days):
            known = set(fraud_customers[fraud_days < max(day - p.delay_days, train_end)])
            rows = df[(days == day) & ~df["CUSTOMER_ID"].isin(known).to_numpy()]
            parts.append(rows)
        return pd.concat(parts)

    val = evaluation_window(train_end, p.delay_days)
    test = evaluation_window(train_end + p.delay_days, p.test_days)
    return sequences.with_history(df, {"train": train, "val": val, "test": test}, FEATURES, p.history)


def main() -> None:
    from deepflow.settings import stage_params

    parser = argparse.ArgumentParser(description="fraud features and split")
    parser.add_argument("--src", type=Path, default=Path("data/interim/fraud/transactions.parquet"))
    parser.add_argument("--out", type=Path, default=Path("data/prepared/fraud"))
    args = parser.parse_args()
    params = stage_params("fraud.prepare")
    tx = pd.read_parquet(args.src)
    feats = add_features(tx, delay_days=params["delay_days"])
    args.out.mkdir(parents=True, exist_ok=True)
    for name, frame in split(feats, SplitParams(**params)).items():
        frame.to_parquet(args.out / f"{name}.parquet", index=False)
        print(f"{name}: {len(frame):,} rows, fraud rate {frame.TX_FRAUD.mean():.4f}")


if __name__ == "__main__":
    main()
