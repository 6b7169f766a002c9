"""Dataset entries for tests: a private datasets folder, and entry files written as a user would."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from deepflow import settings


def private_datasets(folder: Path) -> Path:
    """A copy of the shipped entries in ``folder`` (point DEEPFLOW_DATASETS_DIR at it)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (settings.PROJECT_ROOT / "datasets").glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    return folder


def write_entry(folder: Path, name: str, kind: str, config: dict[str, Any], **top: Any) -> Path:
    """``datasets/<name>.yaml`` with ``kind``, ``config`` and any other top-level keys."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"kind": kind, **top, "config": config}, sort_keys=False))
    return path


# A made-up three-class text dataset (tests/nlp_toy.py) as its own entry, small-run settings.
TOPICS_CONFIG: dict[str, Any] = {
    "labels": ["weather", "sport", "money"], "positive": None, "min_class_share": 0.2, "max_class_share": 0.5,
    "candidates": ["shallow"], "baselines": ["tfidf_lr"], "train": {"epochs": 4},
    "promotion": {"floor": 0.5, "noninferiority": {"mcc": 0.05}},
}


LOANS_FEATURES = ["income_k", "debt_ratio", "age", "open_accounts", "utilization", "late_payments"]


def loans_splits(n: int = 3000, seed: int = 7) -> dict[str, Any]:
    """A second tabular schema, nothing like transactions: loan applications with a seeded
    logistic default risk (about 15 % defaults), split 60/20/20 at random."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "application_id": np.arange(n),
        "income_k": rng.lognormal(3.8, 0.5, n),
        "debt_ratio": rng.beta(2, 5, n),
        "age": rng.integers(18, 80, n).astype(float),
        "open_accounts": rng.poisson(4, n).astype(float),
        "utilization": rng.uniform(0, 1, n),
        "late_payments": rng.poisson(0.6, n).astype(float),
    })
    logit = (-4.2 + 3.0 * frame["debt_ratio"] + 1.8 * frame["utilization"] + 0.9 * frame["late_payments"]
             - 0.015 * (frame["income_k"] - 45) - 0.01 * (frame["age"] - 40))
    frame["defaulted"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    order = rng.permutation(n)
    cut = [int(n * 0.6), int(n * 0.8)]
    parts = dict(zip(("train", "val", "test"), np.split(order, cut), strict=True))
    return {name: frame.iloc[idx].reset_index(drop=True) for name, idx in parts.items()}


LOANS_CONFIG: dict[str, Any] = {
    "label": "defaulted", "class_names": ["repaid", "defaulted"], "id_column": "application_id",
    "features": LOANS_FEATURES, "nonnegative": ["income_k", "open_accounts", "late_payments"],
    "unit_interval": ["debt_ratio", "utilization"], "positive_rate_min": 0.02, "positive_rate_max": 0.6,
    "candidates": ["shallow", "deep"], "baselines": ["logistic_regression"],
    "train": {"epochs": 4, "batch_size": 256}, "promotion": {"floor": 0.2},
}
