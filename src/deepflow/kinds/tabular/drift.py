"""Tabular drift (``deepflow.drift.detect(kind="tabular")``), tabular batches, and the generic
batch generator of tabular entries.

Signals, each against the champion's reference rows (the prepared train split):

* one per feature: PSI over the reference's bins (one per value for discrete columns, deciles
  otherwise, plus a missing bin), confirmed by its chi-square p-value, or a significant KS gap;
* ``prediction`` (with a scorer): the champion's scores on both samples, measured the same way.

Batches are CSV or parquet files holding (at least) the entry's feature columns.

``make_batch`` is what an entry without its own ``incoming:`` generator gets: rows resampled (with
replacement) from the prepared test split, the label left out (labels arrive late), and for
``drift`` > 0 every numeric feature scaled around its mean by ``1 + drift / 2`` and moved up by
``drift`` x (a seeded 0.5-1) reference standard deviations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepflow.drift.batches import (
    DriftInputError,
    batch_name,
    entry_config,
    feature_frames,
    read_table,
    require_columns,
    sample_split,
    source_of,
    write_parquet,
)
from deepflow.drift.report import DriftConfig, DriftReport, Signal, numeric_signal, summarise


def detect(reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig, scorer: Any = None, *,
           use_case: str = "", features: list[str] | None = None, threshold: float | None = None
           ) -> DriftReport:
    """One PSI/KS signal per feature, plus ``prediction`` (the scorer's scores) when a scorer is
    given. ``features`` default to the scorer's; ``threshold`` is not used by this kind."""
    features, ref, cur = feature_frames("tabular", reference, current, cfg, scorer, features)
    notes = []
    if len(cur) < len(current):
        notes.append(f"current batch subsampled to {len(cur):,} of {len(current):,} rows")
    ref_x, cur_x = _numeric(ref, features, "reference"), _numeric(cur, features, "current batch")
    signals, samples = [], {}
    for col in features:
        signals.append(numeric_signal(col, ref_x[col].to_numpy(), cur_x[col].to_numpy(), cfg))
        samples[col] = (ref_x[col].to_numpy()[:5000], cur_x[col].to_numpy()[:5000])
    if scorer is not None:
        _prediction_signal(scorer, ref, cur, features, cfg, signals, samples, notes)
    return summarise(use_case, "tabular", len(ref), len(cur), signals, cfg, notes, samples)


def _prediction_signal(scorer: Any, ref: pd.DataFrame, cur: pd.DataFrame, features: list[str], cfg: DriftConfig,
                       signals: list[Signal], samples: dict, notes: list[str]) -> None:
    """The scorer's scores on both samples (rows with every model input numeric) as a numeric signal."""
    inputs = list(getattr(scorer, "features", None) or features)  # the model's own columns
    if missing := [c for c in inputs if c not in ref.columns or c not in cur.columns]:
        notes.append(f"prediction drift not measured: the model needs column(s) {', '.join(missing[:5])}")
        return
    ref_x, cur_x = _numeric(ref, inputs, "reference"), _numeric(cur, inputs, "current batch")
    ok_r, ok_c = np.isfinite(ref_x.to_numpy()).all(1), np.isfinite(cur_x.to_numpy()).all(1)
    if (~ok_c).any():
        notes.append(f"{(~ok_c).sum():,} current rows with a missing or non-numeric model input were not scored")
    if not ok_c.any() or not ok_r.any():
        return
    s_ref = np.asarray(scorer.predict(ref_x[ok_r]), dtype=np.float64).reshape(-1)
    s_cur = np.asarray(scorer.predict(cur_x[ok_c]), dtype=np.float64).reshape(-1)
    signals.append(numeric_signal("prediction", s_ref, s_cur, cfg))
    signals[-1].detail += f"; mean score {s_ref.mean():.4f} -> {s_cur.mean():.4f}"
    samples["prediction"] = (s_ref[:5000], s_cur[:5000])


def _numeric(frame: pd.DataFrame, features: list[str], what: str) -> pd.DataFrame:
    """Feature columns as float64; unparsable values become NaN (they land in PSI's missing bin)."""
    out = {}
    for col in features:
        values = frame[col]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            out[col] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            parsed = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            if values.notna().any() and not np.isfinite(parsed).any():
                raise DriftInputError(f"{source_of(frame, what)}: column {col} holds no numbers "
                                      f"(e.g. {str(values.dropna().iloc[0])[:40]!r})")
            out[col] = parsed
    return pd.DataFrame(out, index=frame.index)


# --- batches ---------------------------------------------------------------------------------


def load_batch(path: Path, features: list[str] | None = None) -> pd.DataFrame:
    """A CSV or parquet batch; with ``features``, every one must be a column."""
    frame = read_table(path)
    if features:
        require_columns(frame, list(features), str(path))
    return frame


def make_batch(name: str, out_dir: Path, *, rows: int, drift: float, seed: int,
               overrides: Sequence[str] = ()) -> Path:
    """Write ``<name>-n<rows>-drift<d>-seed<s>.parquet``: ``rows`` rows of entry ``name``'s prepared
    test split (val, then train, when it has none) drawn with replacement, without the label, the
    numeric features shifted as the module docstring says. ``overrides``: the entry's config
    ``key=value`` (e.g. ``prepared_dir=...``)."""
    cfg = entry_config(name, overrides)
    pool, _ = sample_split(name, overrides)
    rng = np.random.default_rng(seed)
    batch = pool.iloc[rng.integers(0, len(pool), size=rows)].reset_index(drop=True)
    batch = batch.drop(columns=[cfg.label], errors="ignore")
    if drift > 0:
        for col in cfg.features:
            if col not in batch.columns or not pd.api.types.is_numeric_dtype(pool[col]):
                continue
            ref = pool[col].to_numpy(dtype=np.float64, na_value=np.nan)
            mean, std = float(np.nanmean(ref)), float(np.nanstd(ref))
            spread = std if std > 0 else max(abs(mean), 1.0)  # a constant column still moves
            x = batch[col].to_numpy(dtype=np.float64, na_value=np.nan)
            batch[col] = mean + (x - mean) * (1 + drift / 2) + drift * spread * rng.uniform(0.5, 1.0)
    return write_parquet(batch, out_dir / batch_name(name, rows, drift, seed))
