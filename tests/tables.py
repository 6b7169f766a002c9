"""Raw tables for the ``table`` kind's tests, as a user would bring them (made up, seeded).

:func:`customers` has every column role the inference must tell apart: a leading row index, an
id, numbers with missing values, a category, a yes/no boolean-like column, a real bool, a date,
free text, a constant, and three targets: ``churned`` (binary, ~25 % yes), ``plan_next``
(three classes) and ``spend_next`` (a real number). The targets depend on the features, so a
model can learn them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

WORDS = ["great", "slow", "support", "price", "app", "crash", "love", "cancel", "billing", "fast"]


def customers(n: int = 1200, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n).astype(float)
    monthly = np.round(rng.gamma(4.0, 15.0, n), 2)
    region = rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1])
    contract = rng.choice(["monthly", "yearly"], n, p=[0.6, 0.4])
    paperless = rng.choice(["yes", "no"], n)
    senior = rng.uniform(size=n) < 0.15
    signup = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D")
    comment = [" ".join(rng.choice(WORDS, rng.integers(5, 12))) for _ in range(n)]
    logit = (-0.6 - 0.05 * tenure + 0.015 * monthly + 1.2 * (contract == "monthly")
             + 0.5 * (region == "west") + 0.4 * senior - 1.0)
    churned = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    plan_score = 0.03 * monthly + 0.02 * tenure + rng.normal(0, 0.6, n) + (region == "north")
    plan_next = np.select([plan_score < 2.2, plan_score < 3.4], ["basic", "plus"], "premium")
    spend_next = np.round(monthly * (1 + 0.004 * tenure) + 8 * (contract == "yearly") + rng.normal(0, 4, n), 2)
    monthly_missing = monthly.copy()
    monthly_missing[rng.uniform(size=n) < 0.03] = np.nan
    return pd.DataFrame({
        "Unnamed: 0": np.arange(n),  # the row index pandas writes by default
        "customer_id": [f"C{100000 + i}" for i in rng.permutation(n)],
        "tenure_months": tenure,
        "monthly_charges": monthly_missing,
        "region": region,
        "contract": contract,
        "paperless": paperless,
        "senior": senior,
        "signup_date": signup.strftime("%Y-%m-%d"),
        "comment": comment,
        "country": "NL",
        "churned": churned,
        "plan_next": plan_next,
        "spend_next": spend_next,
    })


def write_csv(frame: pd.DataFrame, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, **kwargs)
    return path
