"""The text entries' DVC prepare stage: any ``text,label`` file -> normalised, deduplicated, stratified splits.

Two modes: ``python -m deepflow.kinds.text.prepare NAME`` prepares an entry written by ``deepflow
new`` from its config alone (``source``, ``read``, ``text_column``, ``label_column``,
``fold_labels``, ``split``; the file is read as ``deepflow new`` read it, by the table kind's
reader), and ``--src FILE --out DIR`` (a ``params.yaml`` section) prepares a hand-written entry.

1. read the file (which columns hold text and label is a parameter; labels become text: ``1``, not ``1.0``),
2. normalise the text (HTML entities, Unicode NFC, one space for any run of whitespace),
3. drop exact duplicates, then *near* duplicates: messages equal after lower-casing, collapsing
   digit runs and reducing punctuation/whitespace to one space (templated messages that differ
   only in a phone number or an amount). A near-duplicate group whose labels disagree is dropped
   whole: it cannot be labelled honestly. All this happens **before** the split, so a template
   cannot leak from train to test.
4. split per class by a hash of (seed, dedup key): a message's split depends only on its own
   content and the seed, so the split is fixed per data version and stable as data is added.

Writes ``train/val/test.parquet`` (columns ``text``, ``label``) and ``dedup.json`` (counts). A file
that cannot give honest splits fails naming it, before anything is written: not UTF-8 (``--src``),
cut off mid-record, without the text or label column, with one label only or with far more labels
than a label column has (free text: text and label columns swapped?), or a split left empty.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import re
import sys
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from deepflow.problems import clip, listing, quote

SPLITS = ("train", "val", "test")
_WS = re.compile(r"\s+")
_DIGITS = re.compile(r"\d+")
_NON_WORD = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class PrepareParams:
    sep: str = "\t"
    header: bool = False  # without a header, columns are named by position ("0", "1", ...)
    text_column: str = "1"
    label_column: str = "0"
    val_frac: float = 0.15
    test_frac: float = 0.15
    seed: int = 0


def normalise(text: str) -> str:
    return _WS.sub(" ", unicodedata.normalize("NFC", html.unescape(text))).strip()


def dedup_key(text: str) -> str:
    """Near-duplicate key: case, digits, punctuation and spacing do not make a message new."""
    return _WS.sub(" ", _NON_WORD.sub(" ", _DIGITS.sub("0", text.lower()))).strip()


def read(src: Path, p: PrepareParams) -> pd.DataFrame:
    """The raw file as a (text, label) frame of strings; a ValueError naming the file when it is not
    a readable UTF-8 table with those columns, or looks cut off mid-record."""
    from deepflow.kinds.table.config import ReadConfig
    from deepflow.kinds.table.read import cut_off

    if src.is_dir():
        raise ValueError(f"{src}: a folder; expected a text,label file")
    raw = src.read_bytes()
    if not raw.strip():
        raise ValueError(f"{src}: the file is empty")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{src}: not valid UTF-8 at byte {e.start} (line {line})") from e
    del raw
    quoting = p.sep != "\t"  # TSV: quotes are text, not quoting
    try:
        frame = pd.read_csv(src, sep=p.sep, header=0 if p.header else None, dtype=str, keep_default_na=False,
                            quoting=0 if quoting else 3)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{src}: not a table with separator {p.sep!r}: {clip(' '.join(str(e).split()), 200)}") from e
    frame.columns = [str(c) for c in frame.columns]
    missing = [c for c in (p.text_column, p.label_column) if c not in frame.columns]
    if missing:
        raise ValueError(f"{src}: no column {listing(missing, quoted=True)} (text_column {p.text_column!r}, "
                         f"label_column {p.label_column!r}); the columns are: {listing(frame.columns, quoted=True)}"
                         + ("" if p.header else " (no header: columns are named by position from 0)"))
    why = cut_off(src, ReadConfig(delimiter=p.sep, quoting=quoting), frame.shape[1])
    if why:
        raise ValueError(f"{src}: {why}")
    return pd.DataFrame({"text": frame[p.text_column], "label": frame[p.label_column].str.strip()})


def label_text(values: pd.Series) -> pd.Series:
    """A column's values as label strings (missing stays None): whole numbers as ``1`` (not
    ``1.0``), booleans as ``true``/``false``, text stripped of surrounding spaces."""
    present = values.notna()
    if pd.api.types.is_bool_dtype(values.dtype):
        out = values.map({True: "true", False: "false"})
    elif pd.api.types.is_numeric_dtype(values.dtype):
        numbers = pd.to_numeric(values, errors="coerce")
        whole = bool(((numbers.dropna() % 1) == 0).all())
        out = numbers.map(lambda v: None if pd.isna(v) else (str(int(v)) if whole else repr(float(v))))
    else:
        out = values.map(lambda v: None if v is None or (not isinstance(v, str) and pd.isna(v)) else
                         (str(v).strip() or None))  # a blank label is no label
    return pd.Series([v if keep else None for v, keep in zip(out, present, strict=True)], index=values.index,
                     dtype=object)


def label_key(label: str) -> str:
    """Labels with the same key differ only in case or surrounding spaces."""
    return label.strip().casefold()


def text_label(frame: pd.DataFrame, text_column: str, label_column: str,
               fold_to: list[str] | None = None) -> tuple[pd.DataFrame, int]:
    """The source table's (text, label) as strings, and how many rows had no label (left out).
    ``fold_to``: labels differing from one of these only in case or spaces become it."""
    for column in (text_column, label_column):
        if column not in frame.columns:
            what = "text" if column == text_column else "label"
            raise ValueError(f"no column {quote(column)} (the entry's {what} column) in the data (did its columns "
                             f"change?); the columns are: {listing(frame.columns)}")
    labels = label_text(frame[label_column])
    if fold_to:
        canonical = {label_key(c): c for c in fold_to}
        labels = labels.map(lambda v: v if v is None else canonical.get(label_key(v), v))
    texts = frame[text_column].map(lambda v: "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v))
    out = pd.DataFrame({"text": texts.astype(object), "label": labels})
    unlabelled = int(out["label"].isna().sum())
    return out[out["label"].notna()].reset_index(drop=True), unlabelled


def check_labels(pairs: pd.DataFrame, src: Path, text_column: str, label_column: str) -> None:
    """A ValueError naming ``src`` when the labelled texts read from it cannot be labels and texts:
    none, one label only, or far too many labels (more than ``MAX_LABELS``, or more than half as
    many as rows): the label column holds free text, as when text and label columns are swapped."""
    from deepflow.kinds.text.infer import MAX_LABELS

    counts = pairs["label"].value_counts()
    if counts.empty:
        raise ValueError(f"{src}: no labelled text (column {label_column!r} is empty in every row)")
    if len(counts) == 1:
        raise ValueError(f"{src}: one label only ({quote(counts.index[0])} in column {label_column!r}, "
                         f"{len(pairs):,} rows): a classifier needs texts of two or more classes")
    if len(counts) > MAX_LABELS or (len(pairs) >= 20 and len(counts) > len(pairs) / 2):
        texts = pairs["text"].map(lambda t: str(t).strip()).value_counts()
        hint = (f"; the text column {text_column!r} has only {len(texts):,} distinct values "
                f"({listing(texts.index, count=5, chars=40, quoted=True)}): are the two columns swapped? (text_column, "
                "label_column)" if len(texts) <= MAX_LABELS else ": is it the label column? (label_column)")
        examples = listing(counts.index, count=3, chars=40, quoted=True)
        raise ValueError(f"{src}: the label column {label_column!r} has {len(counts):,} distinct values in "
                         f"{len(pairs):,} rows (e.g. {examples}), far too many classes (a label column has 2 to "
                         f"{MAX_LABELS}){hint}")


def check_splits(parts: dict[str, pd.DataFrame], src: Path, counts: dict[str, int]) -> None:
    """A ValueError naming ``src`` when a split would be empty (too few distinct texts)."""
    if empty := [name for name in SPLITS if parts[name].empty]:
        sizes = ", ".join(f"{name} {len(parts[name]):,}" for name in SPLITS)
        raise ValueError(f"{src}: the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} would be empty "
                         f"({sizes} texts, from {counts['raw']:,} labelled rows, {counts['after_near']:,} left after "
                         "dropping empty texts and exact or near duplicates): every class needs several distinct "
                         "texts (5 or more) to reach train, validation and test")


def deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    frame = frame.assign(text=frame["text"].map(normalise))
    counts = {"raw": len(frame)}
    frame = frame[frame["text"] != ""]
    counts["empty_dropped"] = counts["raw"] - len(frame)
    frame = frame.drop_duplicates(["text", "label"])
    counts["after_exact"] = len(frame)
    frame = frame.assign(key=frame["text"].map(dedup_key))
    labels_per_key = frame.groupby("key")["label"].nunique()
    conflicting = labels_per_key.index[labels_per_key > 1]
    counts["conflicting_groups_dropped"] = len(conflicting)
    frame = frame[~frame["key"].isin(conflicting)].drop_duplicates("key")
    counts["after_near"] = len(frame)
    return frame.reset_index(drop=True), counts


def split(frame: pd.DataFrame, p: PrepareParams) -> dict[str, pd.DataFrame]:
    """Stratified by label; a row's split is decided by a hash of its dedup key and the seed."""
    rank = frame["key"].map(lambda k: hashlib.sha256(f"{p.seed}:{k}".encode()).hexdigest())
    parts: dict[str, list[pd.DataFrame]] = {s: [] for s in SPLITS}
    for _, group in frame.assign(rank=rank).sort_values("rank").groupby("label", sort=True):
        n = len(group)
        n_test, n_val = round(n * p.test_frac), round(n * p.val_frac)
        parts["test"].append(group.iloc[:n_test])
        parts["val"].append(group.iloc[n_test:n_test + n_val])
        parts["train"].append(group.iloc[n_test + n_val:])
    return {s: pd.concat(parts[s]).sort_values("rank")[["text", "label"]].reset_index(drop=True) for s in SPLITS}


def prepare(src: Path, out: Path, p: PrepareParams) -> dict[str, int]:
    pairs = read(src, p)
    check_labels(pairs[pairs["label"] != ""], src, p.text_column, p.label_column)
    frame, counts = deduplicate(pairs)
    parts = split(frame, p)
    check_splits(parts, src, counts)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.to_parquet(out / f"{name}.parquet", index=False)
        counts[name] = len(part)
    (out / "dedup.json").write_text(json.dumps({"params": asdict(p), "counts": counts}, indent=2) + "\n")
    return counts


def entry_params(cfg) -> PrepareParams:
    """The split parameters of an entry's config (``TextConfig.split``)."""
    return PrepareParams(val_frac=cfg.split.val, test_frac=cfg.split.test, seed=cfg.split.seed)


def prepare_entry(cfg, out: Path, notes: list[str] | None = None) -> dict[str, int]:
    """An entry written by ``deepflow new``: read ``cfg.source`` as recorded in ``cfg.read``, take
    the text and label columns (folding labels when ``cfg.fold_labels``), then deduplicate and
    split as :func:`prepare` does."""
    from deepflow.kinds.text.loose import read_text_file
    from deepflow.usecase import project_path

    source = project_path(cfg.source)
    table, _, read_notes, _ = read_text_file(source, cfg.read, loose=cfg.loose_rows)
    if notes is not None:
        notes += read_notes
    try:
        pairs, unlabelled = text_label(table, cfg.text_column, cfg.label_column,
                                       list(cfg.labels) if cfg.fold_labels else None)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    del table
    check_labels(pairs, source, cfg.text_column, cfg.label_column)
    frame, counts = deduplicate(pairs)
    counts = {"read": len(pairs) + unlabelled, "unlabelled_dropped": unlabelled, **counts}
    p = entry_params(cfg)
    parts = split(frame, p)
    check_splits(parts, source, counts)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.to_parquet(out / f"{name}.parquet", index=False)
        counts[name] = len(part)
    params = {**asdict(p), "source": cfg.source, "text_column": cfg.text_column, "label_column": cfg.label_column,
              "fold_labels": cfg.fold_labels}
    (out / "dedup.json").write_text(json.dumps({"params": params, "counts": counts}, indent=2) + "\n")
    return counts


def _entry_main(name: str, out: Path | None) -> None:
    from deepflow import config, newentry, usecase
    from deepflow.newentry import EntryError

    try:
        cfg = newentry.stage_config(name, "text", hand_written="prepare it with --src FILE --out DIR")
        out = out or usecase.project_path(cfg.prepared_dir)
        notes: list[str] = []
        counts = prepare_entry(cfg, out, notes)
    except (usecase.UnknownUseCase, config.ConfigError, EntryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for note in notes:
        print(note)
    print(f"{name}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + f" -> {out}")


def main() -> None:
    from deepflow.settings import stage_params

    parser = argparse.ArgumentParser(description="normalise, deduplicate and split a text,label file: an entry's "
                                                 "(NAME) or a file's (--src, --out)")
    parser.add_argument("name", nargs="?", help="an entry written by `deepflow new` (datasets/<name>.yaml)")
    parser.add_argument("--src", type=Path, help="the raw text,label file")
    parser.add_argument("--out", type=Path, help="folder of the splits, data/prepared/<entry>")
    parser.add_argument("--params", default=None,
                        help="params.yaml section (default: <out folder name>.prepare when it exists, else the "
                             "defaults); the options below override it")
    parser.add_argument("--sep", help="column separator, e.g. ',' or '\\t'")
    parser.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                        help="the first line names the columns")
    parser.add_argument("--text-column", help="the text column (a name, or a 0-based position without a header)")
    parser.add_argument("--label-column", help="the label column")
    args = parser.parse_args()
    if args.name:
        _entry_main(args.name, args.out)
        return
    if args.src is None or args.out is None:
        parser.error("give an entry NAME, or --src and --out")
    section = f"{args.out.name}.prepare" if args.params is None else args.params
    try:
        values = stage_params(section) if section else {}
    except (KeyError, TypeError):
        if args.params is not None:  # asked for by name: say so
            parser.exit(2, f"error: no section {section!r} in params.yaml\n")
        values = {}  # no section for this folder: the defaults and the options
    given = {"sep": args.sep.replace("\\t", "\t") if args.sep else None, "header": args.header,
             "text_column": args.text_column, "label_column": args.label_column}
    params = PrepareParams(**{**values, **{k: v for k, v in given.items() if v is not None}})
    try:
        counts = prepare(args.src, args.out, params)
    except (ValueError, OSError) as exc:  # the file's problem, one line
        parser.exit(2, f"error: {exc}\n")
    print(", ".join(f"{k} {v:,}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
