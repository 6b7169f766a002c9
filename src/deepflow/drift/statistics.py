"""Two-sample statistics behind the drift signals: pure numpy (scipy for the tests' p-values).

* ``psi``/``psi_test``: population stability index over the reference's bins (one bin per value
  for discrete columns, quantile bins otherwise, plus a bin for missing values), with the
  chi-square p-value that tells a shift from sampling noise;
* ``ks``: two-sample Kolmogorov-Smirnov; ``jensen_shannon``: token or class distributions;
  ``total_variation`` and ``chi2_pvalue``: class shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EPS = 1e-4  # floor on a bin's share in PSI: an empty bin costs a large but finite amount


def bin_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner edges of right-closed bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``.

    Up to ``bins`` distinct reference values: one bin per value (so binary and count columns get
    a bin each, not empty quantile bins); more: the reference's deciles (for ``bins=10``), with
    repeated quantiles merged, so a point mass (many zeros) is one bin rather than several empty
    ones. A constant reference gives one edge: the value itself.
    """
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if not len(ref):
        return np.zeros(0)
    values = np.unique(ref)
    if len(values) <= bins:
        return values[:-1] if len(values) > 1 else values
    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_shares(values: np.ndarray, edges: np.ndarray, missing_bin: bool) -> np.ndarray:
    """Share of ``values`` per bin (``bin_edges``); non-finite values go to a last, missing bin."""
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    counts = np.bincount(np.searchsorted(edges, x[finite], side="left"), minlength=len(edges) + 1)
    if missing_bin:
        counts = np.append(counts, (~finite).sum())
    return counts / max(len(x), 1)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index ``sum((c - r) * ln(c / r))`` over the reference's bins.

    Shares below ``EPS`` are raised to ``EPS`` (an empty bin adds a large, finite term). Missing
    or infinite values form a bin of their own when either side has any, so a column that starts
    arriving empty drifts like any other. Identical samples give 0; the usual reading is < 0.1
    stable, 0.1-0.2 moderate, > 0.2 a significant shift.
    """
    return psi_test(reference, current, bins)[0]


def psi_test(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> tuple[float, float]:
    """(PSI, p-value of "no shift"). Between two samples of one distribution PSI is not 0 but
    about ``(1/n_r + 1/n_c) * chi2(B - 1)`` for B bins (Yurdakul, *Statistical properties of the
    population stability index*, 2018): 100 frames against 500 already average ~0.1 with ten
    bins. The p-value is Pearson's chi-square test of homogeneity on the same bin counts, the
    statistic PSI approximates, which stays sane where a small batch leaves a bin empty (there the
    ``EPS`` floor makes PSI itself jumpy)."""
    ref, cur = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if not len(ref) or not len(cur):
        raise ValueError("psi needs at least one reference and one current value")
    edges = bin_edges(ref, bins)
    missing = bool((~np.isfinite(ref)).any() or (~np.isfinite(cur)).any())
    r_raw, c_raw = bin_shares(ref, edges, missing), bin_shares(cur, edges, missing)
    r, c = np.maximum(r_raw, EPS), np.maximum(c_raw, EPS)
    value = float(np.sum((c - r) * np.log(c / r)))
    return value, chi2_pvalue(r_raw * len(ref), c_raw * len(cur))


@dataclass(frozen=True)
class KS:
    statistic: float  # largest gap between the two empirical CDFs, in [0, 1]
    pvalue: float


def ks(reference: np.ndarray, current: np.ndarray) -> KS:
    """Two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``) on the finite values."""
    from scipy import stats

    ref, cur = (np.asarray(a, dtype=np.float64) for a in (reference, current))
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if not len(ref) or not len(cur):
        return KS(float("nan"), float("nan"))
    result = stats.ks_2samp(ref, cur)
    return KS(float(result.statistic), float(result.pvalue))


def jensen_shannon(p: Any, q: Any) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two count or share vectors, aligned arrays
    or mappings ``key -> count`` (keys missing on one side count 0)."""
    if isinstance(p, dict) or isinstance(q, dict):
        keys = sorted(set(p) | set(q), key=str)
        p, q = [p.get(k, 0) for k in keys], [q.get(k, 0) for k in keys]
    a, b = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if a.sum() <= 0 or b.sum() <= 0:
        raise ValueError("jensen_shannon needs two non-empty distributions")
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return max(0.0, 0.5 * kl(a) + 0.5 * kl(b))


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance of two share vectors: the largest share any set of classes gains."""
    a, b = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    return float(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())


def chi2_pvalue(counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """Chi-square test of homogeneity of two count vectors over the same categories."""
    from scipy import stats

    table = np.vstack([counts_a, counts_b]).astype(np.float64)
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2 or (table.sum(1) == 0).any():
        return 1.0
    return float(stats.chi2_contingency(table)[1])
