"""Explanations: why a model decided, for one prediction and overall.

Kind-independent: everything here works on a scorer's own ``predict`` over *raw* inputs (the
fields a request or a batch file holds), so a one-hot or embedded category, a date's parts or a
missing-value indicator are explained as the one field the user sent, and every member of a
bake-off (classical, shallow, deep) is explained the same way.

* **Columns** (``tabular`` and ``table`` kinds), :func:`columns`: Shapley values of the input
  columns, computed by shap's ``PermutationExplainer`` (antithetic permutations) over the scorer's
  ``predict``. A column "left out" takes its values from a **background** of training rows that is
  stored with the model (:func:`attach_background`, :data:`BACKGROUND_ROWS` rows): interventional
  SHAP. The contributions of a row add up, exactly, to ``score(row) - baseline`` where the
  baseline is the mean score over the background (the efficiency of every permutation's
  marginal contributions; checked in tests). Scores are probabilities (binary: of the positive
  class; multiclass: of the class explained) or, for regression, the predicted value.
* **Tokens** (``text`` kind), :func:`tokens`: shap's ``PartitionExplainer`` with a word-level
  ``Text`` masker; a masked word is removed. The contributions to a class's probability add up to
  ``p(text) - p(every word removed)``: the baseline is the empty text.
* **Overall** (model cards, bake-off reports): :mod:`deepflow.importance`, built on these.

Cost is bounded by construction: :data:`PERMUTATIONS` permutations of the columns over the
background, :data:`TOKEN_EVALS` maskings of a text. Explaining is off unless asked for; a plain
prediction never imports shap. Measured cost: ``bench/explain_cost.py``, docs/explain.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

BACKGROUND_ROWS = 100  # training rows stored with a model: what "a column left out" means
PERMUTATIONS = 4  # antithetic permutation pairs per explained row (cost: 2 * PERMUTATIONS * (M + 1) evaluations)
TOKEN_EVALS = 300  # maskings of one text (PartitionExplainer's budget)
TOP = 5  # contributions listed per prediction by default
ATTRIBUTE = "explain_background"  # where a scorer carries its background rows
SEED = 0


class NotExplainable(ValueError):
    """The served version cannot be explained (e.g. registered before explanations existed)."""


# --- the background -------------------------------------------------------------------------------


def background_sample(frame: pd.DataFrame, columns: Sequence[str], rows: int = BACKGROUND_ROWS,
                      seed: int = SEED) -> pd.DataFrame:
    """A seeded sample of at most ``rows`` rows of ``frame[columns]``, kept in their original order."""
    take = np.sort(np.random.default_rng(seed).choice(len(frame), size=min(rows, len(frame)), replace=False))
    return frame[list(columns)].iloc[take].reset_index(drop=True)


def attach_background(scorer: Any, background: pd.DataFrame | None) -> None:
    """Store the background rows on the scorer (pickled with it into the registered model)."""
    if background is not None:
        setattr(scorer, ATTRIBUTE, background)


def background_or_sample(scorer: Any, frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The scorer's background rows; a sample of ``frame`` for a scorer without them (a member
    scored outside the pipeline): global importance then measures against that sample."""
    found = getattr(scorer, ATTRIBUTE, None)
    return found if isinstance(found, pd.DataFrame) and not found.empty else background_sample(frame, columns)


def background_of(scorer: Any, what: str) -> pd.DataFrame:
    """The scorer's background rows, or NotExplainable naming ``what`` (the version)."""
    found = getattr(scorer, ATTRIBUTE, None)
    if not isinstance(found, pd.DataFrame) or found.empty:
        raise NotExplainable(f"{what} carries no background rows to explain against (it was registered before "
                             "explanations existed); train a new version to explain its predictions")
    return found


# --- columns --------------------------------------------------------------------------------------


class _Codes:
    """Any columns as float codes shap can mask (a column's values -> positions in its distinct
    values, missing -> -1) and back to the original values and dtypes."""

    def __init__(self, frames: Sequence[pd.DataFrame], columns: Sequence[str]) -> None:
        self.columns = list(columns)
        joined = pd.concat([f[self.columns] for f in frames], ignore_index=True)
        self.uniques, codes = [], []
        for c in self.columns:
            code, unique = pd.factorize(joined[c], use_na_sentinel=True)
            self.uniques.append(unique)
            codes.append(code)
        self.codes = np.stack(codes, axis=1).astype(np.float64) if codes else np.zeros((len(joined), 0))
        self.sizes = [len(f) for f in frames]

    def part(self, i: int) -> np.ndarray:
        start = sum(self.sizes[:i])
        return self.codes[start: start + self.sizes[i]]

    def decode(self, codes: np.ndarray) -> pd.DataFrame:
        codes = np.asarray(codes).astype(np.int64).reshape(-1, len(self.columns))
        return pd.DataFrame({c: pd.api.extensions.take(np.asarray(u) if not hasattr(u, "array") else u.array,
                                                       codes[:, j], allow_fill=True)
                             for j, (c, u) in enumerate(zip(self.columns, self.uniques, strict=True))})


@dataclass(frozen=True)
class Shapley:
    """Contributions of ``rows`` (``values``: (N, M) or, multi-output, (N, M, C)), the baseline
    (a number or (C,)) and the scores they explain ((N,) or (N, C)): values sum to scores - baseline."""

    columns: list[str]
    values: np.ndarray
    baseline: np.ndarray
    scores: np.ndarray


def columns(predict: Callable[[pd.DataFrame], np.ndarray], rows: pd.DataFrame, background: pd.DataFrame,
            *, permutations: int = PERMUTATIONS, seed: int = SEED) -> Shapley:
    """Shapley values of ``rows``'s columns (those of ``background``) for ``predict`` (module docstring)."""
    import shap

    names = list(background.columns)
    if missing := [c for c in names if c not in rows.columns]:
        raise KeyError(f"rows lack the model's columns {missing[:5]}")
    codes = _Codes([background, rows[names]], names)

    def f(masked: np.ndarray) -> np.ndarray:
        return np.asarray(predict(codes.decode(masked)), dtype=np.float64)

    explainer = shap.PermutationExplainer(f, shap.maskers.Independent(codes.part(0), max_samples=len(background)),
                                          seed=seed)
    out = explainer(codes.part(1), max_evals=permutations * 2 * (len(names) + 1) + 1, silent=True)
    values = np.asarray(out.values, dtype=np.float64)
    baseline = np.asarray(out.base_values, dtype=np.float64)[0] if len(rows) else np.asarray(0.0)
    scores = baseline + values.sum(axis=1)
    return Shapley(names, values, baseline, scores)


def json_value(value: Any) -> Any:
    """A raw input value as JSON gives it back: numbers, strings, booleans, ISO dates, null."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, pd.Timestamp | datetime | date):
        return value.isoformat()
    if isinstance(value, bool | int | str):
        return value
    try:
        return None if pd.isna(value) else str(value)
    except (TypeError, ValueError):
        return str(value)


def ranked(names: Sequence[str], values: np.ndarray, raw: Sequence[Any], top: int) -> tuple[list[dict], float]:
    """The ``top`` contributions by size, largest first, as ``{"feature", "value", "contribution"}``;
    and the sum of the others (so listed + rest = score - baseline)."""
    order = np.argsort(-np.abs(values), kind="stable")
    shown = order[: max(0, top)]
    listed = [{"feature": str(names[j]), "value": json_value(raw[j]), "contribution": float(values[j])}
              for j in shown]
    return listed, float(values[order[len(shown):]].sum())


METHOD_COLUMNS = "shap permutation (interventional), raw input fields"
METHOD_TOKENS = "shap partition, word tokens removed"


def explain_rows(predict: Callable[[pd.DataFrame], np.ndarray], rows: pd.DataFrame, background: pd.DataFrame,
                 *, classes: Sequence[str] = (), target: str | None = None, top: int = TOP) -> list[dict[str, Any]]:
    """Per row: ``{"target", "baseline", "score", "contributions": [...top], "rest", "method"}``.

    A scorer with one output per row (a probability, a value) is explained as ``target`` (e.g. the
    positive class's name); a multi-output one for each row's most probable class of ``classes``."""
    sh = columns(predict, rows, background)
    out = []
    raw = rows[sh.columns].to_numpy(dtype=object)
    for i in range(len(rows)):
        values, base, score, name = sh.values[i], sh.baseline, sh.scores[i], target
        if values.ndim == 2:  # (M, C): the row's most probable class
            k = int(np.argmax(score))
            values, base, score = values[:, k], base[k], score[k]
            name = str(classes[k]) if k < len(classes) else str(k)
        listed, rest = ranked(sh.columns, values, raw[i], top)
        out.append({"target": name, "baseline": float(base), "score": float(score),
                    "contributions": listed, "rest": rest, "method": METHOD_COLUMNS})
    return out


def explain_scorer(scorer: Any, rows: pd.DataFrame, what: str, *, classes: Sequence[str] = (),
                   target: str | None = None, top: int = TOP) -> list[dict[str, Any]]:
    """:func:`explain_rows` of a scorer against the background stored with it (NotExplainable,
    naming ``what``, for a scorer without one); ``rows`` holds at least the scorer's inputs."""
    background = background_of(scorer, what)
    return explain_rows(scorer.predict, rows[list(background.columns)], background, classes=classes, target=target,
                        top=top)


def as_json(explanations: list[dict[str, Any]], index: pd.Index) -> pd.Series:
    """Explanations as one JSON string each (a batch output column), on ``index``."""
    import json

    return pd.Series([json.dumps(e, allow_nan=False, default=str) for e in explanations], index=index, dtype=object)


def _word(piece: str) -> tuple[str, int]:
    """A masker piece ("FREE ", "prize!", "pobox334,") as the word it holds and its offset in the
    piece: separators trimmed at both ends (a piece of separators only keeps them, trimmed of spaces)."""
    found = re.search(r"\w(.*\w)?", piece, flags=re.S)
    if found is None:
        stripped = piece.strip()
        return stripped, piece.index(stripped) if stripped else 0
    return found.group(0), found.start()


# --- tokens ---------------------------------------------------------------------------------------


def tokens(predict_texts: Callable[[list[str]], np.ndarray], texts: Sequence[str], labels: Sequence[str],
           *, top: int = TOP, max_evals: int = TOKEN_EVALS, seed: int = SEED) -> list[dict[str, Any]]:
    """Per text, for its most probable class: the words that pushed it there (module docstring):
    ``{"target", "baseline", "score", "contributions": [{"token", "start", "contribution"}], "rest"}``."""
    import shap

    masker = shap.maskers.Text(r"\W+", mask_token=" ", collapse_mask_token=True)  # " ": removed

    def f(batch: np.ndarray) -> np.ndarray:
        return np.asarray(predict_texts([str(t) for t in batch]), dtype=np.float64)

    explainer = shap.PartitionExplainer(f, masker, output_names=list(labels), seed=seed)
    out = []
    for text in texts:
        if len([w for w in re.split(r"\W+", text) if w]) > 1:
            ex = explainer([text], max_evals=max_evals, silent=True)
            values, base, pieces = np.asarray(ex.values[0]), np.asarray(ex.base_values[0]), list(ex.data[0])
        else:  # one word (or none): it alone moves the score from the empty text (shap cannot cluster one)
            base, whole = f(np.array(["", text], dtype=object))
            values, pieces = (whole - base)[None, :], [text]
        score = base + values.sum(axis=0)
        k = int(np.argmax(score))
        starts, at = [], 0
        for piece in pieces:  # the pieces are the text cut in order: offsets by their lengths
            found = text.find(piece, at) if piece else at
            starts.append(found if found >= 0 else at)
            at = (found if found >= 0 else at) + len(piece)
        order = np.argsort(-np.abs(values[:, k]), kind="stable")
        listed = [j for j in order if pieces[j].strip()][: max(0, top)]
        words = [_word(pieces[j]) for j in listed]  # (word, its offset in the piece)
        out.append({"target": str(labels[k]), "baseline": float(base[k]), "score": float(score[k]),
                    "contributions": [{"token": w, "start": int(starts[j] + at), "contribution": float(values[j, k])}
                                      for j, (w, at) in zip(listed, words, strict=True)],
                    "rest": float(values[:, k].sum() - sum(values[j, k] for j in listed)), "method": METHOD_TOKENS})
    return out
