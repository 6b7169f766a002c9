"""Text-classification metrics and their bootstrap intervals.

``f1`` is the positive class's F1 when the entry names a positive class, else the
macro F1 over all classes. Decisions are the arg-max class.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, matthews_corrcoef

from deepflow import stats


def _f1_from_counts(tp, fp, fn):
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), 0.0)


def _weighted_f1(labels: np.ndarray, preds: np.ndarray, positive: int | None, n_classes: int,
                 weights: np.ndarray) -> np.ndarray:
    """F1 under row weights: ``weights`` is (R, N) (bootstrap counts) -> (R,) values."""
    classes = [positive] if positive is not None else range(n_classes)
    scores = []
    for c in classes:
        hit, said, is_c = (labels == c) & (preds == c), preds == c, labels == c
        tp = weights @ hit
        scores.append(_f1_from_counts(tp, weights @ said - tp, weights @ is_c - tp))
    return np.mean(scores, axis=0)


def f1(labels: np.ndarray, preds: np.ndarray, positive: int | None, n_classes: int) -> float:
    return float(_weighted_f1(np.asarray(labels), np.asarray(preds), positive, n_classes,
                              np.ones((1, len(labels))))[0])


def text_metrics(labels: np.ndarray, proba: np.ndarray, positive: int | None) -> dict[str, float]:
    """``proba`` is (N, C) class probabilities."""
    n_classes = proba.shape[1]
    preds = proba.argmax(1)
    if positive is not None:
        pr_auc = average_precision_score(labels == positive, proba[:, positive])
    else:  # macro over the classes present
        pr_auc = np.mean([average_precision_score(labels == c, proba[:, c]) for c in np.unique(labels)])
    return {
        "f1": f1(labels, preds, positive, n_classes),
        "mcc": float(matthews_corrcoef(labels, preds)),
        "pr_auc": float(pr_auc),
        "accuracy": float(accuracy_score(labels, preds)),
    }


def bootstrap_f1(labels: np.ndarray, proba: np.ndarray, positive: int | None, *, resamples: int,
                 confidence: float, seed: int) -> stats.Interval:
    preds, n = proba.argmax(1), proba.shape[1]
    values = _weighted_f1(labels, preds, positive, n, stats.weight_matrix(len(labels), resamples, seed))
    return stats.interval(f1(labels, preds, positive, n), values, confidence)


def paired_bootstrap_f1(labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray, positive: int | None,
                        *, resamples: int, confidence: float, seed: int) -> stats.Interval:
    """F1(challenger) - F1(champion) on the same resampled rows."""
    n = challenger.shape[1]
    w = stats.weight_matrix(len(labels), resamples, seed)
    a, b = challenger.argmax(1), champion.argmax(1)
    diffs = _weighted_f1(labels, a, positive, n, w) - _weighted_f1(labels, b, positive, n, w)
    return stats.interval(f1(labels, a, positive, n) - f1(labels, b, positive, n), diffs, confidence)
