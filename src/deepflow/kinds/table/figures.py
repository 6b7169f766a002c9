"""Figures and the permutation importance of the ``table`` kind.

Regression plots (predicted vs actual, residuals) and permutation importance (the model card's
"what the model relies on" is built from it and from Shapley values by ``deepflow.explain``): the drop of the
primary metric when one raw feature's values are shuffled across the rows of (a sample of) the
test split, everything else unchanged (permutation importance, model-agnostic, so every rung of
the ladder is explained the same way). Shuffling happens on the preprocessed arrays: a raw
feature's outputs (a date's parts, a missing-value indicator, a category code) move together.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from deepflow.kinds.table import metrics


@dataclass(frozen=True)
class Importance:
    table: pd.DataFrame  # feature, role, importance (mean drop), std; most important first
    metric: str
    base: float  # the metric on the sample, nothing shuffled
    rows: int
    repeats: int


def permutation_importance(scorer, frame: pd.DataFrame, y: np.ndarray, metric: str, *, rows: int = 2000,
                           repeats: int = 3, seed: int = 0) -> Importance:
    """Mean and spread over ``repeats`` shuffles of metric(all features) - metric(feature shuffled),
    per raw feature, on at most ``rows`` rows of ``frame`` (seeded sample)."""
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(frame), size=min(rows, len(frame)), replace=False))
    numeric, codes = scorer.encode(frame.iloc[take])
    y = np.asarray(y)[take]
    task = scorer.task
    base = metrics.value(task, metric, y, scorer.predict_encoded(numeric, codes))
    out = []
    for feature in scorer.features:
        columns, code = scorer.preprocessor.slices[feature]
        drops = []
        for _ in range(repeats):
            order = rng.permutation(len(take))
            num, cod = numeric.copy(), codes.copy()
            if columns:
                num[:, columns] = numeric[order][:, columns]
            if code is not None:
                cod[:, code] = codes[order, code]
            drops.append(base - metrics.value(task, metric, y, scorer.predict_encoded(num, cod)))
        out.append({"feature": feature, "role": scorer.preprocessor.role(feature),
                    "importance": float(np.nanmean(drops)), "std": float(np.nanstd(drops))})
    table = pd.DataFrame(out).sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
    return Importance(table, metric, base, len(take), repeats)


def predicted_vs_actual(y: np.ndarray, predicted: np.ndarray, title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(y, predicted, s=6, alpha=0.4)
    low, high = float(np.nanmin([y.min(), predicted.min()])), float(np.nanmax([y.max(), predicted.max()]))
    ax.plot([low, high], [low, high], ls="--", c="grey", label="predicted = actual")
    ax.set(xlabel="actual", ylabel="predicted", title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def residuals(y: np.ndarray, predicted: np.ndarray, title: str) -> Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    error = y - predicted
    left.scatter(predicted, error, s=6, alpha=0.4)
    left.axhline(0, ls="--", c="grey")
    left.set(xlabel="predicted", ylabel="actual - predicted", title="residuals vs predicted")
    right.hist(error, bins=40, color="tab:blue")
    right.set(xlabel="actual - predicted", ylabel="rows", title="residuals")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
