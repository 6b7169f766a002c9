"""Drift of the ``table`` kind (``deepflow.drift.detect(kind="table")``), its batches, and the generic
batch generator of table entries.

Signals, each against the champion's reference rows (the prepared train split):

* one per numeric or boolean feature: PSI over the reference's bins (one per value for discrete
  columns, deciles otherwise, plus a missing bin), confirmed by its chi-square p-value, or a
  significant KS gap (``deepflow.drift.numeric_signal``, as the ``tabular`` kind);
* one per categorical feature: PSI over the shares of the reference's most frequent categories
  (``psi_bins - 1`` of them), ``(other)`` (every other value, unseen ones included) and
  ``(missing)``, confirmed by a chi-square test of the counts;
* with a scorer, the champion's answers on both samples: binary the probability and regression
  the value (as a numeric signal), multiclass the predicted class shares (total variation,
  confirmed by a chi-square test; ``label_share_shift`` as for text).

Datetime features give no signal: new data is later by nature, so a timestamp always "drifts";
the model reads their parts, and a column that stops parsing shows as missing inputs in the notes.
Column roles come from the scorer's ``columns``; without a scorer, from the reference's dtypes
(the prepared data's: float64 numbers, str categories, datetime64 dates).

Batches are files holding (at least) the feature columns, values as the source file has them:
read as the entry's source was (``read_batch``, given the entry: delimiter, encoding, header,
missing-value tokens, decimal commas; see ``inputs.py``) and parsed as batch scoring does (a
datetime in its column's recorded format, from the scorer's ``columns`` or else the entry's).
``make_batch`` is what an entry without an ``incoming:`` generator gets: rows drawn without
replacement from the prepared train, validation and test splits pooled (a batch at ``drift`` 0
is then a sample of the data itself, with no duplicated rows to look like a shift; at most the
pool's size, with a warning), the target left out, and for ``drift`` > 0 numeric features scaled
and moved (as the ``tabular`` kind), a ``drift / 3`` share of each boolean set to its rarer
value, and a ``drift / 2`` share of each categorical column redrawn with the rarest categories
most likely (the category mix turns over).
"""

from __future__ import annotations

import warnings
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
    require_columns,
    write_parquet,
)
from deepflow.drift.report import DriftConfig, DriftReport, Signal, numeric_signal, summarise
from deepflow.drift.statistics import EPS, chi2_pvalue, total_variation
from deepflow.kinds.table import inputs
from deepflow.kinds.table.batch import parse

OTHER, MISSING = "(other)", "(missing)"
ROW_HASH = "_row_hash"


def infer_columns(reference: pd.DataFrame, features: list[str]) -> dict[str, dict[str, Any]]:
    """Roles (and categories) from the prepared reference's dtypes, when no scorer says them."""
    out: dict[str, dict[str, Any]] = {}
    for col in features:
        values = reference[col]
        if pd.api.types.is_datetime64_any_dtype(values):
            out[col] = {"role": "datetime"}
        elif pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            seen = set(pd.unique(values.dropna().astype(float)))
            out[col] = {"role": "boolean" if seen and seen <= {0.0, 1.0} else "numeric"}
        else:
            counts = values.dropna().astype(str).str.strip().value_counts()
            out[col] = {"role": "categorical", "categories": [str(c) for c in counts.index], "unknown": "other"}
    return out


def category_signal(name: str, reference: pd.Series, current: pd.Series, cfg: DriftConfig) -> Signal:
    """PSI over category shares (module docstring), confirmed by chi-square."""
    top = [str(c) for c in reference.dropna().value_counts().index[: max(cfg.psi_bins - 1, 1)]]
    buckets = [*top, OTHER, MISSING]

    def counts(values: pd.Series) -> np.ndarray:
        labels = values.where(values.isin(top), OTHER).where(values.notna(), MISSING)
        return labels.value_counts().reindex(buckets, fill_value=0).to_numpy(dtype=np.float64)

    c_ref, c_cur = counts(reference), counts(current)
    r, c = c_ref / max(c_ref.sum(), 1), c_cur / max(c_cur.sum(), 1)
    value = float(np.sum((np.maximum(c, EPS) - np.maximum(r, EPS)) * np.log(np.maximum(c, EPS) / np.maximum(r, EPS))))
    p = chi2_pvalue(c_ref, c_cur)
    moves = sorted(range(len(buckets)), key=lambda i: -abs(c[i] - r[i]))[:3]
    detail = ", ".join(f"{buckets[i]} {r[i]:.1%} -> {c[i]:.1%}" for i in moves if c[i] != r[i])
    return Signal(name, "psi", value, cfg.psi_threshold, bool(value >= cfg.psi_threshold and p < cfg.pvalue),
                  f"{detail or 'shares unchanged'} (chi2 p={p:.1e})")


def detect(reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig, scorer: Any = None, *,
           use_case: str = "", features: list[str] | None = None, threshold: float | None = None) -> DriftReport:
    """The signals of the module docstring. ``features`` default to the scorer's; ``threshold`` is
    not used (binary prediction drift is on the probability, not on decisions)."""
    features, ref, cur = feature_frames("table", reference, current, cfg, scorer, features)
    specs = infer_columns(ref, features)
    entry = inputs.entry_config(use_case)
    if scorer is not None and getattr(scorer, "columns", None):
        specs.update({f: s for f, s in scorer.columns.items() if f in specs})
    elif entry is not None:  # the datetime formats the source was read with
        for f, spec in specs.items():
            if spec["role"] == "datetime" and f in entry.columns:
                spec["format"] = entry.columns[f].format
    missing = inputs.missing_tokens(entry)
    notes = [f"current batch subsampled to {len(cur):,} of {len(current):,} rows"] if len(cur) < len(current) else []
    ref_x, _ = parse(ref, features, specs, unknown="other", missing=missing)
    cur_x, problems = parse(cur, features, specs, unknown="other", missing=missing)
    if problems:
        cells = sum(len(v) for v in problems.values())
        bad = sorted({c for v in problems.values() for c, _ in v})
        notes.append(f"{cells:,} current values did not parse and count as missing (in {', '.join(bad[:8])})")
    signals, samples = [], {}
    for col in features:
        role = specs[col]["role"]
        if role in ("numeric", "boolean"):
            r, c = ref_x[col].to_numpy(dtype=np.float64), cur_x[col].to_numpy(dtype=np.float64)
            signals.append(numeric_signal(col, r, c, cfg))
            samples[col] = (r[:5000], c[:5000])
        elif role == "categorical":
            signals.append(category_signal(col, ref_x[col], cur_x[col], cfg))
    if dates := [c for c in features if specs[c]["role"] == "datetime"]:
        notes.append(f"datetime column(s) {', '.join(dates)} give no signal (new data is later by nature)")
    if scorer is not None:
        _prediction_signal(scorer, ref, cur, cfg, signals, samples, notes, missing)
    return summarise(use_case, "table", len(ref), len(cur), signals, cfg, notes, samples)


def _prediction_signal(scorer: Any, ref: pd.DataFrame, cur: pd.DataFrame, cfg: DriftConfig,
                       signals: list[Signal], samples: dict, notes: list[str], missing: frozenset[str]) -> None:
    """The champion's answers on both samples (module docstring); rows without a finite answer are
    left out (and counted in the notes)."""
    columns = list(scorer.features)
    if absent := [c for c in columns if c not in ref.columns or c not in cur.columns]:
        notes.append(f"prediction drift not measured: the model needs column(s) {', '.join(absent[:5])}")
        return
    specs = scorer.columns
    answers = []
    for frame in (ref, cur):
        x, _ = parse(frame, columns, specs, unknown="other", missing=missing)  # unseen categories: "other"
        out = np.asarray(scorer.predict(x), dtype=np.float64).reshape(len(x), -1)
        answers.append(out[np.isfinite(out).all(axis=1)])
    if dropped := len(cur) - len(answers[1]):
        notes.append(f"{dropped:,} current rows got no finite answer from the model")
    a_ref, a_cur = answers
    if not len(a_ref) or not len(a_cur):
        return
    if scorer.task == "multiclass":
        classes = [str(c) for c in scorer.classes]
        n_ref = np.bincount(a_ref.argmax(1), minlength=len(classes))
        n_cur = np.bincount(a_cur.argmax(1), minlength=len(classes))
        tvd, p = total_variation(n_ref, n_cur), chi2_pvalue(n_ref, n_cur)
        shares = ", ".join(f"{k} {x / n_ref.sum():.1%} -> {y / n_cur.sum():.1%}"
                           for k, x, y in zip(classes, n_ref, n_cur, strict=True))
        signals.append(Signal("predicted_classes", "tvd", tvd, cfg.label_share_shift,
                              bool(tvd >= cfg.label_share_shift and p < cfg.pvalue), f"{shares} (chi2 p={p:.1e})"))
        return
    s_ref, s_cur = a_ref[:, 0], a_cur[:, 0]
    signals.append(numeric_signal("prediction", s_ref, s_cur, cfg))
    what = "probability" if scorer.task == "binary" else "value"
    signals[-1].detail += f"; mean {what} {s_ref.mean():.4g} -> {s_cur.mean():.4g}"
    samples["prediction"] = (s_ref[:5000], s_cur[:5000])


# --- batches ---------------------------------------------------------------------------------


def read_batch(entry: str | None, path: Path, features: list[str] | None = None) -> pd.DataFrame:
    """A batch file read as entry ``entry``'s source was (``inputs.py``; without an entry, or one
    that does not exist: CSV, comma-separated, UTF-8, only empty fields missing); with
    ``features``, every one must be a column."""
    cfg = inputs.entry_config(entry)
    numeric = [c for c, spec in cfg.columns.items() if spec.role == "numeric"] if cfg is not None else []
    try:
        columns, _, chunks = inputs.read_chunks(path, inputs.read_settings(path, cfg), 200_000, numeric)
        frames = list(chunks)
    except inputs.InputError as exc:
        raise DriftInputError(str(exc)) from None
    frame = pd.concat(frames) if frames else pd.DataFrame(columns=columns)
    if frame.empty:
        raise DriftInputError(f"{path}: no rows")
    if features:
        require_columns(frame, list(features), str(path))
    return frame


def load_batch(path: Path, features: list[str] | None = None) -> pd.DataFrame:
    """A batch file without its entry: :func:`read_batch` with the default reading."""
    return read_batch(None, path, features)


def _shift_categories(values: pd.Series, share: float, rng: np.random.Generator) -> pd.Series:
    """A ``share`` of the rows redrawn among the seen categories, the rarest most likely."""
    counts = values.dropna().value_counts()
    if len(counts) < 2 or share <= 0:
        return values
    weights = 1.0 / counts.to_numpy(dtype=np.float64)
    pick = rng.uniform(size=len(values)) < share
    drawn = rng.choice(counts.index.to_numpy(dtype=object), size=int(pick.sum()), p=weights / weights.sum())
    out = values.astype(object).copy()
    out[pick] = drawn
    return out


def make_batch(name: str, out_dir: Path, *, rows: int, drift: float, seed: int,
               overrides: Sequence[str] = ()) -> Path:
    """Write ``<name>-n<rows>-drift<d>-seed<s>.parquet``: ``rows`` rows of entry ``name``'s prepared
    splits pooled (train, validation, test), drawn without replacement (at most the pool: then
    fewer rows, a warning, and the file named by the rows it has), without the target and the row
    hash, shifted as the module docstring says. ``overrides``: the entry's config ``key=value``
    (e.g. ``prepared_dir=...``)."""
    from deepflow import usecase

    cfg = entry_config(name, overrides)
    directory = usecase.project_path(cfg.prepared_dir)
    present = [s for s in ("train", "val", "test") if (directory / f"{s}.parquet").exists()]
    if not present:
        raise FileNotFoundError(f"{name}: no prepared train/val/test split in {directory} to draw a batch from "
                                "(run `make data` first)")
    pool = pd.concat(usecase.read_splits(name, directory, tuple(present)).values(), ignore_index=True)
    if pool.empty:
        raise DriftInputError(f"{directory}: no rows to draw a batch from")
    if rows > len(pool):
        warnings.warn(f"{name}: a batch of {rows:,} rows asked for, but the prepared splits hold {len(pool):,}; "
                      f"writing {len(pool):,} (rows are drawn without replacement)", UserWarning, stacklevel=2)
        rows = len(pool)
    rng = np.random.default_rng(seed)
    batch = pool.iloc[rng.choice(len(pool), size=rows, replace=False)].reset_index(drop=True)
    batch = batch.drop(columns=[cfg.target, ROW_HASH], errors="ignore")
    if drift > 0:
        for col, spec in cfg.columns.items():
            if col not in batch.columns:
                continue
            if spec.role == "numeric":
                ref = pool[col].to_numpy(dtype=np.float64, na_value=np.nan)
                mean, std = float(np.nanmean(ref)), float(np.nanstd(ref))
                spread = std if std > 0 else max(abs(mean), 1.0)  # a constant column still moves
                x = batch[col].to_numpy(dtype=np.float64, na_value=np.nan)
                batch[col] = mean + (x - mean) * (1 + drift / 2) + drift * spread * rng.uniform(0.5, 1.0)
            elif spec.role == "boolean":
                x = batch[col].to_numpy(dtype=np.float64, na_value=np.nan)
                rare = 1.0 if np.nanmean(pool[col].to_numpy(dtype=np.float64, na_value=np.nan)) < 0.5 else 0.0
                batch[col] = np.where(rng.uniform(size=len(x)) < drift / 3, rare, x)
            elif spec.role == "categorical":
                batch[col] = _shift_categories(batch[col], drift / 2, rng)
    return write_parquet(batch, out_dir / batch_name(name, rows, drift, seed))
