"""The ``table`` entries' prepare stage: the source file -> typed, hashed, split parquet files.

``python -m deepflow.kinds.table.prepare NAME`` is the DVC stage ``deepflow new`` writes
(``<name>_prepare``: depends on the tracked source and the entry file, outputs the prepared folder).

1. read ``config.source`` exactly as ``new`` did (``config.read``: format, delimiter, encoding,
   header, sample size);
2. cast every kept column to its role's dtype (numeric and boolean -> float64 with NaN, a present
   value that reads as neither failing, naming column and rows: the data's type changed; categorical
   and id -> str with None, datetime -> datetime64[ns], tz-naive, read with the column's ``format``,
   NaT where a value does not parse or is outside what datetime64[ns] holds (a note says how many);
   the target -> its class name, case and whitespace folded to the entry's ``classes`` where that is
   how ``new`` merged spellings, or float64 for a regression); rows without a target fail, or are
   left out when the entry says so; a column the entry lists but the data lacks fails (every
   failure names the source file);
3. ``_row_hash``: 16 hex digits of sha1 over the row's feature and target values;
4. split: by time when the entry names a time column (oldest train, newest test), else by a salted
   hash of ``_row_hash`` (per class for classification), so a row's split depends on its content,
   rows added later move few existing rows, and identical rows always share a split.

Writes ``train.parquet``, ``val.parquet`` and ``test.parquet``: the feature and id columns in
source order, then the target, then ``_row_hash``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import pandas as pd

from deepflow.kinds.table import roles
from deepflow.kinds.table.config import FEATURE_ROLES, TableConfig
from deepflow.kinds.table.read import TableError, read_table
from deepflow.newentry import in_file
from deepflow.problems import listing, quote

SPLITS = ("train", "val", "test")
KEPT = (*FEATURE_ROLES, "id")


def cast(frame: pd.DataFrame, cfg: TableConfig, notes: list[str] | None = None) -> pd.DataFrame:
    """The prepared columns of ``frame`` (roles from ``cfg.columns``) with the target and ``_row_hash``."""
    missing = [c for c in [*cfg.columns, cfg.target] if c not in frame.columns]
    if missing:
        names = [quote(c) + (" (the target)" if c == cfg.target else "") for c in missing]
        raise TableError(f"no column {listing(names, chars=120)} in the data, which the entry lists (did its columns "
                         f"change?); the columns are: {listing(frame.columns)}")
    if cfg.target in cfg.columns:
        raise TableError(f"the target {cfg.target!r} is also listed under columns: remove it there")
    empty = frame[cfg.target].isna() | frame[cfg.target].astype("str").str.strip().eq("")
    if empty.any():
        if not cfg.drop_missing_target:
            raise TableError(f"the target {cfg.target!r} is missing in {empty.sum():,} of {len(frame):,} rows: fill "
                             "it in, or set drop_missing_target: true in the entry to leave those rows out")
        frame = frame[~empty]  # the index stays the source's row numbers
        if notes is not None:
            notes.append(f"left out {empty.sum():,} rows without a target value")
    out = {name: cast_column(frame[name], spec.role, spec.format, notes) for name, spec in cfg.columns.items()
           if spec.role in KEPT}
    if cfg.task == "regression":
        out[cfg.target] = roles.as_numbers(frame[cfg.target])
    else:
        out[cfg.target] = roles.as_classes(frame[cfg.target], cfg.classes)
    prepared = pd.DataFrame(out, index=frame.index)
    hashed = [c for c, spec in cfg.columns.items() if spec.role in FEATURE_ROLES] + [cfg.target]
    prepared["_row_hash"] = row_hash(prepared[hashed])
    return prepared


def cast_column(values: pd.Series, role: str, fmt: str = "", notes: list[str] | None = None) -> pd.Series:
    """One column in its role's prepared dtype (see the module docstring); ``fmt``: a datetime
    column's format (``ColumnSpec.format``); ``notes`` gets dates out of range."""
    if role == "numeric":
        # +-inf stays: the data contract rejects it, naming the column and rows (never silently missing)
        return _parsed(values, roles.as_numbers(values), "numeric", "a number")
    if role == "boolean":
        return _parsed(values, roles.as_boolean(values), "boolean", "true or false (yes/no, 1/0)")
    if role == "datetime":
        return roles.parse_datetime(values, fmt, notes)
    if role in ("categorical", "id"):
        return roles.as_text(values)
    raise ValueError(f"role {role!r} is not prepared")


def _parsed(values: pd.Series, parsed: pd.Series, role: str, what: str) -> pd.Series:
    """``parsed``, or a TableError naming the column, how many and which of its present ``values``
    do not read as ``what`` (a changed type in a new version of the data: they would become missing)."""
    bad = values[values.notna() & parsed.isna()]
    bad = bad[~bad.map(lambda v: isinstance(v, str) and v.strip().casefold() in ("", "nan"))]  # missing, as text
    if bad.empty:
        return parsed
    shown = ", ".join(f"row {i + 1}: {quote(v)}" for i, v in bad.head(5).items())
    shown += f" (+{len(bad) - 5:,} more)" if len(bad) > 5 else ""
    many = len(bad) > 1
    raise TableError(f"column {quote(values.name)} ({role} in the entry) has {len(bad):,} value"
                     f"{'s' if many else ''} that {'do' if many else 'does'} not read as {what} ({shown}; data "
                     "rows counted from 1): did the data's type change? Correct "
                     "them in the source, add them to read.na_values in the entry if they mean missing, or make "
                     "the column categorical in the entry")


def row_hash(frame: pd.DataFrame) -> pd.Series:
    """16 hex digits of sha1 over each row's values (missing values hash alike, whatever their dtype)."""
    parts = [frame[c].astype(object).where(frame[c].notna(), "\x00").astype(str) for c in frame.columns]
    joined = parts[0].str.cat(parts[1:], sep="\x1f") if len(parts) > 1 else parts[0]
    return pd.Series([hashlib.sha1(s.encode()).hexdigest()[:16] for s in joined], index=frame.index, dtype=object)


def _cuts(n: int, val: float, test: float, each: bool) -> tuple[int, int]:
    """(n_train, n_val) of ``n`` ordered rows; ``each``: every split gets a row when n >= 3."""
    n_val, n_test = round(n * val), round(n * test)
    if each and n >= 3:
        n_val, n_test = max(1, n_val), max(1, n_test)
    n_train = n - n_val - n_test
    if each and n >= 3 and n_train < 1:
        n_train, n_val, n_test = 1, 1, n - 2
    return n_train, n_val


def split(prepared: pd.DataFrame, cfg: TableConfig, when: pd.Series | None = None) -> dict[str, pd.DataFrame]:
    """train/val/test by time (``cfg.time_column``; ``when`` gives its values if it is not a prepared
    column) or by a salted content hash, per class for classification (see the module docstring)."""
    s = cfg.split
    rank = pd.Series([hashlib.sha1(f"{s.seed}:{h}".encode()).hexdigest() for h in prepared["_row_hash"]],
                     index=prepared.index, dtype=object)
    if cfg.time_column:
        t = when if when is not None else _time_values(prepared[cfg.time_column])
        groups = [pd.DataFrame({"t": t, "r": rank}).sort_values(["t", "r"], na_position="first").index]
    elif cfg.task == "regression":
        groups = [rank.sort_values().index]
    else:
        by_class = prepared.groupby(cfg.target, sort=True).groups
        groups = [rank.loc[idx].sort_values().index for idx in by_class.values()]
    labels = []
    for index in groups:
        n_train, n_val = _cuts(len(index), s.val, s.test, each=not cfg.time_column)
        labels.append(pd.Series(["train"] * n_train + ["val"] * n_val + ["test"] * (len(index) - n_train - n_val),
                                index=index, dtype=object))
    label = pd.concat(labels)
    # identical rows (one _row_hash) share one split: the first one's in this order
    label = label.groupby(prepared["_row_hash"].loc[label.index].to_numpy(), sort=False).transform("first")
    frames = {}
    for name in SPLITS:
        rows = label.index[label.to_numpy() == name]
        frames[name] = prepared.loc[rows if cfg.time_column else rows.sort_values()].reset_index(drop=True)
    return frames


def _time_values(values: pd.Series) -> pd.Series:
    """The time column as sortable values: datetimes or numbers as they are, else parsed dates."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        return values
    parsed = roles.parse_datetime(values)
    return parsed if parsed.notna().mean() >= 0.5 else roles.as_numbers(values)


def prepared_splits(frame: pd.DataFrame, cfg: TableConfig, notes: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """The source table (as :func:`read_table` returns it) cast, hashed and split: what :func:`prepare`
    writes, and what ``deepflow new`` fits the contract's per-split bounds to."""
    if cfg.time_column and cfg.time_column not in frame.columns:
        raise TableError(f"time_column {cfg.time_column!r} is not a column of the source")
    prepared = cast(frame, cfg, notes)
    when = None
    if cfg.time_column and cfg.time_column not in prepared.columns:  # not a kept column: its source values
        when = _time_values(frame.loc[prepared.index, cfg.time_column])
    return split(prepared, cfg, when)


def prepare(cfg: TableConfig, out_dir: Path, notes: list[str] | None = None) -> dict[str, int]:
    """Read ``cfg.source``, cast, hash and split it; write the three splits into ``out_dir``.
    ``notes`` collects what is worth saying (a sample was taken, rows were left out)."""
    from deepflow.usecase import project_path

    source = project_path(cfg.source)
    frame, _, read_notes = read_table(source, cfg.read)
    notes = notes if notes is not None else []
    notes += read_notes
    try:
        parts = prepared_splits(frame, cfg, notes)
    except TableError as exc:  # a problem of this file: say which
        raise TableError(in_file(source, exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"rows": len(frame)}
    for name, part in parts.items():
        part.to_parquet(out_dir / f"{name}.parquet", index=False)
        counts[name] = len(part)
    return counts


def main(argv: list[str] | None = None) -> None:
    from deepflow import config, newentry, usecase

    parser = argparse.ArgumentParser(description="read, type, hash and split a table entry's source file")
    parser.add_argument("name", help="the entry: datasets/<name>.yaml of kind table")
    parser.add_argument("--out", type=Path, default=None, help="the splits' folder (default: config.prepared_dir)")
    args = parser.parse_args(argv)
    try:
        cfg = newentry.stage_config(args.name, "table")
        out = args.out or usecase.project_path(cfg.prepared_dir)
        notes: list[str] = []
        counts = prepare(cfg, out, notes)
        for note in notes:
            print(note)
    except (usecase.UnknownUseCase, config.ConfigError, TableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{args.name}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + f" -> {out}")


if __name__ == "__main__":
    main()
