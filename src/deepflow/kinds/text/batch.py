"""Batch part of the ``text`` kind: a ``text`` column in, the arg-max label and its probability out.

The contract (``deepflow.batch``'s docstring): a row whose ``text`` is missing, not a string, or
empty/blank is rejected; the output adds ``label`` (from the scorer's ``labels``) and
``probability`` (of that label).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from deepflow.batch import Model, rejects_frame

TEXT = "text"
NEEDS_THRESHOLD = False  # the answer is the arg-max class
OUTPUTS = ("label", "probability")


def inputs(model: Model) -> list[str]:
    return [TEXT]


def validate_text(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows whose ``text`` is a non-empty string, rejects[row, column, reason])."""
    problems: dict[Any, list[tuple[str, str]]] = {}
    for row, value in frame[TEXT].items():
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            problems[row] = [(TEXT, "missing text")]
        elif not isinstance(value, str):
            problems[row] = [(TEXT, f"text is not a string ({type(value).__name__})")]
        elif not value.strip():
            problems[row] = [(TEXT, "empty text")]
    clean = frame.drop(index=list(problems)) if problems else frame
    return clean, rejects_frame(problems)


def validate(frame: pd.DataFrame, model: Model) -> tuple[pd.DataFrame, pd.DataFrame]:
    return validate_text(frame)


def score(model: Model, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(label and its probability per valid row, rejects)."""
    clean, rejects = validate_text(frame)
    labels = np.asarray(model.scorer.labels, dtype=object)
    proba = np.asarray(model.scorer.predict(clean[[TEXT]])) if len(clean) else np.empty((0, len(labels)))
    best = proba.argmax(axis=1) if len(proba) else np.empty(0, dtype=int)
    return pd.DataFrame({
        "label": pd.Series(labels[best], index=clean.index, dtype=str),
        "probability": pd.Series(proba[np.arange(len(proba)), best].astype(np.float64), index=clean.index),
    }, index=clean.index), rejects
