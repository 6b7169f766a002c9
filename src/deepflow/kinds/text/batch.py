"""Batch part of the ``text`` kind: a ``text`` column in, the arg-max label and its probability out.

The text column is ``text``, or, for an entry made by ``deepflow new`` from a file with a header,
the source's own text column (``config.text_column``): new files look like the one brought.
The contract (``deepflow.batch``'s docstring): a row whose text is missing, not a string, or
empty/blank is rejected; the output adds ``label`` (from the scorer's ``labels``) and
``probability`` (of that label).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepflow import explain as explanations
from deepflow.batch import BatchError, Model, default_input, rejects_frame

TEXT = "text"
NEEDS_THRESHOLD = False  # the answer is the arg-max class
OUTPUTS = ("label", "probability")


def inputs(model: Model) -> list[str]:
    return [text_column(model.name)]


def entry_config(name: str):
    """The entry's config, or None when it no longer loads (its models still score ``text``)."""
    from deepflow import usecase

    try:
        return usecase.get(name).cfg
    except Exception:
        return None


def text_column(name: str) -> str:
    """The entry's text column in batch files: ``config.text_column`` when its source had a header."""
    cfg = entry_config(name)
    column = getattr(cfg, "text_column", "") if cfg is not None else ""
    return column if column and cfg.read.header else TEXT


def _as_source(cfg, path: Path) -> bool:
    """Whether ``path`` is read as the entry's source was: an entry made by ``deepflow new`` and a
    text file (Parquet and image folders go to the core's reader)."""
    if cfg is None or not getattr(cfg, "source", "") or path.is_dir():
        return False
    return path.suffix.lower() != ".parquet"


def read_like_source(name: str, path: Path) -> tuple[pd.DataFrame, str] | None:
    """``path`` read as entry ``name``'s source was, and its text column; None where the core's
    reader applies (see :func:`_as_source`). The source's label column is left out (the truth,
    not an input, and it would clash with the output ``label``); without a header the source's
    text column is called ``text``. Raises ``BatchError`` naming the file."""
    cfg = entry_config(name)
    if not _as_source(cfg, path):
        return None
    from deepflow.kinds.table.read import TableError
    from deepflow.kinds.text.loose import read_text_file

    try:
        frame, _, _, _ = read_text_file(path, cfg.read, loose=cfg.loose_rows, max_rows=2**62, min_rows=1,
                                        min_columns=1)
    except (TableError, OSError) as exc:
        raise BatchError(f"{path}: cannot be read as the entry {name}'s source was "
                         f"({cfg.read.format}, delimiter {cfg.read.delimiter!r}, {cfg.read.encoding}): {exc}") from None
    column = cfg.text_column if cfg.read.header else TEXT
    if not cfg.read.header:
        frame = frame.rename(columns={cfg.text_column: TEXT})
    if column not in frame.columns:
        raise BatchError(f"{path}: no column {column!r} (the entry's text column); columns: "
                         f"{', '.join(map(str, frame.columns[:20]))}")
    frame = frame.drop(columns=[cfg.label_column, *(c for c in ("label", "probability") if c != column)],
                       errors="ignore")
    # Typed as the source was: a text of digits is still a text here.
    frame[column] = frame[column].astype(object).map(lambda v: v if isinstance(v, str) or pd.isna(v) else str(v))
    frame.index = pd.RangeIndex(len(frame))
    return frame, column


def read_input(model: Model, path: Path, chunk_size: int) -> tuple[list[str], int | None, Iterator[pd.DataFrame]]:
    """The core's reader hook. For an entry made by ``deepflow new``, a text file is read as the
    source was (``config.read``: delimiter, encoding, header, quoting, loose rows; a TSV, a file
    without a header, Latin-1, JSON lines, ...): :func:`read_like_source`; Parquet, and every file
    of a hand-written entry, as the core reads them."""
    read = read_like_source(model.name, path)
    if read is None:
        return default_input(path, chunk_size)
    frame, _ = read

    def chunks() -> Iterator[pd.DataFrame]:
        for start in range(0, len(frame), max(chunk_size, 1)):
            yield frame.iloc[start:start + chunk_size]

    return [str(c) for c in frame.columns], len(frame), chunks()


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


def explain(model: Model, clean: pd.DataFrame, top: int) -> pd.Series:
    """Each text's words that made its label (``deepflow.explain.tokens``), as JSON."""
    column = text_column(model.name)
    scorer = model.scorer
    return explanations.as_json(explanations.tokens(
        lambda texts: scorer.predict(pd.DataFrame({TEXT: texts})), clean[column].astype(str).tolist(),
        [str(x) for x in scorer.labels], top=top), clean.index)
