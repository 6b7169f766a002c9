"""Batch part of the ``tabular`` kind: numeric feature columns in, a probability and a decision out.

The contract (``deepflow.batch``'s docstring): the input needs the scorer's ``features``; a row
whose feature value is missing, not a number, or infinite is rejected, every failing feature
named; the output adds ``probability``, ``decision`` (``probability >= threshold``) and the
``threshold`` used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from deepflow import explain as explanations
from deepflow.batch import Model, rejects_frame

NEEDS_THRESHOLD = True  # the decision needs one: the version's deepflow.threshold tag or an argument
OUTPUTS = ("probability", "decision", "threshold")
EXPLAIN_NEEDS_BACKGROUND = True  # --explain: the version must carry its training rows (deepflow.explain)


def inputs(model: Model) -> list[str]:
    return list(model.scorer.features)


def numeric_problems(values: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """(float64 values, reason per bad row) for one feature column; reasons only for bad rows."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        parsed = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:  # CSV columns arrive as strings
        parsed = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    raw_missing = values.isna().to_numpy()
    bad = ~np.isfinite(parsed)
    if not bad.any():
        return parsed, pd.Series(dtype=str)
    reasons = {}
    for pos in np.flatnonzero(bad):
        if raw_missing[pos]:
            reasons[values.index[pos]] = "missing value"
        elif np.isinf(parsed[pos]):
            reasons[values.index[pos]] = "infinite value"
        else:
            reasons[values.index[pos]] = f"non-numeric value {str(values.iloc[pos])[:40]!r}"
    return parsed, pd.Series(reasons, dtype=str)


def validate_features(frame: pd.DataFrame, features: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid rows with float64 feature columns, rejects[row, column, reason])."""
    problems: dict[Any, list[tuple[str, str]]] = {}
    parsed = {}
    for col in features:
        parsed[col], reasons = numeric_problems(frame[col])
        for row, reason in reasons.items():
            problems.setdefault(row, []).append((col, reason))
    keep = ~frame.index.isin(list(problems))
    clean = frame[keep].copy()
    for col in features:
        clean[col] = parsed[col][keep]
    return clean, rejects_frame(problems)


def validate(frame: pd.DataFrame, model: Model) -> tuple[pd.DataFrame, pd.DataFrame]:
    return validate_features(frame, inputs(model))


def score(model: Model, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(probability, decision, threshold per valid row, rejects)."""
    clean, rejects = validate(frame, model)
    probs = np.asarray(model.scorer.predict(clean), dtype=np.float64).reshape(-1) if len(clean) else np.empty(0)
    threshold = float(model.threshold)
    return pd.DataFrame({"probability": probs, "decision": probs >= threshold,
                         "threshold": np.full(len(probs), threshold)}, index=clean.index), rejects


def explain(model: Model, clean: pd.DataFrame, top: int) -> pd.Series:
    """Each row's top contributions to its probability (``deepflow.explain.explain_rows``), as JSON."""
    return explanations.as_json(explanations.explain_scorer(
        model.scorer, clean, model.name, target=positive_class(model.name), top=top), clean.index)


def positive_class(name: str) -> str:
    """The entry's name for label 1 (``class_names[1]``), what the probability is of."""
    from deepflow import usecase

    names = list(usecase.resolve_config(usecase.entry(name)).class_names)
    return str(names[1]) if len(names) > 1 else "positive"
