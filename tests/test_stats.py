import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from deepflow import stats


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_ap_matches_sklearn_with_ties_and_weights(decimals) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.05).astype(int)
    s = rng.random(3000) + 0.4 * y
    if decimals is not None:
        s = np.round(s, decimals)
    assert stats.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    w = np.bincount(rng.integers(0, 3000, 3000), minlength=3000)
    rows = np.repeat(np.arange(3000), w)
    assert stats.average_precision(y, s, w.astype(float)) == pytest.approx(
        average_precision_score(y[rows], s[rows]), abs=1e-12)


def test_paired_bootstrap_of_a_model_with_itself_is_zero() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(2000) < 0.05).astype(int)
    s = rng.random(2000) + y
    gain = stats.paired_bootstrap_ap(y, s, s, resamples=200)
    assert (gain.estimate, gain.low, gain.high) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_is_seeded_and_detects_a_real_gain() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(5000) < 0.05).astype(int)
    good, weak = rng.random(5000) + 0.8 * y, rng.random(5000) + 0.3 * y
    a = stats.paired_bootstrap_ap(y, good, weak, resamples=300, seed=7)
    assert a == stats.paired_bootstrap_ap(y, good, weak, resamples=300, seed=7)
    assert a.low > 0 and a.low < a.estimate < a.high
    noisy = stats.paired_bootstrap_ap(y, weak + rng.normal(0, 0.01, 5000), weak, resamples=300)
    assert noisy.low < 0 < noisy.high  # no real difference: the interval straddles zero


def test_single_model_interval_brackets_the_estimate() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(4000) < 0.05).astype(int)
    s = rng.random(4000) + 0.5 * y
    ci = stats.bootstrap_ap(y, s, resamples=300)
    assert ci.low < ci.estimate < ci.high and ci.resamples == 300
