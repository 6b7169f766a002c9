"""Preprocessing of the ``table`` kind: raw columns in, model inputs out, fitted on the training split only.

:class:`Preprocessor` turns a frame of raw feature values into two arrays every member reads:

* ``numeric`` float32 ``(N, D)``: numeric and boolean columns (median-imputed, a missing-value
  indicator when the training split had missing values, heavy tails compressed with a signed
  log, standardised and, except for trees, clipped to +-5) and datetime parts (years from the training median,
  month / day of week / hour of day as sine and cosine, day of month; imputed and standardised
  the same way);
* ``codes`` int64 ``(N, C)``: one column per categorical feature, 0 = missing or unknown (the
  "other" bucket), 1..K = the training split's categories, most frequent first, at most
  :data:`MAX_CATEGORIES`.

Raw values may arrive as the prepared dtypes or as JSON/CSV gives them (numbers as strings,
booleans as ``"yes"``/``1``/``True``, dates as text in the column's recorded format or ISO 8601);
:meth:`Preprocessor.transform` coerces them itself, column by column with numpy/pandas
vectorised calls (no per-row Python), so one row costs about as much as a hundred. Missing is
only what is missing (None, NaN, NaT, blank text): category text such as "NA" or "?" is a
category (which tokens a source file meant as missing is for its reader to say). A date outside
datetime64[ns]'s span (before 1677-09-21, after 2262-04-11) counts as missing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

MAX_CATEGORIES = 250  # per categorical column (gradient boosting bins at most 255 values)
CLIP = 5.0  # standardised values beyond +-CLIP are clipped (outliers must not dominate a network)
SKEW_LOG = 2.0  # |skewness| on train above this: sign(x) * log1p(|x|) before standardising
TRUE = ("true", "t", "yes", "y", "1", "1.0")
FALSE = ("false", "f", "no", "n", "0", "0.0")
_BOOL_VALUE = np.array([1.0] * len(TRUE) + [0.0] * len(FALSE))
DAY = np.timedelta64(1, "D")
# the span of datetime64[ns] (pandas' Timestamp.min/max), to the second: dates beyond it are missing
EARLIEST, LATEST = np.datetime64("1677-09-21T00:12:44", "us"), np.datetime64("2262-04-11T23:47:16", "us")


class Lookup:
    """Position of exact strings in a fixed list, -1 when absent: a binary search over the sorted
    list, in numpy (a pandas index costs more to build per call than the search itself)."""

    def __init__(self, values: list[str]) -> None:
        self.values = [str(v) for v in values]
        known = np.array(self.values, dtype=str)
        self.order = np.argsort(known, kind="stable")
        self.sorted = known[self.order]

    def __call__(self, text: np.ndarray) -> np.ndarray:
        if not len(self.sorted):
            return np.full(len(text), -1, dtype=np.int64)
        at = np.searchsorted(self.sorted, text).clip(0, len(self.sorted) - 1)
        return np.where(self.sorted[at] == text, self.order[at], -1).astype(np.int64)


_BOOL = Lookup([*TRUE, *FALSE])


def spec_value(spec: Any, key: str, default: Any = None) -> Any:
    """``spec.key`` of a ColumnSpec or ``spec[key]`` of a plain mapping (what a scorer stores)."""
    return spec.get(key, default) if isinstance(spec, Mapping) else getattr(spec, key, default)


# --- coercion of raw values --------------------------------------------------------------------


def as_float(values: pd.Series) -> np.ndarray:
    """Numbers as float64 (missing, unparsable and infinite values -> NaN)."""
    if values.dtype == bool or pd.api.types.is_numeric_dtype(values.dtype):
        out = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:  # strings with blanks around them parse too
        out = np.asarray(pd.to_numeric(values.to_numpy(dtype=object), errors="coerce"), dtype=np.float64)
    return np.where(np.isfinite(out), out, np.nan)


def _text(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(stripped str array, missing mask) of any column: numbers as ``str()`` writes them."""
    arr = values.to_numpy(dtype=object)
    missing = pd.isna(arr)
    return np.strings.strip(np.where(missing, "", arr).astype(str)), missing


def as_boolean(values: pd.Series) -> np.ndarray:
    """Booleans as float64 1.0/0.0/NaN from bools, 0/1 and true/false, yes/no, y/n, t/f strings."""
    if values.dtype == bool or pd.api.types.is_numeric_dtype(values.dtype):
        return as_float(values)
    text, _ = _text(values)
    found = _BOOL(np.strings.lower(text))
    return np.where(found >= 0, _BOOL_VALUE[found], np.nan)


def within_ns(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(datetime64[ns], out-of-range mask) of datetime64 values of any unit: values outside
    datetime64[ns]'s span (:data:`EARLIEST`..:data:`LATEST`) become NaT and are flagged (a plain
    cast would wrap them around silently: 9999-12-31 as 1816-03-29)."""
    t = np.asarray(t)
    if t.dtype == np.dtype("datetime64[ns]"):
        return t, np.zeros(len(t), dtype=bool)
    us = t.astype("datetime64[us]")
    outside = ~np.isnat(us) & ((us < EARLIEST) | (us > LATEST))
    return np.where(outside, np.datetime64("NaT", "us"), us).astype("datetime64[ns]"), outside


def _iso_dates(text: np.ndarray) -> np.ndarray:
    """ISO 8601 text (no blanks) -> datetime64 of some unit, NaT where it does not parse."""
    head = np.strings.slice(text, 0, 4)
    if (len(text) and (np.strings.str_len(text) >= 10).all() and np.strings.isdigit(head).all()
            and (np.strings.slice(text, 4, 5) == "-").all() and (np.strings.slice(text, 7, 8) == "-").all()):
        try:  # YYYY-MM-DD[Thh:mm:ss] without a zone: numpy parses it in C
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                return np.array(text, dtype="datetime64[us]")
        except (ValueError, TypeError, UserWarning, DeprecationWarning):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(pd.Series(text, dtype=object), errors="coerce", utc=True, format="ISO8601")
    return parsed.dt.tz_convert(None).to_numpy()


def parse_dates(values: pd.Series, fmt: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(datetime64[ns] tz-naive, out-of-range mask) of raw values; NaT where missing, unparsable or
    out of range (see :func:`within_ns`). Datetimes are taken as they are (aware ones converted to
    UTC). Text is read with ``fmt`` when given (the strftime format the source's text was read
    with, so ``01/02/2021`` means what it meant in training), and as ISO 8601 where there is no
    ``fmt`` or a value does not match it; an offset is converted to UTC. "now" and "today" (which
    numpy and pandas read as the current time) are not dates."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        if getattr(values.dtype, "tz", None) is not None:
            values = values.dt.tz_convert(None)
        return within_ns(values.to_numpy())
    text, missing = _text(values)
    todo = ~missing & (text != "") & ~np.isin(np.strings.lower(text), ("now", "today"))
    out = np.full(len(text), np.datetime64("NaT", "ns"))
    outside = np.zeros(len(text), dtype=bool)
    if fmt and todo.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(pd.Series(text[todo], dtype=object), errors="coerce", utc=True, format=fmt)
        out[todo], outside[todo] = within_ns(parsed.dt.tz_convert(None).to_numpy())
        todo &= np.isnat(out) & ~outside
    if todo.any():
        out[todo], outside[todo] = within_ns(_iso_dates(text[todo]))
    return out, outside


def as_datetime(values: pd.Series, fmt: str = "") -> np.ndarray:
    """datetime64[ns], tz-naive (aware values converted to UTC), NaT where missing, unparsable or
    out of range; text in ``fmt`` or ISO 8601 (:func:`parse_dates`)."""
    return parse_dates(values, fmt)[0]


def category_codes(values: pd.Series, categories: Lookup) -> np.ndarray:
    """0 for missing or unknown, ``i + 1`` for ``categories[i]``; values are stripped strings, and
    an integer-valued number matches its category written without ``.0`` (JSON sends ``3``, a CSV
    reader ``3.0``, the prepared data ``"3"``)."""
    text, missing = _text(values)
    found = categories(text)
    retry = (found < 0) & ~missing & np.strings.endswith(text, ".0")
    if retry.any():
        found[retry] = categories(np.strings.slice(text[retry], 0, -2))
    return np.where(missing | (found < 0), 0, found + 1).astype(np.int64)


def date_parts(t: np.ndarray, reference: np.datetime64, with_time: bool) -> np.ndarray:
    """(N, 6 or 8) float64: years from ``reference``, month and weekday as sine/cosine, day of
    month, and with ``with_time`` the hour of day as sine/cosine; NaN rows where ``t`` is NaT."""
    missing = np.isnat(t)
    t = np.where(missing, reference, t)
    days = t.astype("datetime64[D]")
    months = t.astype("datetime64[M]")
    month = months.astype(np.int64) % 12  # 0..11
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    parts = [(t - reference) / (365.25 * DAY), *_circle(month, 12), *_circle(weekday, 7),
             (days - months.astype("datetime64[D]")) / DAY + 1]
    if with_time:
        parts += _circle((t - days) / np.timedelta64(1, "h"), 24)
    out = np.stack(parts, axis=1).astype(np.float64)
    out[missing] = np.nan
    return out


def _circle(value: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray]:
    angle = 2 * np.pi * np.asarray(value, dtype=np.float64) / period
    return np.sin(angle), np.cos(angle)


# --- the fitted preprocessor ---------------------------------------------------------------------


@dataclass
class Preprocessor:
    """Raw feature columns -> (numeric float32 (N, D), codes int64 (N, C)); see the module docstring.

    ``columns`` maps each feature to its spec (a ``ColumnSpec`` or a mapping with ``role``,
    ``categories``, ``unknown`` and, for datetimes, ``format``); ``features`` is the input order.
    :meth:`fit` reads only the frame it is given (the training split); a categorical column whose
    spec lists no categories learns them all from it (else only the listed ones are kept).
    """

    columns: dict[str, dict[str, Any]]
    features: list[str]
    numeric_names: list[str] = field(default_factory=list)  # the output columns of ``numeric``
    categorical: list[str] = field(default_factory=list)  # the output columns of ``codes``
    categories: dict[str, list[str]] = field(default_factory=dict)  # fitted on train
    slices: dict[str, tuple[list[int], int | None]] = field(default_factory=dict)  # feature -> outputs
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # median, log, mean, std per raw column
    references: dict[str, np.datetime64] = field(default_factory=dict)  # datetime feature -> reference
    with_time: dict[str, bool] = field(default_factory=dict)
    indicators: list[int] = field(default_factory=list)  # raw columns that get a missing indicator
    _index: dict[str, Lookup] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, columns: Mapping[str, Any], features: list[str]) -> Preprocessor:
        specs = {f: {"role": spec_value(columns[f], "role"),
                     "categories": list(spec_value(columns[f], "categories") or []),
                     "unknown": spec_value(columns[f], "unknown", "other"),
                     **({"format": str(spec_value(columns[f], "format", "") or "")}
                        if spec_value(columns[f], "role") == "datetime" else {})} for f in features}
        if bad := [f for f, s in specs.items() if s["role"] not in ("numeric", "boolean", "categorical", "datetime")]:
            raise ValueError(f"not a feature role: {bad[0]!r} is {specs[bad[0]]['role']!r}")
        return cls(columns=specs, features=list(features))

    def role(self, feature: str) -> str:
        return self.columns[feature]["role"]

    def date_format(self, feature: str) -> str:
        """The strftime format a datetime feature's source text was read with ("" = ISO 8601)."""
        return self.columns[feature].get("format", "")  # a scorer pickled before formats: ""

    # --- fit ------------------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame) -> Preprocessor:
        """Learn categories, datetime references, medians and scales from ``frame`` (train only)."""
        self._check(frame)
        for f in self.features:
            if self.role(f) == "datetime":
                t = as_datetime(frame[f], self.date_format(f))
                seen = t[~np.isnat(t)]
                self.references[f] = (np.datetime64(int(np.median(seen.astype(np.int64))), "ns") if len(seen)
                                      else np.datetime64("2000-01-01", "ns"))
                self.with_time[f] = bool(len(seen) and (seen != seen.astype("datetime64[D]")).any())
            elif self.role(f) == "categorical":
                self.categories[f] = self._fit_categories(f, frame[f])
                self._index[f] = Lookup(self.categories[f])
        raw, owners = self._raw(frame)
        missing = np.isnan(raw)
        with warnings.catch_warnings():  # an all-missing column: median 0
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nan_to_num(np.nanmedian(raw, axis=0) if len(raw) else np.zeros(raw.shape[1]))
        filled = np.where(missing, median, raw)
        with np.errstate(over="ignore", invalid="ignore"):  # huge values: an infinite skew is still "skewed"
            centred = filled - filled.mean(0)
            sd = filled.std(0)
            skew = np.nan_to_num(np.where(sd > 0, (centred ** 3).mean(0) / np.where(sd > 0, sd, 1) ** 3, 0.0),
                                 nan=np.inf)
        log = (np.abs(skew) > SKEW_LOG) & np.array([self.role(f) == "numeric" for f in owners], dtype=bool)
        filled = np.where(log, np.sign(filled) * np.log1p(np.abs(filled)), filled)
        std = filled.std(0)
        self.stats = {"median": median, "log": log, "mean": filled.mean(0), "std": np.where(std > 0, std, 1.0)}
        first_of = {}
        for i, owner in enumerate(owners):
            first_of.setdefault(owner, i)
        self.indicators = [first_of[f] for f in dict.fromkeys(owners) if missing[:, first_of[f]].any()]
        self._name_outputs(owners)
        return self

    def _fit_categories(self, feature: str, values: pd.Series) -> list[str]:
        """The training split's values, most frequent first (ties by name), limited to the entry's
        category list when it has one, at most MAX_CATEGORIES."""
        text = values.dropna().astype("string").str.strip()
        counts = text[text != ""].value_counts()
        order = [c for c, _ in sorted(zip(counts.index, counts.to_numpy(), strict=True), key=lambda p: (-p[1], p[0]))]
        if known := self.columns[feature]["categories"]:
            allowed = set(known)
            order = [c for c in order if c in allowed]
        return [str(c) for c in order[:MAX_CATEGORIES]]

    def _name_outputs(self, owners: list[str]) -> None:
        self.numeric_names, self.slices = [], {f: ([], None) for f in self.features}
        for i, owner in enumerate(owners):
            self.slices[owner][0].append(i)
            part = len(self.slices[owner][0])
            self.numeric_names.append(owner if self.role(owner) != "datetime" else f"{owner}#{part}")
        for i in self.indicators:
            self.slices[owners[i]][0].append(len(self.numeric_names))
            self.numeric_names.append(f"{owners[i]}#missing")
        self.categorical = [f for f in self.features if self.role(f) == "categorical"]
        for j, f in enumerate(self.categorical):
            self.slices[f] = ([], j)

    # --- transform ------------------------------------------------------------------------------

    def _check(self, frame: pd.DataFrame) -> None:
        if missing := [f for f in self.features if f not in frame.columns]:
            raise ValueError(f"input has no column {missing[0]!r} (the model reads {', '.join(self.features)})")

    def _raw(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """(N, R) float64 before imputation (NaN = missing) and the feature each column comes from."""
        blocks, owners = [], []
        for f in self.features:
            role = self.role(f)
            if role == "numeric":
                blocks.append(as_float(frame[f])[:, None])
            elif role == "boolean":
                blocks.append(as_boolean(frame[f])[:, None])
            elif role == "datetime":
                blocks.append(date_parts(as_datetime(frame[f], self.date_format(f)), self.references[f],
                                         self.with_time[f]))
            else:
                continue
            owners += [f] * blocks[-1].shape[1]
        raw = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0))
        return raw, owners

    def transform(self, frame: pd.DataFrame, clip: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(numeric float32 (N, D), codes int64 (N, C)) of the raw rows in ``frame``; ``clip=False``
        keeps standardised values beyond +-CLIP (trees split on them; networks are better without)."""
        self._check(frame)
        raw, _ = self._raw(frame)
        s = self.stats
        missing = np.isnan(raw)
        x = np.where(missing, s["median"], raw)
        x = np.where(s["log"], np.sign(x) * np.log1p(np.abs(x)), x)
        x = (x - s["mean"]) / s["std"]
        if clip:
            x = np.clip(x, -CLIP, CLIP)
        numeric = np.concatenate([x, missing[:, self.indicators]], axis=1).astype(np.float32)
        codes = np.zeros((len(frame), len(self.categorical)), dtype=np.int64)
        for j, f in enumerate(self.categorical):
            codes[:, j] = category_codes(frame[f], self._index[f])
        return numeric, codes

    def cardinalities(self) -> list[int]:
        """Levels per code column: the categories plus the "other" bucket (code 0)."""
        return [len(self.categories[f]) + 1 for f in self.categorical]

    def onehot(self, numeric: np.ndarray, codes: np.ndarray):
        """CSR (N, D + sum of levels): the numeric block beside a one-hot of every code column
        (the linear model's view)."""
        from scipy import sparse

        n, sizes = len(numeric), self.cardinalities()
        offsets = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        cols = (codes + offsets).ravel() if codes.size else np.zeros(0, dtype=np.int64)
        rows = np.repeat(np.arange(n), codes.shape[1])
        hot = sparse.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(n, sum(sizes)))
        return sparse.hstack([sparse.csr_matrix(numeric), hot], format="csr")

    def describe(self) -> dict[str, dict[str, Any]]:
        """{feature: {"role", "categories" (the known ones, categorical only), "unknown", "format"
        (datetime only: the source's strftime format, "" = ISO 8601)}}."""
        return {f: {"role": self.role(f), **({"categories": list(self.categories[f])} if f in self.categories else {}),
                    "unknown": self.columns[f].get("unknown", "other"),
                    **({"format": self.date_format(f)} if self.role(f) == "datetime" else {})} for f in self.features}

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_index"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._index = {f: Lookup(c) for f, c in self.categories.items()}
