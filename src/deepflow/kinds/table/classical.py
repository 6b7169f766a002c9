"""The classical rungs of the ladder: a regularised linear model and gradient-boosted trees.

* ``linear``: logistic regression (multinomial for several classes) or ridge regression on the
  one-hot + standardised view, its strength chosen on the validation split from
  ``model.linear_c`` (ridge: ``alpha = 1 / C``).
* ``hgb``: scikit-learn's HistGradientBoosting with native categorical splits on the code
  columns (categories beyond :data:`~deepflow.kinds.table.features.MAX_CATEGORIES` are already
  folded into "other"), early stopping on an internal 10 % holdout, seeded. A classification
  table too small for a stratified holdout (fewer holdout rows than classes, or a class with a
  single row: scikit-learn would fail) is fitted without early stopping.

Both honour a deadline (``time.perf_counter()`` value) between fits: the linear model stops
trying strengths, the trees grow in rounds of :data:`ROUND` iterations (warm start) and stop
adding rounds when the next one would not fit. Callers pin the BLAS/OpenMP thread pool.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

from deepflow.kinds.table import metrics
from deepflow.kinds.table.features import Preprocessor
from deepflow.kinds.table.scorer import TableScorer

ROUND = 50  # boosting iterations per warm-start round when a deadline is set
VALIDATION_FRACTION = 0.1  # the trees' internal early-stopping holdout
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # (numeric, codes, y)


def fit_linear(pre: Preprocessor, train: Arrays, val: Arrays, *, task: str, classes: list[str], metric: str,
               strengths: list[float], seed: int, deadline: float | None = None) -> tuple[TableScorer, dict]:
    """Fit one model per strength C (cheapest order as given), keep the best on ``val``'s ``metric``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge

    x = pre.onehot(train[0], train[1])
    best: tuple[float, float, TableScorer] | None = None
    tried = 0
    for c in strengths:
        if best is not None and deadline is not None and time.perf_counter() >= deadline:
            break
        model = (Ridge(alpha=1.0 / c) if task == "regression"
                 else LogisticRegression(C=c, max_iter=1000, random_state=seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, train[2])
        scorer = TableScorer(pre, model, member="linear", family="linear", task=task, classes=classes)
        score = metrics.value(task, metric, val[2], scorer.predict_encoded(val[0], val[1]))
        tried += 1
        if best is None or (np.isfinite(score) and not score <= best[0]):
            best = (score if np.isfinite(score) else -np.inf, c, scorer)
    assert best is not None  # at least one strength is always fitted
    return best[2], {"C": best[1], "strengths_tried": tried, "parameters": _linear_size(best[2].model)}


def _linear_size(model) -> int:
    return int(np.size(model.coef_) + np.size(model.intercept_))


def fit_hgb(pre: Preprocessor, train: Arrays, *, task: str, classes: list[str], max_iter: int,
            learning_rate: float, seed: int, deadline: float | None = None) -> tuple[TableScorer, dict]:
    """Gradient-boosted trees on [numeric | codes], the code columns as categorical features."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    numeric, codes, y = train
    x = np.concatenate([numeric, codes.astype(np.float32)], axis=1)
    categorical = np.r_[np.zeros(numeric.shape[1], bool), np.ones(codes.shape[1], bool)]
    cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    stopping = task == "regression" or holdout_fits(y, VALIDATION_FRACTION)
    model = cls(max_iter=max_iter if deadline is None else min(ROUND, max_iter), learning_rate=learning_rate,
                early_stopping=stopping, validation_fraction=VALIDATION_FRACTION, n_iter_no_change=10,
                random_state=seed, categorical_features=categorical if categorical.any() else None,
                warm_start=deadline is not None)
    rounds, stopped_by = 0, "early stopping"
    while True:
        started = time.perf_counter()
        model.fit(x, y)
        rounds += 1
        if stopping and model.n_iter_ < model.max_iter:
            break  # early stopping ended it
        if model.max_iter >= max_iter:
            stopped_by = "max_iter"
            break
        if deadline is not None and time.perf_counter() + (time.perf_counter() - started) > deadline:
            stopped_by = "time limit"
            break
        model.max_iter = min(model.max_iter + ROUND, max_iter)
    scorer = TableScorer(pre, model, member="hgb", family="hgb", task=task, classes=classes)
    return scorer, {"iterations": int(model.n_iter_), "rounds": rounds, "stopped_by": stopped_by,
                    "early_stopping": stopping}


def holdout_fits(y: np.ndarray, fraction: float) -> bool:
    """Whether scikit-learn's stratified early-stopping holdout can be drawn from class ids ``y``:
    it has ``ceil(fraction * n)`` rows, which must be at least the number of classes, and every
    class needs two rows (one on each side)."""
    counts = np.unique(y, return_counts=True)[1]
    return bool(len(counts)) and math.ceil(fraction * len(y)) >= len(counts) and int(counts.min()) >= 2
