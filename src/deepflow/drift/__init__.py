"""Drift: how far an incoming batch has moved from the data the champion was trained on.

Pure functions over frames; no Prefect, no MLflow (``deepflow.monitoring`` logs the report,
``flows/monitor.py`` decides about retraining). Imports stay light: scipy, the sentence encoder
and the detector are imported only by the kind that needs them.

* ``statistics``: ``psi`` (population stability index over the reference's bins), ``ks``
  (two-sample Kolmogorov-Smirnov), ``jensen_shannon`` (token or class distributions), ...;
* ``report``: ``DriftConfig`` (every threshold, with the reason for its default in
  ``docs/monitoring.md``), ``Signal``, ``DriftReport``;
* ``detect(kind, reference, current, cfg, scorer=...)``: the kind's drift part
  (``deepflow.kinds.<kind>.drift.detect``) measures one ``Signal`` per quantity; the batch has
  drifted when at least ``min_drifted_share`` of the signals have;
* ``batches``: ``reference_frame(entry)`` (the champion's reference data), ``entry_features(entry)``
  (the feature columns its config names, if any), ``load_batch(kind, path)`` (an incoming batch
  file or folder), ``make_batch(entry, out_dir, rows=, drift=, seed=)`` (a new batch from the
  entry's ``incoming:`` generator, else its kind's generic one).

``python -m deepflow.drift make-batch <entry> data/incoming/<entry> --rows 300 --drift 1 --seed 1``
``python -m deepflow.drift report <entry> data/incoming/<entry>/<batch>.parquet [--champion]``
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from deepflow import kinds
from deepflow.drift.batches import (
    DriftInputError,
    batch_name,
    entry_config,
    entry_features,
    load_batch,
    make_batch,
    read_table,
    reference_frame,
    reference_rows,
    require_columns,
    sample_split,
    source_of,
    subsample,
    write_parquet,
)
from deepflow.drift.report import DriftConfig, DriftReport, Signal, numeric_signal, summarise
from deepflow.drift.statistics import (
    EPS,
    KS,
    bin_edges,
    bin_shares,
    chi2_pvalue,
    jensen_shannon,
    ks,
    psi,
    psi_test,
    total_variation,
)

__all__ = [
    "EPS", "KS", "DriftConfig", "DriftInputError", "DriftReport", "Signal", "batch_name", "bin_edges",
    "bin_shares", "chi2_pvalue", "detect", "entry_config", "entry_features", "jensen_shannon", "ks", "load_batch",
    "make_batch",
    "numeric_signal", "psi", "psi_test", "read_table", "reference_frame", "reference_rows", "require_columns",
    "sample_split", "source_of", "subsample", "summarise", "total_variation", "write_parquet",
]


def detect(kind: str, reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig | None = None,
           scorer: Any = None, *, use_case: str | None = None, features: list[str] | None = None,
           threshold: float | None = None) -> DriftReport:
    """Measure ``current`` against ``reference`` with the drift part of ``kind`` (an entry's kind).

    ``scorer`` (the champion) adds prediction drift: its outputs on both samples compared.
    ``features``: tabular columns (default: the scorer's ``features``). ``threshold``: detections
    counted at or above it (default ``cfg.detection_threshold``). A kind ignores what it has no use
    for. Raises ``ValueError`` for an unknown kind and ``DriftInputError`` for an empty side.
    """
    part = kinds.part(kind, "drift")
    cfg = cfg or DriftConfig()
    use_case = use_case or str(reference.attrs.get("use_case", ""))
    if current.empty:
        raise DriftInputError(f"{source_of(current, 'current batch')}: no rows to measure")
    if reference.empty:
        raise DriftInputError(f"{source_of(reference, 'reference')}: no reference rows")
    return part.detect(reference, current, cfg, scorer, use_case=use_case, features=features, threshold=threshold)
