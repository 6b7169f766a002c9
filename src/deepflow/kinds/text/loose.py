"""Reading a labelled text file whose free text holds unquoted delimiters (``loose_rows``).

Hand-made and scraped text files mix properly quoted fields (``"good, really",positive``) with
fields whose quotes are stray (``5" screen, loved it,positive`` or a quote never closed): neither
standard CSV quoting nor quotes-as-text reads every line as one row of the header's width, and
the table reader refuses the file. A text file has one free-text column, though, so such a file
can still be read honestly, one line per row: a line that standard quoting reads as a row of the
header's width is that row; a line with more fields than that (read with quotes as text) gives
the extra delimiters to the text column (the wordiest column of the well-formed rows) and loses
one pair of surrounding quotes per field. A line with fewer fields, or a file where most lines
are not well formed, is not read this way (the table reader's error stands).

:func:`read_text_file` is what ``deepflow new``, its kind guess and the entry's prepare stage
call, so that the prepare stage reads the file exactly as ``new`` did (``loose_rows: true`` in the
entry).
"""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd

from deepflow.kinds.table.config import ReadConfig
from deepflow.kinds.table.read import TableError, detect, read_table, type_strings
from deepflow.problems import quote

_WORD = re.compile(r"\w+")
MIN_WELL_FORMED = 0.5  # share of lines standard quoting must read as rows of the header's width


def read_text_file(path: Path, read_cfg: ReadConfig | None = None, *, loose: bool = False, header: bool | None = None,
                   max_rows: int | None = None, **limits: int) -> tuple[pd.DataFrame, ReadConfig, list[str], bool]:
    """The file as text-kind columns (labels and texts kept as written), how it was read, notes, and
    whether it was read with loose rows. ``read_cfg`` None: detect (``deepflow new``); ``loose``:
    read loosely as recorded (prepare). ``limits``: ``read_table``'s ``min_rows``/``min_columns``."""
    if read_cfg is not None and loose:
        frame, notes = read_loose(path, read_cfg)
        return frame, read_cfg, notes, True
    try:
        frame, cfg, notes = read_table(path, read_cfg, header=header, max_rows=max_rows,
                                       na_values=None if read_cfg is not None else [],
                                       strip=None if read_cfg is not None else False, **limits)
        return frame, cfg, notes, False
    except TableError as exc:
        if read_cfg is not None:
            raise
        notes = []
        try:
            cfg = detect(path, notes)
        except TableError:
            raise exc from None
        if cfg.format != "csv":
            raise
        cfg = replace(cfg, na_values=[], strip=False, quoting=True, **({} if header is None else {"header": header}))
        try:
            frame, more = read_loose(path, cfg)
        except TableError:
            raise exc from None
        return frame, cfg, [n for n in notes if not n.startswith("quoting off")] + more, True


def _unquote(field: str) -> str:
    field = field.strip()
    if len(field) >= 2 and field[0] == field[-1] == '"':
        return field[1:-1].replace('""', '"')
    return field


def read_loose(path: Path, cfg: ReadConfig) -> tuple[pd.DataFrame, list[str]]:
    """One row per non-blank line (see the module's docstring); a TableError when the file cannot be
    read so."""
    with path.open(encoding=cfg.encoding, errors="replace") as f:
        lines = list(f)
    ended = not lines or lines[-1].endswith(("\n", "\r"))
    lines = [line.rstrip("\r\n") for line in lines]
    lines = [line.lstrip("\ufeff") if i == 0 else line for i, line in enumerate(lines)]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise TableError(f"{path}: the file is empty")
    parsed = [next(csv.reader([line], delimiter=cfg.delimiter), []) for line in lines]
    width = len(parsed[0])
    if cfg.header:
        names, parsed, lines, first = [f.strip() for f in parsed[0]], parsed[1:], lines[1:], 2
    else:
        names, first = [f"column_{i + 1}" for i in range(width)], 1
    good = [row for row in parsed if len(row) == width]
    if width < 2 or len(good) < MIN_WELL_FORMED * max(len(parsed), 1) or len(set(names)) < width:
        raise TableError(f"{path}: rows of unequal width")
    if not ended and len(next(csv.reader([lines[-1]], delimiter=cfg.delimiter), [])) != width:
        raise TableError(f"{path}: looks cut off mid-record: its last line ({quote(lines[-1])}) is not a row of "
                         f"{width} fields and no line break follows it (a copy or download that stopped early?); "
                         "complete the file, or remove that line")
    words = [sum(len(_WORD.findall(row[i])) for row in good) for i in range(width)]
    text = max(range(width), key=lambda i: words[i])
    rows, loose = [], 0
    for number, (line, row) in enumerate(zip(lines, parsed, strict=True), start=first):
        if len(row) != width:
            fields = line.split(cfg.delimiter)
            if len(fields) < width:
                raise TableError(f"{path}: line {number:,} has {len(fields)} fields, fewer than the header's {width}")
            extra = len(fields) - width
            row = [_unquote(f) for f in fields[:text]] + [_unquote(cfg.delimiter.join(fields[text:text + extra + 1]))] \
                + [_unquote(f) for f in fields[text + extra + 1:]]
            loose += 1
        rows.append(row)
    frame = type_strings(pd.DataFrame(rows, columns=names, dtype=object).astype("str"),
                         decimal_comma=cfg.delimiter != ",", strip=False)
    note = (f"rows read line by line (loose_rows: true): {loose:,} of {len(rows):,} lines have more fields than the "
            f"header's {width} with quoting on or off (stray quotes and unquoted delimiters); their extra delimiters "
            f"are read as part of the text column {names[text]!r}")
    return frame, [note]
