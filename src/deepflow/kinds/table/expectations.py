"""The ``table`` kind's data contract: Great Expectations suites generated from the entry's ``columns``.

Nothing here is written per dataset: ``deepflow new`` measured each column's bounds (with
tolerance) into the entry file, and this module turns them into expectations, one list per
frame. Every frame names the rows a failure points at (``attrs["row_id"]``, see
``deepflow.validation``), so a report line reads "column X, these values, at train:17".

Frames (built from the prepared splits by :func:`frames`):

* ``rows``: every row of every split (``_where`` = ``split:position``): numeric and boolean values
  within ``[min, max]`` and finite (an unset bound is the float64 limit, so +-inf always fails),
  booleans 0/1, categorical values known for at least ``known_share_min`` of the non-null values
  (unchecked for a column whose entry lists no categories: its model learns them from train),
  ids unique across all splits, the target present and one of ``classes`` (classification) or
  within ``[target_min, target_max]`` (regression);
* ``columns``: one row per split, one cell per required column: the dtype family it has there
  (``numeric``, ``boolean``, ``string``, ``datetime``, ...) or ``missing``;
* ``nulls``: one row per split: each feature's share of missing values, at most ``null_share_max``;
* ``classes`` (classification): one row per split: each class's share, within ``class_share``;
* ``class_rows`` (classification): one row per split: each class's row count, at least 1 (a class
  missing from a split fails here, naming split and class, before training: evaluating on a split
  without it would fail later, or quietly measure fewer classes);
* ``splits``: the row count of each split: train at least ``rows_min``, val and test at least 1;
* ``overlap``: one row per ``_row_hash`` with the number of splits it occurs in (at most 1).
"""

from __future__ import annotations

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from deepflow import validation
from deepflow.kinds.table.config import ColumnSpec, TableConfig
from deepflow.validation import ROW_ID

SPLITS = ("train", "val", "test")
ROW_HASH = "_row_hash"
WHERE = "_where"  # "split:position": names a failing row in the report
SPLIT = "_split"  # the row id of the per-split frames (underscored: never a user's column)
FINITE = float(np.finfo(np.float64).max)  # the bound used where the entry sets none: rejects only +-inf
MISSING = "missing"


def required(cfg: TableConfig) -> dict[str, tuple[str, ...]]:
    """Every column the prepared splits must hold -> the dtype families it may have."""
    families = {"numeric": ("numeric",), "boolean": ("numeric", "boolean"), "categorical": ("string",),
                "datetime": ("datetime",), "id": ("string", "numeric")}
    out = {name: families[spec.role] for name, spec in cfg.columns.items() if spec.role in families}
    out[cfg.target] = ("numeric",) if cfg.task == "regression" else ("string",)
    out[ROW_HASH] = ("string",)
    return out


def family(values: pd.Series) -> str:
    """The dtype family of a column, as the contract names it."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "datetime with a time zone"
    if pd.api.types.is_datetime64_dtype(dtype):
        return "datetime"
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        inferred = pd.api.types.infer_dtype(values, skipna=True)
        return "string" if inferred in ("string", "empty") else f"object of {inferred}"
    return str(dtype)


def frames(cfg: TableConfig, splits: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The frames the suites look at (module docstring), built from the prepared splits.

    A column missing from a split is reported in ``columns``; in ``rows`` it is added empty, so
    the other frames are still computed and every other problem is still reported.
    """
    need = required(cfg)
    parts = []
    for name, frame in splits.items():
        where = pd.Series(np.arange(len(frame)), index=frame.index).astype(str)
        part = frame.assign(**{SPLIT: name, WHERE: f"{name}:" + where})
        parts.append(part.reset_index(drop=True))
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[SPLIT, WHERE])
    for col in need:
        if col not in rows.columns:
            rows[col] = pd.Series(np.nan if need[col][0] == "numeric" else None, index=rows.index, dtype=object)
    rows.attrs[ROW_ID] = [WHERE]

    columns = _per_split({name: {col: family(df[col]) if col in df.columns else MISSING for col in need}
                          for name, df in splits.items()})
    features = cfg.features()
    nulls = _per_split({name: {col: float(df[col].isna().mean()) if col in df.columns and len(df) else 1.0
                               for col in features} for name, df in splits.items()})
    sizes = pd.DataFrame([{f"{name}_rows": len(splits.get(name, ())) for name in SPLITS}])
    hashes = rows[[ROW_HASH, SPLIT]].dropna().drop_duplicates()
    overlap = (hashes.groupby(ROW_HASH)[SPLIT].agg(splits="nunique", where=lambda s: "+".join(sorted(s)))
               .reset_index())
    overlap["hash_in"] = overlap[ROW_HASH].astype(str) + " in " + overlap["where"]
    overlap.attrs[ROW_ID] = ["hash_in"]
    out = {"rows": rows, "columns": columns, "nulls": nulls, "splits": sizes,
           "overlap": overlap[["hash_in", "splits"]], "duplicates": validation.duplicates(rows, [ROW_HASH])}
    if cfg.task != "regression":
        counts = {name: {str(cls): int((df[cfg.target].astype(object) == str(cls)).sum()) if cfg.target in df.columns
                         else 0 for cls in cfg.classes} for name, df in splits.items()}
        out["classes"] = _per_split({name: {cls: n / len(splits[name]) if len(splits[name]) else 0.0
                                            for cls, n in row.items()} for name, row in counts.items()})
        out["class_rows"] = _per_split(counts)
    return out


def _per_split(values: dict[str, dict[str, object]]) -> pd.DataFrame:
    """One row per split (named in ``_split``, the frame's row id), one column per key."""
    frame = pd.DataFrame([{SPLIT: name, **row} for name, row in values.items()])
    frame.attrs[ROW_ID] = [SPLIT]
    return frame


def _bounds(low: float | None, high: float | None) -> tuple[float, float]:
    """Finite bounds: an unset side is the float64 limit, so only +-inf falls outside it."""
    return (-FINITE if low is None else float(low)), (FINITE if high is None else float(high))


def column_rules(name: str, spec: ColumnSpec) -> list:
    """The ``rows`` expectations of one source column (its role decides which)."""
    if spec.role == "numeric":
        low, high = _bounds(spec.min, spec.max)
        return [gxe.ExpectColumnValuesToBeBetween(column=name, min_value=low, max_value=high)]
    if spec.role == "boolean":
        low, high = _bounds(spec.min, spec.max)
        return [gxe.ExpectColumnValuesToBeInSet(column=name, value_set=[v for v in (0.0, 1.0) if low <= v <= high])]
    if spec.role == "categorical":
        share = min(max(float(spec.known_share_min), 0.0), 1.0)
        if share <= 0 or not spec.categories:
            # No categories listed (a role changed to categorical by hand): an in-set rule over an
            # empty set could never pass, so there is none, and known_share_min goes unchecked;
            # the model learns the categories from the training split.
            return []
        return [gxe.ExpectColumnValuesToBeInSet(column=name, value_set=[str(c) for c in spec.categories],
                                                mostly=share)]
    if spec.role == "id":
        return [gxe.ExpectColumnValuesToBeUnique(column=name)]
    return []


def suites(cfg: TableConfig) -> dict[str, list]:
    """The contract of ``cfg`` as one list of expectations per frame of :func:`frames`."""
    rows: list = [gxe.ExpectColumnValuesToBeInSet(column=SPLIT, value_set=list(SPLITS))]
    for name, spec in cfg.columns.items():
        rows += column_rules(name, spec)
    rows.append(gxe.ExpectColumnValuesToNotBeNull(column=cfg.target))
    if cfg.task == "regression":
        low, high = _bounds(cfg.target_min, cfg.target_max)
        rows.append(gxe.ExpectColumnValuesToBeBetween(column=cfg.target, min_value=low, max_value=high))
    else:
        rows.append(gxe.ExpectColumnValuesToBeInSet(column=cfg.target, value_set=[str(c) for c in cfg.classes]))
    columns = [gxe.ExpectColumnValuesToBeInSet(column=col, value_set=list(allowed))
               for col, allowed in required(cfg).items()]
    nulls = [gxe.ExpectColumnValuesToBeBetween(column=col, min_value=0.0,
                                               max_value=float(cfg.columns[col].null_share_max))
             for col in cfg.features()]
    splits = [gxe.ExpectColumnValuesToBeBetween(column=f"{name}_rows", min_value=max(1, cfg.rows_min)
                                                if name == "train" else 1) for name in SPLITS]
    out = {"rows": rows, "columns": columns, "nulls": nulls, "splits": splits,
           "overlap": [gxe.ExpectColumnValuesToBeBetween(column="splits", min_value=1, max_value=1)],
           "duplicates": validation.duplicate_rules(cfg.contract)}
    if cfg.task != "regression":
        out["classes"] = [gxe.ExpectColumnValuesToBeBetween(column=str(cls), min_value=float(lo), max_value=float(hi))
                          for cls, (lo, hi) in ((c, cfg.class_share.get(str(c), [0.0, 1.0])) for c in cfg.classes)]
        out["class_rows"] = [gxe.ExpectColumnValuesToBeBetween(column=str(cls), min_value=1) for cls in cfg.classes]
    return out

