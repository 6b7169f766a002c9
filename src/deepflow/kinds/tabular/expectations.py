"""The ``tabular`` kind's data contract, as Great Expectations suites (one per validated frame).

``rows``: every row of every split. ``splits``: one row per split (time bounds, counts),
so that "time-ordered, non-overlapping splits" is an expectation like any other. The optional
columns (``id_column``, ``time_column``, ``entity_column``) add their checks only when the entry
names them: ids unique across all splits (no row in two splits), splits ordered in time.
"""

from __future__ import annotations

import great_expectations.expectations as gxe
import pandas as pd

from deepflow import validation
from deepflow.kinds.tabular.config import TabularConfig

SPLITS = ("train", "val", "test")
NUMERIC = ["int8", "int16", "int32", "int64", "float32", "float64"]


def frames(cfg: TabularConfig, splits: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The frames the suites look at, built from the prepared splits."""
    rows = validation.rows_of(splits)
    summary = []
    prev_max = None
    for name in SPLITS:
        frame = splits[name]
        if cfg.time_column is not None:
            t = (frame[cfg.time_column] - pd.Timestamp(0)) // pd.Timedelta(seconds=1)  # epoch s
        else:
            t = pd.Series([], dtype="int64")
        summary.append(
            {
                "split": name,
                "rows": len(frame),
                "positives": int(frame[cfg.label].sum()),
                "t_min": t.min() if len(t) else None,
                "t_max": t.max() if len(t) else None,
                "prev_t_max": prev_max,
            }
        )
        prev_max = summary[-1]["t_max"]
    copied = [c for c in rows.columns if c not in ("split", "_row", cfg.id_column)]
    return {"rows": rows, "splits": pd.DataFrame(summary), "duplicates": validation.duplicates(rows, copied)}


def suites(cfg: TabularConfig) -> dict[str, list]:
    label, key = cfg.label, cfg.id_column
    optional = [c for c in (key, cfg.time_column, cfg.entity_column) if c is not None]
    required = [label, *optional, *cfg.features]
    rows: list = [gxe.ExpectTableColumnsToMatchSet(column_set=required, exact_match=False)]
    for col in [c for c in (key, label, cfg.entity_column) if c is not None] + list(cfg.features):
        rows.append(gxe.ExpectColumnValuesToNotBeNull(column=col))
    for col in cfg.features:
        rows.append(gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=NUMERIC))
    rows += [
        gxe.ExpectColumnValuesToBeInSet(column=label, value_set=[0, 1]),
        gxe.ExpectColumnMeanToBeBetween(
            column=label, min_value=cfg.positive_rate_min, max_value=cfg.positive_rate_max
        ),
    ]
    if key is not None:
        rows.append(gxe.ExpectColumnValuesToBeUnique(column=key))
    rows += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in cfg.nonnegative]
    rows += [
        gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1)
        for c in cfg.unit_interval
    ]
    splits = [
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeBetween(column="rows", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="positives", min_value=1),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="t_min", column_B="prev_t_max", ignore_row_if="either_value_is_missing"
        ),
    ]
    return {"rows": rows, "splits": splits, "duplicates": validation.duplicate_rules(cfg.contract)}
