"""Column roles and the contract bounds of every column, measured from the data itself.

Each column of a user's table gets a role (``numeric``, ``boolean``, ``categorical``, ``datetime``
are the model's features; ``id``, ``text``, ``constant``, ``drop`` are not) with a ``note`` saying
why, and the bounds the data contract checks later: a null-share ceiling, a numeric range, the
known categories. Bounds are the observed values plus a tolerance for sampling noise between
splits and for data that grows; the per-split ones are then fitted to the splits ``new`` makes
(:func:`fit_to_splits`), so the first run's own splits pass and a broken file fails.
The profile numbers (missing share, distinct values, range, top values) go to ``profile.md``.

Values are read here the same way at ``new`` and in prepare: dates with their detected format
(:func:`read_dates`, recorded in ``ColumnSpec.format``; dates outside what datetime64[ns] holds are
missing, with a note), class names as text (:func:`as_classes`, case and whitespace folded where
``new`` merged spellings), numbers stored as text unless a leading zero makes them codes.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from deepflow.kinds.table.config import ColumnSpec

MAX_CATEGORIES = 100  # known categories per column; rarer values fall to "other"
TEXT_WORDS = 3.0  # mean words per value from which a many-valued string column is free text
DATE_SHARE = 0.95  # share of values that must parse as dates
SMALLEST_SPLIT = 0.15  # the validation/test share the tolerances are sized for
_ID_NAME = re.compile(r"(^|[_\W])(id|key|uuid|guid)$|[a-z0-9](Id|ID)$|^(id|key|uuid|guid)[_\W]", re.IGNORECASE)
_INDEX_NAME = re.compile(r"^(unnamed: ?0|index|level_0|)$", re.IGNORECASE)
_DATE_LIKE = re.compile(r"\d{4}|\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2}|[A-Za-z]{3,9}\.? \d{1,2},? \d{2,4}")
_LEADING_ZERO = re.compile(r"^\s*[+-]?0\d")  # "02134": a code, not a number
DATE_RANGE = f"{pd.Timestamp.min:%Y-%m-%d} .. {pd.Timestamp.max:%Y-%m-%d}"  # what datetime64[ns] holds


def margin(share: float, rows: int) -> float:
    """Tolerance of an observed share: 1 point plus 3 standard errors of a validation-sized split."""
    n = max(1.0, rows * SMALLEST_SPLIT)
    return 0.01 + 3 * math.sqrt(max(share * (1 - share), 0.0) / n)


def ceil_to(x: float, decimals: int = 4) -> float:
    return math.ceil(x * 10**decimals - 1e-9) / 10**decimals


def floor_to(x: float, decimals: int = 4) -> float:
    return math.floor(x * 10**decimals + 1e-9) / 10**decimals


def numeric_bounds(values: np.ndarray) -> tuple[float | None, float | None]:
    """[min, max] of the finite values widened by 10 % of the range on each side (a range of one
    value: 10 % of that value, or 1); the minimum stays at 0 when no value is negative."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo or abs(hi) or 1.0
    decimals = max(0, 3 - math.floor(math.log10(span)))
    low = lo - 0.1 * span
    low = max(0.0, low) if lo >= 0 else low
    return floor_to(low, decimals), ceil_to(hi + 0.1 * span, decimals)


def share_bounds(low: float, high: float, rows: int) -> list[float]:
    """Contract bounds of a class share observed between ``low`` and ``high`` (per split): a third
    of it to three times it, at least 4 standard errors of a validation-sized split either way."""
    sd = 4 * math.sqrt(max(low * (1 - low), high * (1 - high)) / max(1.0, rows * SMALLEST_SPLIT))
    return [max(0.0, floor_to(min(low / 3, low - sd))), min(1.0, ceil_to(max(high * 3, high + sd)))]


def fit_to_splits(specs: dict[str, ColumnSpec], class_share: dict[str, list[float]],
                  parts: dict[str, pd.DataFrame], target: str, rows: int) -> None:
    """Widen the per-split bounds (null shares, class shares) so they hold in each of ``parts``, the
    splits prepare makes of this table, tolerance on top: a bound measured over the whole table can
    fail one split (a column added half-way is missing in most of the oldest rows)."""
    parts = {name: part for name, part in parts.items() if len(part)}
    for name, spec in specs.items():
        if parts and all(name in part.columns for part in parts.values()):
            worst = max(float(part[name].isna().mean()) for part in parts.values())
            spec.null_share_max = max(spec.null_share_max, min(1.0, ceil_to(worst + margin(worst, rows))))
    for cls, (lo, hi) in class_share.items():
        shares = [float((part[target] == cls).mean()) for part in parts.values()]
        if shares:
            low, high = share_bounds(min(shares), max(shares), rows)
            class_share[cls] = [min(lo, low), max(hi, high)]


def as_numbers(col: pd.Series) -> pd.Series:
    """float64 with NaN for missing (and for text that is not a number); booleans as 1.0/0.0."""
    if isinstance(col.dtype, pd.BooleanDtype) or col.dtype == bool:
        return col.astype("Float64").astype("float64")
    return pd.to_numeric(col, errors="coerce").astype("float64")


def as_text(values: pd.Series) -> pd.Series:
    """object of str with None for missing: whole numbers as ``"1"`` (never ``"1.0"``), booleans as
    ``"True"``/``"False"``, text stripped. Categories, ids and class names are written this way."""
    out = pd.Series([None] * len(values), index=values.index, dtype=object)
    present = values.notna().to_numpy()
    if not present.any():
        return out
    if isinstance(values.dtype, pd.BooleanDtype) or values.dtype == bool:
        out[present] = ["True" if v else "False" for v in values[present]]
    elif pd.api.types.is_string_dtype(values.dtype) and values.dtype != object:
        out[present] = values[present].str.strip().to_numpy(dtype=object)
    elif pd.api.types.is_numeric_dtype(values.dtype):
        v = values[present].to_numpy(dtype="float64")
        whole = (v == np.round(v)) & (np.abs(v) < 2**62)
        text = np.empty(len(v), dtype=object)
        text[whole] = v[whole].astype(np.int64).astype(str)
        text[~whole] = [_number_text(x) for x in v[~whole]]
        out[present] = text
    else:
        out[present] = [(_number_text(v) if isinstance(v, float | int | np.number) and not isinstance(v, bool)
                         else str(v).strip()) for v in values[present]]
    return out


def _number_text(v: Any) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else np.format_float_positional(v, trim="-")


def as_boolean(values: pd.Series) -> pd.Series:
    """float64 1.0/0.0 with NaN for missing or unreadable: true/false, yes/no, 1/0, t/f, y/n."""
    if isinstance(values.dtype, pd.BooleanDtype) or values.dtype == bool:
        return values.astype("Float64").astype("float64")
    words = {"true": 1.0, "t": 1.0, "yes": 1.0, "y": 1.0, "1": 1.0, "1.0": 1.0,
             "false": 0.0, "f": 0.0, "no": 0.0, "n": 0.0, "0": 0.0, "0.0": 0.0}
    text = as_text(values)
    return text.map(lambda v: words.get(v.lower(), np.nan) if isinstance(v, str) else np.nan).astype("float64")


def fold(label: str) -> str:
    """A class name with case and whitespace folded: ``" Yes"``, ``"YES"`` -> ``"yes"``."""
    return " ".join(label.split()).casefold()


def as_classes(values: pd.Series, classes: list[str]) -> pd.Series:
    """Target values as class names (:func:`as_text`); a value that is no class but whose
    :func:`fold` is one becomes that class (``new`` folds targets spelled in several cases)."""
    text = as_text(values)
    folded = {fold(c): c for c in classes}
    known = set(classes)
    return text.map(lambda v: v if v is None or v in known else folded.get(fold(v), v))


def read_dates(values: pd.Series, fmt: str | None = None) -> tuple[pd.Series, str, int]:
    """(datetime64[ns] tz-naive, UTC where the text has offsets; the format read; how many values
    fall outside what datetime64[ns] holds, :data:`DATE_RANGE`). Values that do not parse, or are
    out of range, are NaT. ``fmt``: None detects it (ISO 8601 first, then the format guessed from
    the first value, month- and day-first both tried, then each distinct value on its own: the one
    that reads the most values wins); ``""`` ISO 8601 (datetime dtypes as they are); ``"mixed"``
    each value on its own; else a strftime format such as ``"%d/%m/%Y"``."""
    import warnings

    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        out, outside = _in_range(values)
        return out, "", outside
    text = values if pd.api.types.is_string_dtype(values.dtype) else values.astype("str").where(values.notna())
    with warnings.catch_warnings():  # pandas warns about formats it guessed; a poor guess loses below
        warnings.simplefilter("ignore")
        parsed, fmt = _detect_dates(text) if fmt is None else (_dates(text, fmt), fmt)
    out, outside = _in_range(parsed)
    return out, fmt, outside


def parse_datetime(values: pd.Series, fmt: str | None = None, notes: list[str] | None = None) -> pd.Series:
    """:func:`read_dates`' datetimes; ``notes`` gets a line naming the column (``values.name``) when
    values fall outside :data:`DATE_RANGE` and are read as missing."""
    parsed, _, outside = read_dates(values, fmt)
    if outside and notes is not None:
        notes.append(out_of_range(values.name, outside))
    return parsed


def out_of_range(column: object, count: int) -> str:
    return (f"{column}: {count:,} date{'s' if count > 1 else ''} outside {DATE_RANGE} (the range datetimes can hold) "
            "read as missing")


def _dates(text: pd.Series, fmt: str) -> pd.Series:
    if fmt != "mixed":
        return pd.to_datetime(text, format=fmt or "ISO8601", errors="coerce", utc=True)
    distinct = text.dropna().unique()
    lookup = pd.to_datetime(pd.Series(distinct, dtype=object), format="mixed", errors="coerce", utc=True)
    return pd.to_datetime(text.map(dict(zip(distinct, lookup, strict=True))), utc=True)


def _detect_dates(text: pd.Series) -> tuple[pd.Series, str]:
    from pandas.tseries.api import guess_datetime_format

    present = text.notna().sum()
    if present == 0:
        return pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]"), ""
    first = str(text.dropna().iloc[0])
    guesses = [guess_datetime_format(first, dayfirst=day) for day in (False, True)]
    best, best_fmt, best_share = None, "", -1.0
    for fmt in dict.fromkeys(["", *(g for g in guesses if g)]):
        parsed = _dates(text, fmt)
        share = parsed.notna().sum() / present
        if share > best_share:
            best, best_fmt, best_share = parsed, fmt, share
        if share == 1.0:
            break
    if best_share < 0.95 and text.dropna().nunique() <= 20_000:
        parsed = _dates(text, "mixed")
        if parsed.notna().sum() / present > best_share:
            best, best_fmt = parsed, "mixed"
    return best, best_fmt


def _in_range(parsed: pd.Series) -> tuple[pd.Series, int]:
    if getattr(parsed.dtype, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    inside = parsed.isna() | ((parsed >= pd.Timestamp.min) & (parsed <= pd.Timestamp.max))
    return parsed.where(inside).astype("datetime64[ns]"), int((~inside).sum())


def _text_numbers(col: pd.Series) -> bool:
    """A string column whose every value is a number (typed formats can hold these); codes with a
    leading zero (``"02134"``) are text."""
    values = pd.Series(col.dropna().unique(), dtype=object).astype(str)
    return (bool(len(values)) and not values.str.contains(_LEADING_ZERO).any()
            and bool(pd.to_numeric(values, errors="coerce").notna().all()))


def profile(frame: pd.DataFrame, target: str) -> tuple[dict[str, ColumnSpec], dict[str, dict[str, Any]]]:
    """(spec, stats) of every column but ``target``, in source order."""
    specs: dict[str, ColumnSpec] = {}
    stats: dict[str, dict[str, Any]] = {}
    for position, name in enumerate(frame.columns):
        if name != target:
            specs[name], stats[name] = column(name, frame[name], position)
    return specs, stats


def column(name: str, col: pd.Series, position: int) -> tuple[ColumnSpec, dict[str, Any]]:
    """One column's role, why, and its contract bounds."""
    n = len(col)
    numeric = pd.api.types.is_numeric_dtype(col.dtype) and not isinstance(col.dtype, pd.BooleanDtype)
    values = as_numbers(col) if numeric else None
    missing = values.isna() | ~np.isfinite(values) if values is not None else col.isna()
    present = col[~missing]
    stats: dict[str, Any] = {"missing": float(missing.mean()), "distinct": int(present.nunique())}
    spec = ColumnSpec(dtype=str(col.dtype))
    spec.null_share_max = min(1.0, ceil_to(stats["missing"] + margin(stats["missing"], n)))
    if present.empty:
        spec.role, spec.note = "constant", "every value is missing: nothing to learn (not a feature)"
    elif stats["distinct"] == 1 and stats["missing"] == 0:
        spec.role = "constant"
        value = _num(float(present.iloc[0])) if numeric else _show(present.iloc[0])
        spec.note = f"one value ({value}) in every row: nothing to learn (not a feature)"
    elif isinstance(col.dtype, pd.BooleanDtype) or col.dtype == bool:
        spec.role, spec.min, spec.max = "boolean", 0.0, 1.0
        stats["true_share"] = float(present.astype(bool).mean())
        spec.note = f"true/false values ({stats['true_share']:.0%} true)"
    elif pd.api.types.is_datetime64_any_dtype(col.dtype):
        _datetime(spec, stats, read_dates(col), "dates and times", int(col.notna().sum()))
    elif numeric:
        _number(name, spec, stats, values, position, inf=int(np.isinf(values).sum()))
    elif _text_numbers(col):
        _number(name, spec, stats, as_numbers(col), position, inf=0)
        spec.note += " (numbers stored as text)"
    else:
        _strings(spec, stats, present.astype("str").str.strip(), n)
    return spec, stats


def _number(name: str, spec: ColumnSpec, stats: dict, values: pd.Series, position: int, inf: int) -> None:
    finite = values[np.isfinite(values)]
    whole = bool((finite == np.round(finite)).all())
    unique = finite.is_unique and len(finite) == len(values)
    stats.update(min=float(finite.min()), max=float(finite.max()), mean=float(finite.mean()))
    if position == 0 and whole and unique and (_INDEX_NAME.match(name) or _steps_of_one(finite)):
        spec.role, spec.note = "id", "a leading row index (as pandas writes by default): not a feature"
        return
    dense = len(finite) >= 100 and finite.max() - finite.min() + 1 <= 2 * len(finite)  # 100 rows: not by chance
    if whole and unique and (_ID_NAME.search(name) or dense):
        spec.role, spec.note = "id", "a whole number unique in every row (an identifier): not a feature"
        return
    spec.role = "numeric"
    spec.min, spec.max = numeric_bounds(finite.to_numpy())
    kind = "whole numbers" if whole else "numbers"
    spec.note = f"{kind} from {_num(stats['min'])} to {_num(stats['max'])}"
    if inf:
        spec.note += (f"; {inf} infinite value{'s' if inf > 1 else ''}: the data contract rejects "
                      f"{'them' if inf > 1 else 'it'} (fix the source before `deepflow run`)")


def _steps_of_one(values: pd.Series) -> bool:
    """0..n-1 or 1..n in file order (a sample keeps the order, so: increasing by whole steps)."""
    diffs = np.diff(values.to_numpy())
    return values.iloc[0] in (0, 1) and bool((diffs >= 1).all())


def _strings(spec: ColumnSpec, stats: dict, present: pd.Series, n: int) -> None:
    distinct = stats["distinct"]
    ratio = distinct / len(present)
    sample = present.drop_duplicates().head(5000)
    stats["words"] = float(present.head(20_000).str.split().str.len().mean())
    if sample.str.contains(_DATE_LIKE).mean() >= DATE_SHARE:
        dates = read_dates(present)
        read = dates[0].notna().sum()
        if (read + dates[2]) / len(present) >= DATE_SHARE:
            swapped = _swap_day_month(dates[1])
            ambiguous = bool(swapped) and read_dates(present, swapped)[0].notna().sum() == read
            _datetime(spec, stats, dates, "text that reads as dates", len(present), ambiguous)
            return
    if stats["words"] >= TEXT_WORDS and ratio >= 0.3 and distinct > 20:
        spec.role = "text"
        spec.note = (f"free text ({distinct:,} distinct values, {stats['words']:.1f} words on average): not a "
                     "feature (text features are not supported; a category derived from it would be)")
    elif distinct == n:
        spec.role, spec.note = "id", "text unique in every row (an identifier): not a feature"
    elif distinct > MAX_CATEGORIES and ratio > 0.5:
        spec.role = "drop"
        spec.note = (f"{distinct:,} distinct values in {len(present):,} rows, mostly one per row (an identifier?): "
                     "not a feature")
    else:
        _categories(spec, stats, present, n)


def _categories(spec: ColumnSpec, stats: dict, present: pd.Series, n: int) -> None:
    counts = present.value_counts()
    counts = counts.iloc[np.lexsort((counts.index.to_numpy(dtype=str), -counts.to_numpy()))]
    keep = counts if len(counts) <= 20 else counts[counts >= 2]
    keep = keep.iloc[:MAX_CATEGORIES]
    known = float(keep.sum() / counts.sum())
    spec.role, spec.categories, spec.unknown = "categorical", [str(v) for v in keep.index], "other"
    spec.known_share_min = max(0.0, floor_to(known - margin(1 - known, n)))
    stats["top"] = [(str(v), int(c)) for v, c in counts.head(8).items()]
    stats["known_share"] = known
    spec.note = f"{len(counts):,} categories"
    if len(keep) < len(counts):
        spec.note += (f"; the {len(keep)} most frequent are known ({known:.1%} of values), the "
                      f"{len(counts) - len(keep):,} rarer ones fall to 'other'")
    if {c.lower() for c in spec.categories} <= {"yes", "no", "y", "n"}:
        spec.note += " (yes/no)"


def _datetime(spec: ColumnSpec, stats: dict, read: tuple[pd.Series, str, int], what: str, present: int,
              ambiguous: bool = False) -> None:
    """The datetime role from :func:`read_dates`' answer over the column's ``present`` values;
    ``spec.format`` records the format read, so prepare, serving and batch read the same way."""
    parsed, spec.format, outside = read
    dates = parsed.dropna()
    if outside:
        stats["out_of_range"] = outside
    if dates.empty:
        spec.role, spec.note = "constant", f"every date is outside {DATE_RANGE}: nothing to learn (not a feature)"
        return
    spec.role = "datetime"
    stats.update(min=_day(dates.min()), max=_day(dates.max()), parsed=len(dates) / max(1, present))
    order = {"%d": ", day first", "%m": ", month first"}.get(spec.format[:2], "") if "%m" in spec.format else ""
    how = f" (format {spec.format}{order})" if spec.format not in ("", "mixed") else ""
    spec.note = f"{what}{how} from {_day(dates.min())} to {_day(dates.max())}"
    if ambiguous:
        spec.note += ("; every value reads day first and month first alike, so the order is a guess: edit "
                      "`format` in the entry if it is wrong")
    unread = present - len(dates) - outside
    if unread:
        spec.note += f" ({unread / present:.1%} of the values do not parse: read as missing)"
    if outside:
        spec.note += f" ({outside:,} outside {DATE_RANGE}: read as missing)"


def _swap_day_month(fmt: str) -> str:
    """``%m/%d/%Y`` <-> ``%d/%m/%Y`` (day or month first only; year-first formats are not ambiguous)."""
    if fmt[:2] not in ("%m", "%d") or "%m" not in fmt or "%d" not in fmt:
        return ""
    return fmt.replace("%m", "\0").replace("%d", "%m").replace("\0", "%d")


def _day(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M")


def _num(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.4g}"


def _show(value: Any) -> str:
    text = str(value)
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def duplicate_bound(share: float) -> float:
    """The contract's bound on copied rows for data measured with ``share`` of them: room for the
    data's own repeats (wine ratings repeat 15-20 % of their rows), not for a file appended to itself."""
    return round(min(1.0, max(0.05, share * 1.5 + 0.02)), 3)
