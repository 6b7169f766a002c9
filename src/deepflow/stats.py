"""Bootstrap intervals for metrics measured on a test split (seeded, so decisions reproduce).

Resampling is expressed as integer row weights (how often each row was drawn), which lets a
metric sort its scores once and reuse that order for every resample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

WeightedMetric = Callable[[np.ndarray, np.ndarray, np.ndarray], float]  # (y, scores, weights)


class RankedAP:
    """Average precision (sklearn's step-wise definition, ties grouped) under row weights.

    Sorting happens once; each weighted evaluation is one gather and one cumulative sum.
    """

    def __init__(self, y: np.ndarray, scores: np.ndarray) -> None:
        self.order = np.argsort(-scores, kind="stable")
        s, y_sorted = scores[self.order], np.asarray(y)[self.order]
        ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last row of each tie group
        self.pos = np.flatnonzero(y_sorted == 1)  # positives, in score order
        group_end = ends[np.searchsorted(ends, self.pos)]  # (P,) tie-group end of each positive
        # read precision once per tie group that holds positives, after its last positive
        last = np.flatnonzero(np.r_[group_end[1:] != group_end[:-1], True])
        self.group_end, self.last_pos = group_end[last], last

    def __call__(self, weights: np.ndarray) -> float:
        w = weights[self.order]
        if len(self.pos) == 0:
            return float("nan")
        tp = np.cumsum(w[self.pos])[self.last_pos]  # (G,) weighted true positives per group
        if tp[-1] == 0:
            return float("nan")
        seen = np.cumsum(w)[self.group_end]  # (G,) weighted rows ranked at or above
        precision = tp / np.maximum(seen, 1e-12)
        return float(np.sum(np.diff(np.r_[0.0, tp]) / tp[-1] * precision))


def average_precision(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    w = np.ones(len(y)) if weights is None else weights
    return RankedAP(np.asarray(y), np.asarray(scores, dtype=np.float64))(w)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    confidence: float
    resamples: int

    def __str__(self) -> str:
        return f"{self.estimate:.4f} [{self.low:.4f}, {self.high:.4f}]"


def _weights(n: int, resamples: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)


def bootstrap_ap(y: np.ndarray, scores: np.ndarray, *, resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> Interval:
    """Percentile interval of one model's average precision."""
    ap = RankedAP(np.asarray(y), np.asarray(scores, dtype=np.float64))
    values = np.array([ap(w) for w in _weights(len(y), resamples, seed)])
    return interval(ap(np.ones(len(y))), values, confidence)


def paired_bootstrap_ap(y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, *,
                        resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Interval of AP(challenger) - AP(champion), both scored on the same resampled rows."""
    a = RankedAP(np.asarray(y), np.asarray(challenger, dtype=np.float64))
    b = RankedAP(np.asarray(y), np.asarray(champion, dtype=np.float64))
    diffs = np.array([a(w) - b(w) for w in _weights(len(y), resamples, seed)])
    ones = np.ones(len(y))
    return interval(a(ones) - b(ones), diffs, confidence)


def weight_matrix(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) bootstrap counts: row r says how often each of n rows is drawn in resample r."""
    return np.stack(list(_weights(n, resamples, seed)))


def interval(estimate: float, values: np.ndarray, confidence: float) -> Interval:
    """Percentile interval of bootstrap ``values`` around the full-sample ``estimate``."""
    values = values[np.isfinite(values)]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan, np.nan)
    return Interval(float(estimate), float(low), float(high), confidence, len(values))
