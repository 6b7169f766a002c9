"""What a trustworthy promotion costs: the paired bootstrap on the real fraud test split.

Side by side in one run: deepflow's weighted-AP bootstrap (sort once, one cumulative sum per
resample) vs. the textbook loop (resample rows, call sklearn's average_precision_score twice).
Both give the same interval for the same seed's draws; only the cost differs.

    .venv/bin/python bench/promotion_cost.py
"""

from __future__ import annotations

import json
import time

import numpy as np
from sklearn.metrics import average_precision_score

from deepflow import settings, stats, usecase


def naive_paired(y, a, b, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    n = len(y)
    for _ in range(resamples):
        counts = np.bincount(rng.integers(0, n, n), minlength=n)  # same draws as deepflow.stats
        rows = np.repeat(np.arange(n), counts)
        out.append(average_precision_score(y[rows], a[rows]) - average_precision_score(y[rows], b[rows]))
    return np.array(out)


def main() -> None:
    uc = usecase.get("fraud", ["train.epochs=3"])
    splits = uc.load_splits()
    test = splits["test"]
    y = test[uc.cfg.label].to_numpy()
    shallow, _ = uc.fit("shallow", "candidate", splits)
    lr, _ = uc.fit("logistic_regression", "baseline", splits)
    a, b = shallow.predict(test), lr.predict(test)
    rows = {}
    for resamples in (200, 1000, 5000):
        t = time.perf_counter()
        gain = stats.paired_bootstrap_ap(y, a, b, resamples=resamples, seed=0)
        rows[resamples] = {"seconds": time.perf_counter() - t, "interval": [gain.low, gain.high]}
        print(f"deepflow paired bootstrap, {resamples:>5} resamples on {len(y):,} rows: "
              f"{rows[resamples]['seconds']:.2f} s  gain {gain}")
    t = time.perf_counter()
    naive = naive_paired(y, a, b, 50, seed=0)
    naive_per = (time.perf_counter() - t) / 50
    ours_per = rows[1000]["seconds"] / 1000
    ours50 = np.array([stats.RankedAP(y, a)(w) - stats.RankedAP(y, b)(w)
                       for w in stats._weights(len(y), 50, 0)])
    same = bool(np.allclose(naive, ours50, atol=1e-12))
    print(f"textbook loop (resample + sklearn x2): {naive_per * 1000:.1f} ms per resample; "
          f"deepflow: {ours_per * 1000:.2f} ms -> {naive_per / ours_per:.0f}x faster; identical values: {same}")
    out = settings.PROJECT_ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "promotion_cost.json").write_text(json.dumps(
        {"rows": len(y), "deepflow": rows, "naive_ms_per_resample": naive_per * 1000,
         "deepflow_ms_per_resample": ours_per * 1000, "identical": same}, indent=2))


if __name__ == "__main__":
    main()
