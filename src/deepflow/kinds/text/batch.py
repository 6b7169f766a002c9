"""Batch part of the ``text`` kind: a ``text`` column in, the arg-max label and its probability out.

The text column is ``text``, or, for an entry made by ``deepflow new`` from a file with a header,
the source's own text column (``config.text_column``): new files look like the one brought.
The contract (``deepflow.batch``'s docstring): a row whose text is missing, not a string, or
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
    return [text_column(model.name)]


def text_column(name: str) -> str:
    """The entry's text column in batch files: ``config.text_column`` when its source had a header."""
    from deepflow import usecase

    try:
        cfg = usecase.get(name).cfg
    except Exception:  # an entry that no longer loads: its models still score ``text``
        return TEXT
    column = getattr(cfg, "text_column", "")
    return column if column and cfg.read.header else TEXT


def validate_text(frame: pd.DataFrame, column: str = TEXT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows whose ``column`` is a non-empty string, rejects[row, column, reason])."""
    problems: dict[Any, list[tuple[str, str]]] = {}
    for row, value in frame[column].items():
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            problems[row] = [(column, "missing text")]
        elif not isinstance(value, str):
            problems[row] = [(column, f"text is not a string ({type(value).__name__})")]
        elif not value.strip():
            problems[row] = [(column, "empty text")]
    clean = frame.drop(index=list(problems)) if problems else frame
    return clean, rejects_frame(problems)


def validate(frame: pd.DataFrame, model: Model) -> tuple[pd.DataFrame, pd.DataFrame]:
    return validate_text(frame, text_column(model.name))


def score(model: Model, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(label and its probability per valid row, rejects)."""
    column = text_column(model.name)
    clean, rejects = validate_text(frame, column)
    labels = np.asarray(model.scorer.labels, dtype=object)
    proba = (np.asarray(model.scorer.predict(clean[[column]].rename(columns={column: TEXT}))) if len(clean)
             else np.empty((0, len(labels))))
    best = proba.argmax(axis=1) if len(proba) else np.empty(0, dtype=int)
    return pd.DataFrame({
        "label": pd.Series(labels[best], index=clean.index, dtype=str),
        "probability": pd.Series(proba[np.arange(len(proba)), best].astype(np.float64), index=clean.index),
    }, index=clean.index), rejects
