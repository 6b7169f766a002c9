"""Reading a table a user brings: CSV/TSV/text, JSON lines or Parquet, whatever its encoding.

Long because: detection (format, encoding, delimiter, quoting, header), streaming with sampling
and typing belong together: the prepare stage must read a file exactly as ``deepflow new`` did.

``read_table`` detects how the file is written (format, encoding, delimiter, header) and records
it in a :class:`ReadConfig` (with the text read as missing, :data:`NA_VALUES`), so the prepare
stage reads the file exactly as ``deepflow new`` did. Text columns are typed the same way every
time (true/false -> boolean, whole numbers -> Int64, other numbers -> float64, everything else,
codes with a leading zero included, stays a string), independent of how a file is chunked.
Files with more than ``max_rows`` rows are sampled while streaming (bounded memory): a row is kept
when a seeded hash of its content is among the ``max_rows`` smallest, a uniform sample that
mostly keeps its rows as the file grows. Problems a user can fix are one-line :class:`TableError`.

Quoting is detected too: when standard CSV quoting swallows line breaks into a field or gives
rows of unequal length (stray quotes, as in hand-made text files) and reading quotes as text
gives one row of the header's width per line, the file is read with quoting off
(``read.quoting: false``), and a note says so.

A file cut off mid-record (a copy or download that stopped early: no line break at its end, and a
last line with fewer fields than the header, or a quote it opened left open) is refused, naming
that line, rather than read with the lost fields as missing values.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import sys
import warnings
from collections import Counter, deque
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from deepflow.kinds.table.config import ReadConfig
from deepflow.kinds.table.roles import parse_datetime  # noqa: F401 (re-exported: dates as prepare reads them)
from deepflow.newentry import EntryError
from deepflow.problems import clip, listing, quote

HEAD_BYTES = 64 * 1024  # what the detection looks at
CHUNK_ROWS = 200_000  # rows per chunk while streaming
MIN_ROWS = 10  # fewer rows cannot be split into train, validation and test
DELIMITERS = (",", ";", "\t", "|")
NA_VALUES = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
             "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null", "?"]  # pandas' defaults and "?"
_INT = re.compile(r"[+-]?\d+")
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+|[+-]?\d+")
_SIGNATURES = {b"PK\x03\x04": "a zip archive (an Excel .xlsx workbook?): export the sheet as CSV",
               b"\xd0\xcf\x11\xe0": "an Office document (an Excel .xls workbook?): export the sheet as CSV",
               b"%PDF": "a PDF document", b"\x1f\x8b": "gzip-compressed: decompress it first",
               b"SQLite format 3": "an SQLite database: export a table as CSV"}


class TableError(EntryError):
    """A file that is not a usable table, or a table that cannot be learned from: one line that
    says what is wrong and, when it can, what to do."""


def read_table(path: str | Path, read_cfg: ReadConfig | None = None, seed: int = 0, max_rows: int | None = None,
               header: bool | None = None, na_values: list[str] | None = None,
               strip: bool | None = None, min_rows: int = MIN_ROWS,
               min_columns: int = 2) -> tuple[pd.DataFrame, ReadConfig, list[str]]:
    """The table in ``path`` as typed columns, how it was read, and notes worth printing.

    ``read_cfg`` None: detect everything (``deepflow new``); given: read exactly that way (prepare).
    ``max_rows`` overrides the config's sample size; ``seed`` salts the sample's hash; ``header``
    (text files) overrides the detected header row; ``na_values`` (text files) the text read as
    missing; ``strip`` whether text values lose their surrounding spaces. ``min_rows`` and
    ``min_columns``: what a file must hold (less for a batch of new rows to score).
    """
    path = Path(path)
    if path.is_dir():
        raise TableError(f"{path}: a folder; expected a file (CSV, TSV, JSON lines or Parquet)")
    if not path.is_file():
        raise TableError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise TableError(f"{path}: the file is empty")
    notes: list[str] = []
    cfg = read_cfg or detect(path, notes)
    if max_rows is not None:
        cfg = replace(cfg, max_rows=max_rows)
    if header is not None and cfg.format == "csv":
        cfg = replace(cfg, header=header)
    if na_values is not None and cfg.format == "csv":
        cfg = replace(cfg, na_values=list(na_values))
    if strip is not None:
        cfg = replace(cfg, strip=strip)
    if cfg.format == "parquet":
        frame, total = _read_parquet(path, cfg.max_rows, seed)
    elif cfg.format == "jsonl":
        frame, total = _read_jsonl(path, cfg, seed)
    else:
        frame, total, cfg = _read_csv(path, cfg, seed, notes)
    frame.columns = [str(c).strip().lstrip("\ufeff") for c in frame.columns]  # as batch files are read
    if total > len(frame):
        notes.append(f"sampled {len(frame):,} of {total:,} rows (uniform, seeded; read.max_rows = {cfg.max_rows:,})")
    if frame.shape[1] < min_columns and cfg.format == "csv":
        first = _first_line(path, cfg.encoding)
        raise TableError(f"{path}: found a single column (first line: {quote(first, 80)}); is the delimiter one of "
                         f"{' '.join(_show(d) for d in DELIMITERS)}? A table needs feature columns and a target")
    if len(frame) == 0:
        raise TableError(f"{path}: no rows (only a header?)")
    if cfg.format == "csv" and (why := cut_off(path, cfg, frame.shape[1])):
        raise TableError(f"{path}: {why}")
    if len(frame) < min_rows:
        raise TableError(f"{path}: only {len(frame)} row{'s' if len(frame) > 1 else ''}; at least {MIN_ROWS} are "
                         "needed to train, validate and test a model")
    return frame, cfg, notes


# --- detection ---------------------------------------------------------------------------------


def detect(path: Path, notes: list[str]) -> ReadConfig:
    """Format, encoding, delimiter and header of ``path``, from its first :data:`HEAD_BYTES`."""
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    truncated = path.stat().st_size > len(head)
    if head.startswith(b"PAR1") or path.suffix.lower() in (".parquet", ".pq"):
        return ReadConfig(format="parquet")
    for magic, what in _SIGNATURES.items():
        if head.startswith(magic):
            raise TableError(f"{path}: not a table: {what}")
    encoding = detect_encoding(path, head, notes)
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head, final=not truncated)
    if truncated:  # the last line may be cut off
        text = text[: text.rfind("\n") + 1] or text
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise TableError(f"{path}: the file is empty (only blank lines)")
    control = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\r\n\f")
    if "\x00" in text or control > 0.01 * len(text):
        raise TableError(f"{path}: not a table (binary content); expected CSV, TSV, JSON lines or Parquet")
    if text.lstrip()[:1] in ("{", "["):
        return ReadConfig(format="jsonl", encoding=encoding)
    delimiter = sniff_delimiter(text)
    why = choose_quoting(path, encoding, delimiter)
    if why:  # stray quotes may have misled the delimiter too: sniff again with quotes as text
        delimiter = sniff_delimiter(text, quoting=False)
        why = choose_quoting(path, encoding, delimiter)
    quoting = why is None
    if why:
        notes.append(f"quoting off (read.quoting: false): {why}")
    return ReadConfig(format="csv", delimiter=delimiter, encoding=encoding,
                      header=has_header(text, delimiter, quoting), na_values=list(NA_VALUES), quoting=quoting)


def _shape(path: Path, encoding: str, delimiter: str, quoting: bool) -> tuple[Counter, int, bool]:
    """How the csv module reads the whole file: the widths of its non-blank rows (fields -> rows),
    the line breaks that fell inside (quoted) fields, and whether the quoting looks stray: a quote
    the strict reader rejects (text after a closing quote, a quote never closed), or a field that
    swallowed whole lines holding as many delimiters as a row."""
    csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2**31 - 1)))  # a long text is a field
    mode = csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE
    for strict in (True, False) if quoting else (False,):
        widths: Counter = Counter()
        swallowed = last = 0
        stray = not strict and quoting
        with path.open(encoding=encoding, errors="replace", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter, quoting=mode, strict=strict)
            try:
                for row in reader:
                    spanned, last = reader.line_num - last, reader.line_num
                    if not any(field.strip() for field in row):
                        continue
                    widths[len(row)] += 1
                    if spanned > 1:
                        swallowed += spanned - 1
                        width = max(widths, key=widths.get)
                        stray = stray or any(line.count(delimiter) >= width - 1 for field in row if "\n" in field
                                             for line in field.replace("\r\n", "\n").split("\n")[1:-1])
            except csv.Error:
                continue  # the strict reader refused a quote: read again leniently, as stray
        return widths, swallowed, stray
    raise AssertionError("unreachable")


def choose_quoting(path: Path, encoding: str, delimiter: str) -> str | None:
    """Why standard CSV quoting misreads ``path`` (None: it does not; keep it). Quoting is dropped
    only when it swallows line breaks or gives rows of unequal width, its quotes look stray (see
    :func:`_shape`), and quotes read as text give every non-blank line one row of the same width
    (> 1). Well-formed quoted fields (a delimiter or a line break inside quotes) keep quoting, and
    so does a file cut off inside a quoted field its last line opened (:func:`_cut_in_quotes`)."""
    widths, swallowed, stray = _shape(path, encoding, delimiter, True)
    if (len(widths) <= 1 and not swallowed) or not stray or _cut_in_quotes(path, encoding, delimiter):
        return None
    plain, _, _ = _shape(path, encoding, delimiter, False)
    if len(plain) != 1 or next(iter(plain)) < 2:
        return None
    if swallowed:
        return (f"standard CSV quoting lets stray quotes swallow {swallowed:,} line breaks; read with quotes as text, "
                f"every line is one row of {next(iter(plain))} fields")
    return (f"with standard CSV quoting rows have {' or '.join(map(str, sorted(widths)))} fields; read with quotes as "
            f"text, every line is one row of {next(iter(plain))} fields")


def detect_encoding(path: Path, head: bytes, notes: list[str]) -> str:
    """UTF-8 (with or without a BOM), UTF-16/32 with a BOM (or UTF-16 without one, by its zero
    bytes), else cp1252 / Latin-1 with a note: every byte decodes, but accents may be wrong."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = head[:4096]
    if len(sample) >= 8 and b"\x00" in sample:  # UTF-16 without a BOM: zeros in every other byte
        even, odd = sample[0::2].count(0) / (len(sample) / 2), sample[1::2].count(0) / (len(sample) / 2)
        if odd > 0.4 and even < 0.05:
            return "utf-16-le"
        if even > 0.4 and odd < 0.05:
            return "utf-16-be"
        return "utf-8"  # binary: the caller says so
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError as exc:
        where = f"byte {exc.start}"
    fallback = "cp1252"
    try:
        head.decode("cp1252")
    except UnicodeDecodeError:
        fallback = "latin-1"
    notes.append(f"warning: {path.name} is not UTF-8 (first bad {where}); read as {fallback}: check accented "
                 "characters in the profile, or save the file as UTF-8")
    return fallback


def sniff_delimiter(text: str, quoting: bool = True) -> str:
    """The delimiter among :data:`DELIMITERS` that splits the most lines into the same number (> 1)
    of fields (quotes respected unless ``quoting`` is off); ',' when none does (a single column:
    read_table says so)."""
    best, best_key = ",", (False, 0.0, 0)
    mode = csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE
    for delimiter in DELIMITERS:
        counts = [len(row) for row in csv.reader(io.StringIO(text), delimiter=delimiter, quoting=mode) if row][:500]
        if not counts:
            continue
        fields, seen = Counter(counts).most_common(1)[0]
        key = (fields > 1, round(seen / len(counts), 3), fields)
        if key > best_key:
            best, best_key = delimiter, key
    return best


def has_header(text: str, delimiter: str, quoting: bool = True) -> bool:
    """Whether the first row names the columns. Yes when a field is a word over a column of numbers
    (``target`` over 0/1), or when its distinct fields hold column positions in order over numbers
    (``,0,1,2,...``: ``df.to_csv()`` of integer names) and no later row counts up so; else no when a
    field is a number over numbers (data); else yes. ``--header``/``--no-header`` override it."""
    mode = csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter, quoting=mode) if row][:50]
    if len(rows) < 2:
        return True
    first, rest = rows[0], rows[1:]
    comma = delimiter != ","
    over_numbers = [(f.strip(), bool(below) and all(_is_number(v, comma) for v in below))  # (field, numbers below)
                    for i, f in enumerate(first) for below in [[r[i] for r in rest if i < len(r) and r[i].strip()]]]
    if any(num and re.search(r"[^\W\d_]", f) and not _is_number(f, comma) and f not in NA_VALUES
           for f, num in over_numbers):
        return True
    numeric = [num for _, num in over_numbers]
    positions = _run(first, numeric)
    if positions in (0, 1) and len(set(first)) == len(first) and all(_run(r, numeric) is None for r in rest):
        return True
    return not any(num and _is_number(f, comma) for f, num in over_numbers)


def _run(row: list[str], numeric: list[bool]) -> int | None:
    """The first of the whole numbers over numeric columns in ``row`` when there are at least 3 and
    they count up by one (``0,1,2,...``: column positions), else None."""
    whole = [int(f) for f, num in zip(row, numeric, strict=False) if num and _INT.fullmatch(f.strip())]
    return whole[0] if len(whole) >= 3 and whole == list(range(whole[0], whole[0] + len(whole))) else None


def _is_number(text: str, decimal_comma: bool = False) -> bool:
    text = text.strip()
    if decimal_comma and _DECIMAL_COMMA.fullmatch(text):
        return True
    try:
        float(text)
        return True
    except ValueError:
        return False


def _show(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


def last_line(path: Path, encoding: str) -> str:
    """The text after the last line break of ``path`` ("" when the file ends with one)."""
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):  # no byte offsets: read it all
        with path.open(encoding=encoding, errors="replace", newline="") as f:
            tail = "".join(deque(f, maxlen=1))
    else:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - HEAD_BYTES))
            tail = f.read().decode(encoding, errors="replace")
    return tail[max(tail.rfind("\n"), tail.rfind("\r")) + 1:]


def _cut_in_quotes(path: Path, encoding: str, delimiter: str) -> bool:
    """Whether ``path`` ends without a line break in a quoted field its last line opened: a file cut
    off mid-record, not a file of stray quotes (the parser then says where the quote opened)."""
    try:
        list(csv.reader([last_line(path, encoding)], delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def cut_off(path: Path, cfg: ReadConfig, width: int) -> str | None:
    """Why the text file ``path`` looks cut off in the middle of a record (a copy or download that
    stopped early), or None: it does not end with a line break and its last line has fewer fields
    than the table's ``width``. A last line that closes a quoted field begun on an earlier line
    is not judged (a file that ends inside quotes is refused by the parser)."""
    last = last_line(path, cfg.encoding)
    if not last.strip() or (cfg.quoting and last.count('"') % 2):
        return None
    mode = csv.QUOTE_MINIMAL if cfg.quoting else csv.QUOTE_NONE
    fields = next(csv.reader([last], delimiter=cfg.delimiter, quoting=mode), [])
    if len(fields) >= width:
        return None
    return (f"looks cut off mid-record: its last line ({quote(last)}) has "
            f"{len(fields)} of the {width} fields and no line break after it (a copy or download that stopped "
            "early?); complete the file, or remove that line")


def _first_line(path: Path, encoding: str) -> str:
    with path.open(encoding=encoding, errors="replace") as f:
        return f.readline().strip().lstrip("\ufeff")


# --- reading -----------------------------------------------------------------------------------


def _sample(chunks, max_rows: int, seed: int) -> tuple[pd.DataFrame, int]:
    """All rows when there are at most ``max_rows``; else the rows with the ``max_rows`` smallest
    seeded content hashes, in file order. Memory stays within about two samples and a chunk."""
    frames: list[pd.DataFrame] = []
    keys: list[np.ndarray] = []
    total, kept, threshold = 0, 0, None
    hash_key = f"{seed:016d}"[-16:]
    for chunk in chunks:
        chunk.index = pd.RangeIndex(total, total + len(chunk))
        total += len(chunk)
        hashes = pd.util.hash_pandas_object(chunk, index=False, hash_key=hash_key).to_numpy()
        if threshold is not None:
            chunk, hashes = chunk[hashes <= threshold], hashes[hashes <= threshold]
        frames.append(chunk)
        keys.append(hashes)
        kept += len(hashes)
        if kept > 2 * max_rows:
            frames, keys, threshold = _smallest(frames, keys, max_rows)
            kept = max_rows
    if total > max_rows:
        frames, keys, _ = _smallest(frames, keys, max_rows)
    if not frames:
        return pd.DataFrame(), 0
    return pd.concat(frames).reset_index(drop=True), total


def _smallest(frames: list[pd.DataFrame], keys: list[np.ndarray],
              n: int) -> tuple[list[pd.DataFrame], list[np.ndarray], np.uint64]:
    """The ``n`` rows of smallest key (ties: the earlier row), kept in file order."""
    every = np.concatenate(keys)
    chosen = np.sort(np.argsort(every, kind="stable")[:n])
    return [pd.concat(frames).iloc[chosen]], [every[chosen]], every[chosen].max()


def _read_csv(path: Path, cfg: ReadConfig, seed: int, notes: list[str]) -> tuple[pd.DataFrame, int, ReadConfig]:
    """Streams the text file in chunks (sampled past ``max_rows``); when bytes after the detected
    head are not valid in the detected encoding, falls back to cp1252, then Latin-1, and says so."""
    names = None
    mode = csv.QUOTE_MINIMAL if cfg.quoting else csv.QUOTE_NONE
    first = next(csv.reader(io.StringIO(_first_line(path, cfg.encoding)), delimiter=cfg.delimiter, quoting=mode), [])
    if not cfg.header:
        names = [f"column_{i + 1}" for i in range(len(first))]
    elif twice := sorted({f.strip() for f in first if [g.strip() for g in first].count(f.strip()) > 1}):
        notes.append(f"columns named more than once: {listing(twice, quoted=True)} (the second is read as "
                     f"{quote(twice[0] + '.1')}, a third as {quote(twice[0] + '.2')}, ...; rename them in the source "
                     "to choose the names)")
    encodings = [cfg.encoding] + [e for e in ("cp1252", "latin-1") if cfg.encoding in ("utf-8", "cp1252")
                                  and e != cfg.encoding]
    for i, encoding in enumerate(encodings):
        try:
            chunks = pd.read_csv(path, sep=cfg.delimiter, encoding=encoding, header=0 if cfg.header else None,
                                 names=names, dtype=str, keep_default_na=False, na_values=cfg.na_values,
                                 skipinitialspace=cfg.strip, index_col=False, chunksize=CHUNK_ROWS,
                                 encoding_errors="strict", quoting=mode)
            with warnings.catch_warnings():  # pandas drops a long row's extra fields with only a warning
                warnings.filterwarnings("error", message="Length of header or names", category=pd.errors.ParserWarning)
                frame, total = _sample(chunks, cfg.max_rows, seed)
        except pd.errors.ParserWarning:
            raise TableError(f"{path}: not a well-formed table (delimiter {_show(cfg.delimiter)}): some rows have more "
                             "fields than the header (a stray delimiter or an unclosed quote?)") from None
        except UnicodeDecodeError as exc:
            if i + 1 == len(encodings):
                raise TableError(f"{path}: cannot be decoded as {encoding}: {exc.reason}") from None
            notes.append(f"warning: {path.name} has bytes that are not {encoding} after the first "
                         f"{HEAD_BYTES // 1024} KB; read as {encodings[i + 1]}")
            continue
        except pd.errors.EmptyDataError:
            raise TableError(f"{path}: the file is empty") from None
        except pd.errors.ParserError as exc:
            said = " ".join(str(exc).split())
            if unclosed := re.search(r"EOF inside string starting at row (\d+)", said):
                raise TableError(f"{path}: ends inside a quoted field (opened in record {int(unclosed[1]) + 1:,} "
                                 "of the file, counting a header): a quote never closed, or a file cut off "
                                 "mid-record (a copy or download that stopped early?)") from None
            raise TableError(f"{path}: not a well-formed table (delimiter {_show(cfg.delimiter)}): "
                             f"{clip(said, 200)} (a stray delimiter or an unclosed quote?)") from None
        return (type_strings(frame, decimal_comma=cfg.delimiter != ",", strip=cfg.strip), total,
                replace(cfg, encoding=encoding))
    raise AssertionError("unreachable")


def _read_jsonl(path: Path, cfg: ReadConfig, seed: int) -> tuple[pd.DataFrame, int]:
    try:
        with path.open(encoding=cfg.encoding) as f:
            start = f.read(4096).lstrip("\ufeff").lstrip()[:1]
        if start == "[":  # one JSON array of records: small enough to read at once
            frame = pd.read_json(path, orient="records", encoding=cfg.encoding, dtype=False, convert_dates=False)
            frame, total = _sample([frame], cfg.max_rows, seed)
        else:
            chunks = pd.read_json(path, lines=True, chunksize=CHUNK_ROWS, encoding=cfg.encoding, dtype=False,
                                  convert_dates=False)
            with chunks:
                frame, total = _sample(chunks, cfg.max_rows, seed)
    except ValueError as exc:
        if (last := last_line(path, cfg.encoding).strip()) and not _is_json(last):
            raise TableError(f"{path}: looks cut off mid-record: its last line ({quote(last)}) is not complete JSON "
                             "and no line break follows it (a copy or download that stopped early?); complete the "
                             "file, or remove that line") from None
        said = clip(" ".join(str(exc).split()), 200)
        raise TableError(f"{path}: not JSON lines (one object per line): {said}") from None
    return type_json(frame), total


def _is_json(text: str) -> bool:
    import json

    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _read_parquet(path: Path, max_rows: int, seed: int) -> tuple[pd.DataFrame, int]:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
        names = [str(n) for n in file.schema_arrow.names]
    except Exception as exc:  # pyarrow raises several kinds for a damaged or foreign file
        raise TableError(f"{path}: not a readable Parquet file: {clip(' '.join(str(exc).split()), 200)}") from None
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TableError(f"{path}: columns named more than once: {listing(twice, quoted=True)}; give each column "
                         "its own name")
    try:
        if file.metadata.num_rows <= max_rows:
            frame = file.read().to_pandas()
            total = len(frame)
        else:
            frame, total = _sample((b.to_pandas() for b in file.iter_batches(batch_size=CHUNK_ROWS)), max_rows, seed)
    except Exception as exc:  # pyarrow raises several kinds for a damaged or foreign file
        raise TableError(f"{path}: not a readable Parquet file: {clip(' '.join(str(exc).split()), 200)}") from None
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None).astype("str")
    return type_json(frame), total


# --- typing ------------------------------------------------------------------------------------


def type_strings(frame: pd.DataFrame, decimal_comma: bool = False, strip: bool = True) -> pd.DataFrame:
    """Columns read as text, typed from their values: true/false -> boolean, whole numbers -> Int64,
    numbers -> float64 (``1,5`` too when the delimiter is not a comma); everything else stays text
    (stripped unless ``strip`` is off), numbers with a leading zero (``02134``: a code) too. Decided on the
    distinct values, so chunking cannot change a column's type."""
    out = {}
    for name in frame.columns:
        col = frame[name]
        if not pd.api.types.is_string_dtype(col.dtype) and col.dtype != object:
            out[name] = col
            continue
        col = (col.str.strip() if strip else col).replace("", None)
        distinct = pd.Series(col.dropna().unique(), dtype="str")
        out[name] = col if distinct.empty else _typed(col, distinct, decimal_comma)
    return pd.DataFrame(out, index=frame.index)


def _typed(col: pd.Series, distinct: pd.Series, decimal_comma: bool) -> pd.Series:
    lower = distinct.str.lower()
    if lower.isin(["true", "false"]).all():
        return col.str.lower().map({"true": True, "false": False}).astype("boolean")
    if distinct.str.contains(r"^[+-]?0\d", regex=True).any():
        return col  # codes with leading zeros (zip codes, account numbers) stay text
    if distinct.str.fullmatch(_INT.pattern).all():
        return pd.to_numeric(col).astype("Int64") if distinct.str.lstrip("+-").str.len().max() <= 18 else col
    numbers = pd.to_numeric(distinct, errors="coerce")
    if numbers.notna().all():
        return pd.to_numeric(col).astype("float64")
    if decimal_comma and distinct.str.fullmatch(_DECIMAL_COMMA.pattern).all():
        return pd.to_numeric(col.str.replace(",", ".", regex=False)).astype("float64")
    return col


def type_json(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns of a typed format (JSON, Parquet) normalised: all-bool -> boolean, all numbers ->
    Int64/float64, nested values -> their JSON text; strings are kept as strings."""
    import json

    out = {}
    for name in frame.columns:
        col = frame[name]
        if col.dtype == bool:
            col = col.astype("boolean")
        elif col.dtype == object:
            values = col.dropna()
            kinds = {type(v) for v in values}
            if kinds and kinds <= {bool, np.bool_}:
                col = col.astype("boolean")
            elif kinds and kinds <= {int, float, np.integer, np.floating}:
                col = pd.to_numeric(col)
            elif kinds & {dict, list}:
                col = col.map(lambda v: json.dumps(v) if isinstance(v, dict | list) else v)
            if col.dtype == object:
                col = col.map(lambda v: v if v is None or isinstance(v, str) or pd.isna(v) else str(v))
                col = col.astype("str")
        if pd.api.types.is_integer_dtype(col.dtype) and not isinstance(col.dtype, pd.BooleanDtype):
            col = col.astype("Int64")
        out[name] = col
    return pd.DataFrame(out, index=frame.index)
