"""PaySim -> the fraud pipeline's shape (DVC stage ``paysim_prepare``).

A second, real transaction schema: features from type, amount and balances; split by time
(``step``, one hour each). ``isFlaggedFraud`` is the legacy rule's output, never an input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

TYPES = ("TRANSFER", "CASH_OUT", "PAYMENT", "CASH_IN", "DEBIT")
BALANCES = ["oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest"]
FEATURES = [
    *[f"TYPE_{t}" for t in TYPES],
    "amount",
    "LOG_AMOUNT",
    *BALANCES,
    "ERROR_BALANCE_ORIG",
    "ERROR_BALANCE_DEST",
]


def prepare(raw: pd.DataFrame, train_frac: float = 0.7, val_frac: float = 0.15) -> dict[str, pd.DataFrame]:
    df = pd.DataFrame({
        "TRANSACTION_ID": np.arange(len(raw), dtype=np.int64),
        "TX_DATETIME": pd.Timestamp("2018-01-01") + pd.to_timedelta(raw["step"], unit="h"),
        "CUSTOMER_ID": raw["nameOrig"].astype(str),
        "TX_FRAUD": raw["isFraud"].astype(np.int8),
    })
    for t in TYPES:
        df[f"TYPE_{t}"] = (raw["type"] == t).astype(np.int8)
    df["amount"] = raw["amount"].astype(float)
    df["LOG_AMOUNT"] = np.log1p(df["amount"])
    for col in BALANCES:
        df[col] = raw[col].astype(float)
    df["ERROR_BALANCE_ORIG"] = raw["newbalanceOrig"] + raw["amount"] - raw["oldbalanceOrg"]
    df["ERROR_BALANCE_DEST"] = raw["oldbalanceDest"] + raw["amount"] - raw["newbalanceDest"]
    df = df.sort_values(["TX_DATETIME", "TRANSACTION_ID"], kind="stable")
    steps = np.sort(raw["step"].to_numpy())  # one entry per row: cuts by share of rows
    cut_train = steps[int(len(steps) * train_frac)]
    cut_val = steps[int(len(steps) * (train_frac + val_frac))]
    hours = (df["TX_DATETIME"] - pd.Timestamp("2018-01-01")) // pd.Timedelta(hours=1)
    return {
        "train": df[hours < cut_train],
        "val": df[(hours >= cut_train) & (hours < cut_val)],
        "test": df[hours >= cut_val],
    }


def main() -> None:
    from deepflow.settings import stage_params

    parser = argparse.ArgumentParser(description="PaySim features and split")
    parser.add_argument("--src", type=Path, default=Path("data/external/paysim/paysim_sample.csv"))
    parser.add_argument("--out", type=Path, default=Path("data/prepared/paysim"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, frame in prepare(pd.read_csv(args.src), **stage_params("paysim.prepare")).items():
        frame.to_parquet(args.out / f"{name}.parquet", index=False)
        print(f"{name}: {len(frame):,} rows, fraud rate {frame.TX_FRAUD.mean():.4f}")


if __name__ == "__main__":
    main()
