"""Reading the files a ``table`` entry scores and monitors the way its source was read.

The entry's ``read:`` says how ``deepflow new`` read the source (format, delimiter, encoding,
header row, the text taken for missing); a file to score (``deepflow score``) or to measure for
drift (``deepflow monitor``) is read the same way, in chunks, so ``1,5``, ``NA`` and a latin-1
accent mean there what they meant in training (dates, such as ``01/02/2021``, are parsed by the
parts with each column's recorded ``format``):

* by extension: ``.parquet``/``.pq`` Parquet, ``.jsonl``/``.ndjson``/``.json`` JSON lines (or one
  JSON array of records), ``.tsv`` text split by tabs; any other file is text with the source's
  delimiter. A file in another format than the source's (JSON lines for a CSV source, text for a
  Parquet one) has its layout and encoding detected as ``deepflow new`` detects a source's;
* text cells stay text (ids keep their spelling; each part parses its columns by role); missing
  are empty fields and the source's tokens (``read.na_values``; none for a typed source, where
  ``"NA"`` is a value: :func:`missing_tokens`, which the parts also apply to Parquet and JSON
  values and serving to JSON strings); in a file not delimited by commas, a number written with
  a decimal comma (``1,5``) in a numeric column is read as ``1.5``, as the source's were;
* column names are stripped of blanks (and of a byte-order mark);
* a text file cut off mid-record (no line break at its end, a last line short of fields) is
  refused, as the source would be (``read.cut_off``).

Problems are :class:`InputError` naming the file; the batch and drift parts turn them into
their own errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd

from deepflow.kinds.table.config import ReadConfig, TableConfig

PARQUET, JSON_LINES = (".parquet", ".pq"), (".jsonl", ".ndjson", ".json")
DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")


class InputError(ValueError):
    """A file that cannot be read as the entry's input: the message names it."""


def entry_config(name: str | None) -> TableConfig | None:
    """The resolved config of table entry ``name``; None when there is no such entry (a scorer
    used on its own: then files are read with ``ReadConfig``'s defaults)."""
    if not name:
        return None
    from deepflow import usecase

    try:
        cfg = usecase.resolve_config(usecase.entry(name))
    except usecase.UnknownUseCase:
        return None
    return cfg if isinstance(cfg, TableConfig) else None


def missing_tokens(cfg: TableConfig | None) -> frozenset[str]:
    """The text that means missing in the entry's source (besides empty text and null)."""
    return frozenset(cfg.read.na_values) if cfg is not None else frozenset()


def read_settings(path: Path, cfg: TableConfig | None) -> ReadConfig:
    """How to read ``path`` as entry ``cfg``'s input (module docstring)."""
    base = cfg.read if cfg is not None else ReadConfig()
    suffix = path.suffix.lower()
    if suffix in PARQUET:
        return replace(base, format="parquet")
    if base.format != ("jsonl" if suffix in JSON_LINES else "csv"):  # not the source's format: detect it
        from deepflow.kinds.table.read import TableError, detect

        if not path.is_file() or path.stat().st_size == 0:
            raise InputError(f"{path}: no such file, or an empty one")
        try:
            found = detect(path, [])
        except TableError as exc:
            raise InputError(str(exc)) from None
        return replace(found, na_values=list(base.na_values))
    return replace(base, format="csv", delimiter="\t") if suffix == ".tsv" else base


def _names(columns) -> list[str]:
    return [str(c).lstrip("\ufeff").strip() for c in columns]


def read_chunks(path: Path, how: ReadConfig, chunk_size: int, numeric: list[str] = ()
                ) -> tuple[list[str], int | None, Iterator[pd.DataFrame]]:
    """(column names, row count when the file says it, frames of at most ``chunk_size`` rows
    indexed by row position) of ``path`` read as ``how`` says; ``numeric``: the columns whose
    decimal commas are read (text files not delimited by commas)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    if path.is_dir():
        raise InputError(f"{path}: a folder; expected a file (CSV/TSV, JSON lines or Parquet)")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if how.format == "parquet":
        return _parquet(path, chunk_size)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    if how.format == "jsonl":
        return _json_lines(path, how, chunk_size)
    return _text(path, how, chunk_size, list(numeric) if how.delimiter != "," else [])


def _parquet(path: Path, chunk_size: int) -> tuple[list[str], int | None, Iterator[pd.DataFrame]]:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several kinds for a damaged or foreign file
        raise InputError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())[:200]})") from None

    def chunks() -> Iterator[pd.DataFrame]:
        start = 0
        for batch in file.iter_batches(batch_size=chunk_size):
            frame = batch.to_pandas()
            for name in frame.columns:
                if isinstance(frame[name].dtype, pd.CategoricalDtype):
                    frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
            frame.columns = _names(frame.columns)
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame

    return _names(file.schema_arrow.names), file.metadata.num_rows, chunks()


def _json_lines(path: Path, how: ReadConfig, chunk_size: int) -> tuple[list[str], int | None, Iterator[pd.DataFrame]]:
    """JSON lines (or one array of records); every chunk gets the first chunk's columns (a key a
    row leaves out is missing)."""
    options = {"encoding": how.encoding, "dtype": False, "convert_dates": False}
    try:
        with path.open(encoding=how.encoding) as f:
            array = f.read(4096).lstrip("\ufeff").lstrip()[:1] == "["
        reader = ([pd.read_json(path, orient="records", **options)] if array
                  else pd.read_json(path, lines=True, chunksize=chunk_size, **options))
        first = next(iter(reader), None)
    except ValueError as exc:  # UnicodeDecodeError included
        raise InputError(f"{path}: not JSON lines (one object per line): {' '.join(str(exc).split())[:200]}") from None
    if first is None:
        raise InputError(f"{path}: no rows")
    columns = _names(first.columns)

    def chunks() -> Iterator[pd.DataFrame]:
        start = 0
        frames = ((first.iloc[i:i + chunk_size] for i in range(0, len(first), chunk_size)) if array
                  else _chain(first, reader))
        try:
            for frame in frames:
                frame = frame.set_axis(_names(frame.columns), axis=1).reindex(columns=columns)
                frame = frame.map(lambda v: json.dumps(v) if isinstance(v, dict | list) else v)
                frame.index = pd.RangeIndex(start, start + len(frame))
                start += len(frame)
                yield frame
        except ValueError as exc:  # UnicodeDecodeError included
            raise InputError(f"{path}: not JSON lines after row {start:,}: {' '.join(str(exc).split())[:200]}") \
                from None

    return columns, None, chunks()


def _chain(first: pd.DataFrame, reader) -> Iterator[pd.DataFrame]:
    yield first
    yield from reader


def _text(path: Path, how: ReadConfig, chunk_size: int, numeric: list[str]
          ) -> tuple[list[str], int | None, Iterator[pd.DataFrame]]:
    options = {"sep": how.delimiter, "encoding": how.encoding, "dtype": str, "keep_default_na": False,
               "na_values": ["", *how.na_values], "skipinitialspace": True, "index_col": False,
               "encoding_errors": "strict"}
    try:
        head = pd.read_csv(path, nrows=1, header=0 if how.header else None, **options)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not {how.encoding} text ({exc.reason}; the entry's read.encoding)") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: empty file (no header)") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"{path}: not a readable table ({' '.join(str(exc).split())[:200]})") from None
    columns = _names(head.columns) if how.header else [f"column_{i + 1}" for i in range(head.shape[1])]
    from deepflow.kinds.table.read import cut_off

    if why := cut_off(path, how, len(columns)):  # its last row would be scored with fields missing
        raise InputError(f"{path}: {why}")

    def chunks() -> Iterator[pd.DataFrame]:
        start = 0
        try:
            with pd.read_csv(path, chunksize=chunk_size, header=0 if how.header else None,
                             names=None if how.header else columns, **options) as reader:
                for frame in reader:
                    frame.columns = columns if not how.header else _names(frame.columns)
                    for name in (c for c in numeric if c in frame.columns):
                        comma = frame[name].str.strip().str.fullmatch(DECIMAL_COMMA.pattern)
                        comma = comma.fillna(False).astype(bool)
                        frame.loc[comma, name] = frame.loc[comma, name].str.replace(",", ".", regex=False)
                    frame.index = pd.RangeIndex(start, start + len(frame))
                    start += len(frame)
                    yield frame
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not {how.encoding} text after row {start:,} ({exc.reason}; the entry's "
                             "read.encoding)") from None
        except pd.errors.ParserError as exc:
            raise InputError(f"{path}: not a readable table after row {start:,} "
                             f"({' '.join(str(exc).split())[:200]})") from None

    return columns, None, chunks()
