"""Batch part of the ``table`` kind: raw columns in (as the source file had them); a decision, class
probabilities or a value out.

The contract is ``deepflow.batch``'s docstring. The input file is read the way the entry's source
was (:func:`read_input`, the core's reader hook; ``read:`` in the entry): Parquet (``.parquet``,
``.pq``) and JSON lines (``.jsonl``, ``.ndjson``, ``.json``) by their extension, any other file
as text with the source's delimiter (tab for ``.tsv``), encoding and header row; a number with a
decimal comma is read as the source's were (``1,5`` in a file not delimited by commas). Column
names are stripped of blanks. A column named like the target that is also an output's name
(``label``, ``value``, ...) is left out of the input (a labelled file scores as it is); a target
column otherwise passes through like an id.

The input needs every column the scorer reads (its ``features``); each value is parsed by the
column's role in the scorer's ``columns``, into the dtypes of the prepared data (so the model
sees what it was fitted on):

* every role: null, empty text and the entry's missing-value tokens (``read.na_values``: what its
  source's reader took for missing, e.g. "NA" from a CSV source; none from a Parquet or JSON-lines
  source) are missing, in any input format; any other text ("NA" from a typed source) is a value;
* numeric: a number (CSV text is parsed); text that is no number, an infinite value, or one
  beyond +-3.4e38 (inf inside a float32 network) rejects the row;
* boolean: true/false, yes/no, y/n, t/f, 1/0 (any case) -> 1.0/0.0; anything else rejects;
* categorical: the trimmed text (a number is taken as its decimal text, 3.0 as "3"; a boolean
  as "True"/"False", as the prepared data writes it); an unseen category rejects the row when
  the column's policy is ``reject`` (else the model's "other");
* datetime: text in the column's recorded ``format`` (the source's), else or where it does not
  match, ISO 8601; an offset is converted to UTC. Text that does not parse, and a date outside
  1677-09-21..2262-04-11 (what datetime64[ns] can hold), reject the row.

Missing values are scored (the model imputes them). A rejected row names each failing column
and why; a row the model gives no finite answer for is rejected too. The output adds, by task,
binary ``label``, ``probability`` (of ``classes[1]``) and ``threshold`` (the version's tag, else
``DEFAULT_THRESHOLD``); multiclass ``label`` and one ``p_<class>`` per class; regression ``value``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepflow import explain as explanations
from deepflow.batch import STAMPS, BatchError, Model, rejects_frame
from deepflow.kinds.table.features import FALSE, TRUE, parse_dates  # as the scorer reads booleans and dates
from deepflow.kinds.table.inputs import InputError, entry_config, missing_tokens, read_chunks, read_settings

DEFAULT_THRESHOLD = 0.5  # a binary version without a deepflow.threshold tag (as serving does)
NEEDS_THRESHOLD = False  # binary falls back to DEFAULT_THRESHOLD; the other tasks need none
OUTPUTS = ("label", "probability", "threshold", "value")  # the fixed names; outputs(model) is exact
EXPLAIN_NEEDS_BACKGROUND = True  # --explain: the version must carry its training rows (deepflow.explain)
FLOAT32_MAX = 3.4e38
LISTED = 20  # known categories named in a reject reason

Problems = dict[Any, list[tuple[str, str]]]


def inputs(model: Model) -> list[str]:
    return list(model.scorer.features)


def outputs(model: Model) -> tuple[str, ...]:
    """The columns this model adds (module docstring)."""
    task = model.scorer.task
    if task == "binary":
        return ("label", "probability", "threshold")
    if task == "multiclass":
        return ("label", *(f"p_{c}" for c in model.scorer.classes))
    return ("value",)


def read_input(model: Model, path: Path, chunk_size: int) -> tuple[list[str], int | None, Iterator[pd.DataFrame]]:
    """The core's reader hook: (column names, row count if known, chunks indexed by row position)
    of ``path`` read as entry ``model.name``'s source was (module docstring)."""
    cfg = entry_config(model.name)
    numeric = [f for f, spec in model.scorer.columns.items() if spec.get("role") == "numeric"]
    try:
        columns, total, chunks = read_chunks(path, read_settings(path, cfg), chunk_size, numeric)
    except InputError as exc:
        raise BatchError(str(exc)) from None
    taken = {*STAMPS, *outputs(model)}
    drop = [cfg.target] if cfg is not None and cfg.target in taken and cfg.target in columns else []

    def frames() -> Iterator[pd.DataFrame]:
        try:
            for frame in chunks:
                yield frame.drop(columns=drop)
        except InputError as exc:
            raise BatchError(str(exc)) from None

    return [c for c in columns if c not in drop], total, frames()


NONE: frozenset[str] = frozenset()


def _text(values: pd.Series, missing: frozenset[str] = NONE) -> pd.Series:
    """Values as trimmed strings (object dtype), None for missing: null, NaN, empty text and the
    ``missing`` tokens."""
    out = values.astype(object).where(values.notna(), None)
    out = out.map(lambda v: v.strip() if isinstance(v, str) else v)
    return out.where(out.map(lambda v: v is not None and v != "" and v not in missing), None)


def _note(problems: Problems, index: pd.Index, bad: np.ndarray, column: str, why: list[str] | str) -> None:
    reasons = [why] * int(bad.sum()) if isinstance(why, str) else why
    for row, reason in zip(index[bad], reasons, strict=True):
        problems.setdefault(row, []).append((column, reason))


def parse_numeric(values: pd.Series, column: str, problems: Problems, missing: frozenset[str] = NONE) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        raw = values.to_numpy(dtype=np.float64, na_value=np.nan)
        given = ~np.isnan(raw)
    else:
        text = _text(values, missing)
        given = text.notna().to_numpy()
        raw = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        wrong = given & np.isnan(raw)
        _note(problems, values.index, wrong, column, [f"not a number: {str(v)[:40]!r}" for v in text[wrong]])
    inf = given & np.isinf(raw)
    _note(problems, values.index, inf, column, "infinite value")
    huge = np.isfinite(raw) & (np.abs(np.nan_to_num(raw)) > FLOAT32_MAX)
    _note(problems, values.index, huge, column, "beyond +-3.4e38")
    return np.where(np.isfinite(raw) & ~huge, raw, np.nan)


def parse_boolean(values: pd.Series, column: str, problems: Problems, missing: frozenset[str] = NONE) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        raw = values.to_numpy(dtype=np.float64, na_value=np.nan)
        wrong = ~np.isnan(raw) & ~np.isin(raw, (0.0, 1.0))
        shown = [f"not a boolean: {v!r}" for v in raw[wrong]]
    else:
        text = _text(values, missing).map(lambda v: v.lower() if isinstance(v, str) else v)
        raw = text.map(lambda v: 1.0 if v in TRUE else 0.0 if v in FALSE else np.nan).to_numpy(dtype=np.float64)
        wrong = text.notna().to_numpy() & np.isnan(raw)
        shown = [f"not a boolean: {str(v)[:40]!r}" for v in text[wrong]]
    _note(problems, values.index, wrong, column, shown)
    return np.where(wrong, np.nan, raw)


def parse_categorical(values: pd.Series, column: str, spec: dict[str, Any], problems: Problems,
                      unknown: str | None = None, missing: frozenset[str] = NONE) -> pd.Series:
    """Trimmed strings; ``unknown`` overrides the column's policy (drift keeps every value)."""
    if pd.api.types.is_bool_dtype(values):  # as the prepared data writes a boolean category
        values = values.astype(object).map(lambda v: v if pd.isna(v) else "True" if v else "False")
    elif pd.api.types.is_numeric_dtype(values):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        as_text = [None if np.isnan(v) else str(int(v)) if float(v).is_integer() else str(v) for v in numbers]
        values = pd.Series(as_text, index=values.index, dtype=object)
    text = _text(values, missing)
    if (unknown or spec.get("unknown", "other")) == "reject":
        known = [str(c) for c in spec.get("categories") or []]
        integral = text.map(lambda v: v[:-2] if isinstance(v, str) and v.endswith(".0") and v[:-2] in known else v)
        text = text.where(text.isin(known), integral)  # "3.0" (a CSV's number) is the category "3"
        wrong = (text.notna() & ~text.isin(known)).to_numpy()
        listed = ", ".join(known[:LISTED]) + (f" (+{len(known) - LISTED} more)" if len(known) > LISTED else "")
        _note(problems, values.index, wrong, column,
              [f"unknown category {str(v)[:40]!r} (known: {listed})" for v in text[wrong]])
        text = text.where(~wrong, None)
    return text


def parse_datetime(values: pd.Series, column: str, problems: Problems, fmt: str = "",
                   missing: frozenset[str] = NONE) -> pd.Series:
    """Naive UTC datetime64[ns] (text in ``fmt``, else ISO 8601, as the scorer reads it); NaT for
    missing and for what does not parse or is out of range (both rejected)."""
    parsed, outside = parse_dates(values, fmt)
    _note(problems, values.index, outside, column, "outside 1677-09-21..2262-04-11 (the dates a model can read)")
    if not pd.api.types.is_datetime64_any_dtype(values):
        text = _text(values, missing)
        wrong = text.notna().to_numpy() & np.isnat(parsed) & ~outside
        what = f"a date/time as {fmt} or ISO 8601" if fmt else "an ISO 8601 date/time"
        _note(problems, values.index, wrong, column, [f"not {what}: {str(v)[:40]!r}" for v in text[wrong]])
    return pd.Series(parsed, index=values.index, dtype="datetime64[ns]")


def parse(frame: pd.DataFrame, features: list[str], specs: dict[str, dict[str, Any]],
          unknown: str | None = None, missing: frozenset[str] = NONE) -> tuple[pd.DataFrame, Problems]:
    """(the ``features`` of ``frame`` in the prepared dtypes, problems per row): ``specs`` is a
    scorer's ``columns``, ``missing`` the entry's missing-value tokens; a bad cell is missing in
    the frame and named in the problems."""
    problems: Problems = {}
    columns: dict[str, Any] = {}
    for col in features:
        spec = specs[col]
        role = spec.get("role", "numeric")
        if role == "numeric":
            columns[col] = parse_numeric(frame[col], col, problems, missing)
        elif role == "boolean":
            columns[col] = parse_boolean(frame[col], col, problems, missing)
        elif role == "categorical":
            columns[col] = parse_categorical(frame[col], col, spec, problems, unknown, missing)
        else:
            columns[col] = parse_datetime(frame[col], col, problems, spec.get("format", ""), missing)
    return pd.DataFrame(columns, index=frame.index), problems


def validate(frame: pd.DataFrame, model: Model) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rows that parse, their inputs in the prepared dtypes; rejects[row, column, reason])."""
    parsed, problems = parse(frame, model.scorer.features, model.scorer.columns,
                             missing=missing_tokens(entry_config(model.name)))
    return parsed[~parsed.index.isin(list(problems))], rejects_frame(problems)


def answers(scorer: Any, scores: np.ndarray, index: pd.Index, threshold: float) -> pd.DataFrame:
    """The output columns (module docstring) of finite scores."""
    if scorer.task == "regression":
        return pd.DataFrame({"value": scores.reshape(-1)}, index=index)
    classes = [str(c) for c in scorer.classes]
    if scorer.task == "binary":
        p = scores.reshape(-1)
        return pd.DataFrame({"label": pd.Series(np.where(p >= threshold, classes[1], classes[0]), index=index,
                                                dtype=object),
                             "probability": p, "threshold": np.full(len(p), threshold)}, index=index)
    out = pd.DataFrame({"label": pd.Series(np.asarray(classes, dtype=object)[scores.argmax(axis=1)], index=index,
                                           dtype=object)}, index=index)
    for i, c in enumerate(classes):
        out[f"p_{c}"] = scores[:, i]
    return out


def score(model: Model, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the outputs of every row that parses and gets a finite answer, rejects)."""
    parsed, problems = parse(frame, model.scorer.features, model.scorer.columns,
                             missing=missing_tokens(entry_config(model.name)))
    clean = parsed[~parsed.index.isin(list(problems))]
    width = len(model.scorer.classes) if model.scorer.task == "multiclass" else 1
    scores = (np.asarray(model.scorer.predict(clean), dtype=np.float64).reshape(len(clean), -1) if len(clean)
              else np.empty((0, width)))
    finite = np.isfinite(scores).all(axis=1)
    for row in clean.index[~finite]:
        problems[row] = [("*", "the model gives no finite answer for these values")]
    threshold = DEFAULT_THRESHOLD if model.threshold is None else float(model.threshold)
    return answers(model.scorer, scores[finite], clean.index[finite], threshold), rejects_frame(problems)


def explain(model: Model, clean: pd.DataFrame, top: int) -> pd.Series:
    """Each row's top contributions (``deepflow.explain.explain_rows``: binary, the probability of
    ``classes[1]``; multiclass, of the row's most probable class; regression, the value), as JSON."""
    scorer = model.scorer
    target = scorer.classes[1] if scorer.task == "binary" else None
    return explanations.as_json(explanations.explain_scorer(scorer, clean, model.name, classes=scorer.classes,
                                                            target=target, top=top), clean.index)
