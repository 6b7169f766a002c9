"""The leakage check: does one feature alone predict the target almost perfectly?

A column written after the fact (a cancellation date next to ``churned``, the amount refunded next
to a chargeback flag, a copy of the target with noise) makes a model that looks perfect and is
useless. Each feature is tried on its own: a small decision tree on that one column (for a
category: its per-category answer, what a full tree on it would learn) fitted on 70 % of at most
20,000 rows and scored on the other 30 %. A score at or above :data:`LEAK_SCORE` (ROC-AUC for
binary, macro-F1 for multiclass, R² for regression) makes the column a ``leak``: not a feature
unless the entry sets its role back.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepflow.kinds.table.roles import as_numbers, parse_datetime

LEAK_SCORE = 0.99
SAMPLE_ROWS = 20_000
MIN_ROWS = 50  # fewer rows cannot tell a leak from luck
METRIC = {"binary": "ROC-AUC", "multiclass": "macro-F1", "regression": "R²"}


def scores(frame: pd.DataFrame, roles: dict[str, str], target: pd.Series, task: str, positive: str | None,
           seed: int = 0) -> dict[str, float]:
    """Held-out score of each feature alone (``roles``: feature -> role); {} when too few rows.

    ``target`` holds class names (classification) or numbers (regression), aligned with ``frame``.
    """
    if len(frame) < MIN_ROWS:
        return {}
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(frame), SAMPLE_ROWS, replace=False)) if len(frame) > SAMPLE_ROWS else None
    if rows is not None:
        frame, target = frame.iloc[rows], target.iloc[rows]
    y = target.to_numpy()
    train, test = _holdout(y, task, seed)
    if len(test) == 0 or (task != "regression" and len(np.unique(y[train])) < 2):
        return {}
    found = {}
    for name, role in roles.items():
        col = frame[name]
        if role == "categorical":
            predicted = _lookup(col.astype("str").fillna("\x00missing").to_numpy(), y, train, test, task, positive)
        else:
            predicted = _tree(_numbers(col, role).reshape(-1, 1), y, train, test, task, positive, seed)
        found[name] = round(_score(y[test], predicted, task, positive), 4)
    return found


def _numbers(col: pd.Series, role: str) -> np.ndarray:
    """A feature as float64 with NaN for missing: datetimes as nanoseconds, booleans as 0/1."""
    if role == "datetime":
        parsed = parse_datetime(col)
        x = parsed.to_numpy().astype("datetime64[ns]").astype("int64").astype("float64")
        x[parsed.isna().to_numpy()] = np.nan
        return x
    x = as_numbers(col).to_numpy()
    return np.where(np.isfinite(x), x, np.nan)


def _holdout(y: np.ndarray, task: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    stratify = None
    if task != "regression":
        _, counts = np.unique(y, return_counts=True)
        stratify = y if counts.min() >= 2 else None
    return train_test_split(index, test_size=0.3, random_state=seed, stratify=stratify)


def _tree(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, task: str, positive: str | None,
          seed: int) -> np.ndarray:
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    if task == "regression":
        model = DecisionTreeRegressor(max_depth=8, min_samples_leaf=5, random_state=seed)
        return model.fit(x[train], y[train].astype(float)).predict(x[test])
    model = DecisionTreeClassifier(max_depth=8, min_samples_leaf=5, random_state=seed).fit(x[train], y[train])
    if task == "binary":
        classes = list(model.classes_)
        return model.predict_proba(x[test])[:, classes.index(positive)] if positive in classes else np.zeros(len(test))
    return model.predict(x[test])


def _lookup(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, task: str,
            positive: str | None) -> np.ndarray:
    """Per category of the train part: the positive share, the most frequent class or the mean;
    a category unseen in training gets the overall answer."""
    fit = pd.DataFrame({"x": x[train], "y": y[train]})
    if task == "binary":
        answer = (fit["y"] == positive).groupby(fit["x"]).mean()
        default: object = float((fit["y"] == positive).mean())
    elif task == "multiclass":
        answer = fit.groupby("x")["y"].agg(lambda s: s.value_counts().index[0])
        default = fit["y"].value_counts().index[0]
    else:
        answer = fit["y"].astype(float).groupby(fit["x"]).mean()
        default = float(fit["y"].astype(float).mean())
    return pd.Series(x[test]).map(answer).fillna(default).to_numpy()


def _score(y: np.ndarray, predicted: np.ndarray, task: str, positive: str | None) -> float:
    from sklearn.metrics import f1_score, r2_score, roc_auc_score

    if task == "binary":
        truth = y == positive
        return float(roc_auc_score(truth, predicted)) if 0 < truth.sum() < len(truth) else 0.5
    if task == "multiclass":
        return float(f1_score(y, predicted, average="macro"))
    return float(r2_score(y.astype(float), predicted.astype(float)))
