"""Comparing a rebuild with its record: metrics, predictions, and the verdict (pure functions)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

EXACT, WITHIN, MISMATCH, UNRECOVERABLE = "exact", "within tolerance", "mismatch", "unrecoverable"


def metric_rows(recorded: dict[str, float], rebuilt: dict[str, float] | None, tolerance: float) -> dict[str, dict]:
    """Each recorded metric beside the rebuilt one: ``diff`` (absolute; NaN beside NaN is 0) and ``ok``."""
    rows = {}
    for key, value in sorted(recorded.items()):
        got = None if rebuilt is None else rebuilt.get(key)
        diff = None if got is None else _diff(float(value), float(got))
        rows[key] = {"recorded": value, "rebuilt": got, "diff": diff, "ok": diff is not None and diff <= tolerance}
    return rows


def _diff(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b) if not (math.isnan(a) or math.isnan(b)) else math.inf


def _numeric(predictions: Any) -> np.ndarray:
    if isinstance(predictions, pd.DataFrame):
        return predictions.select_dtypes("number").to_numpy(dtype=np.float64)
    return np.asarray(predictions, dtype=np.float64)


def scores(original: Any, rebuilt: Any) -> dict[str, Any]:
    """Score arrays (one score per row, or one per row and class): largest and mean absolute
    difference, the share of rows whose top class agrees (several columns), ``identical``."""
    a, b = _numeric(original), _numeric(rebuilt)
    if a.shape != b.shape:
        return {"identical": False, "comparable": False,
                "detail": f"shapes differ: registered {list(a.shape)}, rebuilt {list(b.shape)}"}
    diff = np.abs(a - b)
    diff[np.isnan(a) & np.isnan(b)] = 0.0
    diff[np.isnan(diff)] = np.inf
    out: dict[str, Any] = {
        "identical": bool(np.array_equal(a, b, equal_nan=True)), "comparable": True, "rows": int(a.shape[0]),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
    }
    if a.ndim == 2 and a.shape[1] > 1:
        out["same_top_class_share"] = float((a.argmax(1) == b.argmax(1)).mean()) if len(a) else 1.0
    top = out.get("same_top_class_share")
    out["detail"] = (f"max |score difference| {out['max_abs_diff']:.3g} over {out['rows']} test rows"
                     + (f", top class agrees on {top:.1%}" if top is not None else ""))
    return out


def verdict(rows: dict[str, dict], predictions: dict[str, Any] | None, exact_expected: bool,
            tolerance: float) -> tuple[str, str]:
    """(verdict, one-line reason). Exact expected: every metric equal and identical predictions."""
    missing = [k for k, r in rows.items() if r["rebuilt"] is None]
    if missing:
        return MISMATCH, f"the rebuild did not report {', '.join(f'test/{k}' for k in missing)}"
    off = [(k, r) for k, r in rows.items() if not r["ok"]]
    if off:
        key, r = max(off, key=lambda kr: kr[1]["diff"])
        return MISMATCH, (f"test/{key}: rebuilt {r['rebuilt']:.4f} vs recorded {r['recorded']:.4f} (|diff| "
                          f"{r['diff']:.4g} > {'0, exact expected' if exact_expected else f'tolerance {tolerance}'})")
    if predictions is not None and exact_expected and not predictions.get("identical"):
        return MISMATCH, f"the test metrics match but the predictions differ: {predictions.get('detail')}"
    if all(r["diff"] == 0 for r in rows.values()) and (predictions is None or predictions.get("identical")):
        return EXACT, "every test metric and every test prediction is identical"
    worst = max(rows.values(), key=lambda r: r["diff"], default=None)
    return WITHIN, (f"within tolerance {tolerance} (largest |diff| {worst['diff']:.4g})" if worst else
                    f"within tolerance {tolerance}")
