"""Regression figures of the ``table`` kind: predicted vs actual, residuals. (What a model relies on,
Shapley values and permutation importance of the raw columns, comes from ``deepflow.importance``.)"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


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
