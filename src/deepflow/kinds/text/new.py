"""``deepflow new NAME --data FILE`` for labelled texts: a user's file becomes a text entry, with no code.

Reads the file with the table kind's reader (CSV/TSV/JSON lines/Parquet; encoding, delimiter,
header and quoting detected, labels and texts kept as written: ``read.strip: false``, nothing read
as missing but empty values), infers the text and label columns (``infer.py``), then does what
the prepare stage will (normalise, drop exact and near duplicates, split by content hash) so
that every check runs on the very splits the first run validates: the contract (length bounds,
the label set, per-class share bounds, no text in two splits) is fitted to them. The metric: the
positive class's F1 for two classes with a clear minority (under 35 %) or else a positive-looking
label (``1``, ``yes``, ``positive``, ...), else macro-F1; the promotion floor is the F1 of
guessing (see :func:`chance_f1`).

Bad input is one line (:class:`~deepflow.newentry.EntryError`) and nothing is written: one label,
labels that differ only in case or surrounding spaces (``--fold-labels`` merges them, recorded
in the entry), no text at all, a text over :data:`MAX_TEXT_CHARS` characters, a label column that
is free text, a class too small to reach train, validation and test. Then, as every kind does
(``deepflow/newentry.py``): the source copy, the entry, ``reports/<name>/profile.md`` and the
prepared splits (a ``<name>_prepare`` DVC stage running ``python -m deepflow.kinds.text.prepare
NAME``, or here).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from deepflow import newentry, settings
from deepflow.kinds.table.config import ReadConfig
from deepflow.kinds.text import infer
from deepflow.kinds.text.loose import read_text_file
from deepflow.kinds.text.prepare import SPLITS, PrepareParams, deduplicate, label_key, normalise, split, text_label
from deepflow.newentry import EntryError, parse_budget, project_relative
from deepflow.problems import listing, quote

MAX_TEXT_CHARS = 100_000  # a longer text is refused at `new` (a document, not a message: split it)
LENGTH_TOLERANCE = 1.5  # contract: max_chars is the longest text seen times this (at most MAX_TEXT_CHARS)
MINORITY = 0.35  # a binary class rarer than this is the positive class (its F1 is the metric)
SMALL_TEST = 100  # fewer test texts (or SMALL_TEST_CLASS of a class): `new` says the metrics will be noisy
SMALL_TEST_CLASS = 10
POSITIVE_NAMES = ("1", "true", "yes", "y", "t", "positive", "pos")
STAGE_CODE = ("src/deepflow/kinds/text/prepare.py", "src/deepflow/kinds/text/loose.py",
              "src/deepflow/kinds/table/read.py")  # what the prepare stage runs: a change re-runs it


@dataclass
class NewResult:
    name: str
    entry: Path
    profile: Path
    source: Path
    prepared: Path
    text_column: str
    label_column: str
    labels: list[str]
    positive: str | None
    floor: float
    read: ReadConfig
    lines: list[str] = field(default_factory=list)  # what was printed before writing
    counts: dict[str, int] = field(default_factory=dict)
    dvc: bool = False


def chance_f1(shares: dict[str, float], positive: str | None) -> tuple[float, str]:
    """The F1 a model must beat: positive-class F1 of always answering the positive class
    (``2p / (1 + p)``, above a proportional guess's ``p``), or macro-F1 of guessing in proportion
    to the classes (``1 / K``, above always answering one class: ``2q / (1 + q) / K``)."""
    if positive is not None:
        p = shares[positive]
        return 2 * p / (1 + p), f"the F1 of always answering {positive!r} ({p:.1%} of texts)"
    return 1 / len(shares), f"the macro-F1 of guessing in proportion to the {len(shares)} classes"


def order_labels(labels: list[str]) -> list[str]:
    numeric = all(label.lstrip("-").isdigit() for label in labels)
    return sorted(labels, key=lambda v: (int(v), v) if numeric else (0, v.casefold()))


def choose_positive(shares: dict[str, float]) -> tuple[str | None, str]:
    if len(shares) != 2:
        return None, f"macro-F1 over the {len(shares)} classes (every class counts the same)"
    rare, share = min(shares.items(), key=lambda kv: kv[1])
    if share < MINORITY:
        return rare, f"F1 of {rare!r} (the minority class, {share:.1%} of texts)"
    named = [label for label in shares if label.casefold() in POSITIVE_NAMES]
    if len(named) == 1:
        return named[0], f"F1 of {named[0]!r} (named like the positive class, {shares[named[0]]:.1%} of texts)"
    return None, "macro-F1 over both classes (balanced, neither named like the positive class)"


def _header_is_data(frame: pd.DataFrame) -> str | None:
    """Why the detected header row looks like data (a name that is one of its column's values, or
    a sentence), or None."""
    for name in frame.columns:
        values = frame[name].dropna()
        if len(str(name).split()) > 6 or len(str(name)) > 60:
            return f"the column name {str(name)[:40]!r}... is a sentence"
        if len(values) and (values.astype(str).str.strip().str.casefold() == str(name).strip().casefold()).sum() >= 2:
            return f"the column name {name!r} is one of that column's values"
    return None


def _fold(labels: pd.Series, column: str, fold: bool) -> tuple[list[str] | None, str | None]:
    """Label spellings that differ only in case or surrounding spaces: an EntryError unless
    ``fold``; with it, the canonical labels (each group's most frequent spelling, stripped) and a note."""
    groups: dict[str, Counter] = {}
    for value, n in labels.dropna().astype(str).value_counts().items():
        groups.setdefault(label_key(value), Counter())[value] += n
    clashes = [g for g in groups.values() if len(g) > 1]
    if not clashes:
        return None, None
    shown = "; ".join(" and ".join(f"{quote(v)} ({n:,} rows)" for v, n in g.most_common(5)) for g in clashes[:3])
    if not fold:
        raise EntryError(f"labels in column {column!r} differ only in case or surrounding spaces: {shown}; pass "
                         "--fold-labels to merge them into one class (recorded in the entry as fold_labels: true), "
                         "or correct the file")
    canonical = [sorted(g.items(), key=lambda kv: (-kv[1], kv[0]))[0][0].strip() for g in groups.values()]
    return canonical, f"folded labels that differ only in case or spaces (--fold-labels): {shown}"


def _check_lengths(texts: pd.Series, data: Path, read: ReadConfig) -> int:
    lengths = texts.map(lambda t: len(t) if isinstance(t, str) else 0)
    if lengths.empty:
        return 0
    row = int(lengths.to_numpy().argmax())
    longest = int(lengths.iloc[row])
    if longest > MAX_TEXT_CHARS:
        where = f"row {row + 1:,}" + (f" (line {row + 1 + int(read.header):,})" if read.format == "csv" else "")
        raise EntryError(f"{data}: the text in {where} has {longest:,} characters; the limit is {MAX_TEXT_CHARS:,} "
                         "(max_chars): split or shorten it, or remove that row")
    return longest


def settle(name: str, data: Path, frame: pd.DataFrame, read: ReadConfig, text_column: str | None,
           label_column: str | None, fold_labels: bool, lines: list[str]) -> tuple[dict, dict[str, pd.DataFrame], str]:
    """Infer, check and split as prepare will; the entry's config, the splits and why the floor.
    ``lines`` gets the printed lines."""
    text, text_why, label, label_why = infer.columns(frame, text_column, label_column)
    lines += [f"text      {text} ({text_why})", f"label     {label} ({label_why})"]
    canonical, fold_note = _fold(frame[label], label, fold_labels)
    if fold_note:
        lines.append(f"note      {fold_note}")
    longest = _check_lengths(frame[text], data, read)
    pairs, unlabelled = text_label(frame, text, label, canonical)
    if unlabelled:
        lines.append(f"note      left out {unlabelled:,} rows without a label")
    labels = sorted(pairs["label"].unique())
    if len(labels) < 2:
        raise EntryError(f"{data}: one label only ({quote(labels[0]) if labels else 'none'} in column {label!r}, "
                         f"{len(pairs):,} rows): a classifier needs texts of two or more classes")
    if len(labels) > infer.MAX_LABELS:
        raise EntryError(f"column {label!r} has {len(labels):,} distinct labels, more than {infer.MAX_LABELS}: it "
                         "looks like free text; pass the label column with --target")
    empty = int((pairs["text"].map(normalise) == "").sum())
    if empty == len(pairs):
        raise EntryError(f"{data}: every text in column {text!r} is empty ({len(pairs):,} rows): is it the text "
                         "column? Name it with --text-column")
    deduped, counts = deduplicate(pairs)
    params = PrepareParams()
    parts = split(deduped, params)
    per_class = deduped["label"].value_counts()
    if short := [c for c in labels if any(not (parts[s]["label"] == c).any() for s in SPLITS)]:
        raw = pairs["label"].value_counts()
        dup = any(raw.get(c, 0) > 2 * per_class.get(c, 0) for c in short)
        raise EntryError("class " + listing([f"{quote(c)} ({per_class.get(c, 0):,} distinct texts of "
                                             f"{raw.get(c, 0):,} rows)" for c in short], count=5, chars=120)
                         + " is too small to appear in train, validation and test (each needs a text; 5 or more "
                           "distinct texts per class)"
                         + (": most of its rows are exact or near duplicates (texts equal up to case, digits, "
                            "punctuation and spacing are one text, so a template cannot be in two splits); add "
                            "other texts of it" if dup else ": add texts of it")
                         + ", merge it into another class, or remove its rows")
    empty = counts["empty_dropped"]
    removed = len(pairs) - empty - len(deduped)
    lines.append(f"texts     {len(pairs):,} labelled; {empty:,} empty dropped, {removed:,} exact or near duplicates "
                 f"dropped ({counts['conflicting_groups_dropped']:,} groups with conflicting labels), "
                 f"{len(deduped):,} kept")
    test_counts = parts["test"]["label"].value_counts()
    if len(parts["test"]) < SMALL_TEST or test_counts.min() < SMALL_TEST_CLASS:
        lines.append(f"note      small data: the test split has {len(parts['test']):,} texts, the rarest class "
                     f"{test_counts.idxmin()!r} {test_counts.min():,} of them: test metrics and the promotion gate "
                     "are noisy (a few texts more or less right move them a lot); more labelled texts steady them")
    shares = (per_class / per_class.sum()).to_dict()
    labels = order_labels(labels)
    positive, metric_why = choose_positive(shares)
    if positive is not None:
        labels = [c for c in labels if c != positive] + [positive]
    lines.append("labels    " + ", ".join(f"{c} {shares[c]:.1%}" for c in labels))
    lines.append(f"metric    {metric_why}")
    floor, floor_why = chance_f1(shares, positive)
    floor = math.ceil(floor * 1000) / 1000
    lines.append(f"floor     {floor:.3f}: promotion needs more than {floor_why}")
    split_shares = [(parts[s]["label"] == c).mean() for s in SPLITS for c in labels]
    lengths = deduped["text"].str.len()
    from deepflow.kinds.text.text import tokenize

    tokens = deduped["text"].head(5000).map(lambda t: len(tokenize(t)))
    config = {
        "prepared_dir": "", "source": "", "read": asdict(read), "text_column": text, "label_column": label,
        "fold_labels": bool(fold_labels), "split": {"val": params.val_frac, "test": params.test_frac,
                                                    "seed": params.seed},
        "labels": labels, "positive": positive,
        "min_chars": 1,
        "max_chars": int(min(MAX_TEXT_CHARS, max(math.ceil(longest * LENGTH_TOLERANCE), longest + 50))),
        "min_class_share": max(math.floor(min(split_shares) * 500) / 1000, 0.001),
        "max_class_share": min(math.ceil((1 + max(split_shares)) * 500) / 1000, 1.0),
        "candidates": ["shallow", "deep", "transfer"], "baselines": ["tfidf_lr"],
        "register_baselines": True,  # the classical model is in the bake-off: it can be the champion
        "train": {"max_len": int(min(max(tokens.quantile(0.95), 32), 256))},
        "behaviour": {"enabled": True},
        "promotion": {"floor": floor, "margin": 0.0, "noninferiority": {"mcc": 0.02, "behaviour_pass_rate": 0.02},
                      "max_latency_p95_ms": 100.0, "max_size_mb": 150.0},
    }
    lines.append(f"contract  {lengths.min():,}-{lengths.max():,} characters seen (max_chars {config['max_chars']:,}); "
                 f"class shares per split {config['min_class_share']:.3f}-{config['max_class_share']:.3f}; "
                 "no text in two splits")
    return config, parts, floor_why


def read_source(data: Path, header: bool | None = None, max_rows: int | None = None):
    """(frame, how it was read, notes, loose rows?) of a text file: a detected header row that is
    really data (a column name among its own column's values, or a sentence) is read as data."""
    frame, read, notes, loose = read_text_file(data, header=header, max_rows=max_rows)
    if header is None and read.format == "csv" and read.header and (why := _header_is_data(frame)):
        frame, read, notes, loose = read_text_file(data, header=False, max_rows=max_rows)
        notes.append(f"no header row: {why} (--header reads the first line as names)")
    return frame, read, notes, loose


def create(name: str, data: str | Path, *, text_column: str | None = None, label_column: str | None = None,
           header: bool | None = None, fold_labels: bool = False, budget: str | float = "5m", dvc: bool = True,
           force: bool = False, command: str | None = None, echo: Callable[[str], None] = print) -> NewResult:
    """Read, infer, check and split (nothing written if that fails), then write the source copy,
    the entry, the profile and the prepared splits; ``echo`` gets every printed line."""
    entry_path = newentry.check_name(name, force)
    budget_s = parse_budget(budget)
    data = Path(data)
    frame, read, notes, loose = read_source(data, header)
    lines = [f"read      {data.name}: {read.format}"
             + (f", {read.encoding}, delimiter {read.delimiter!r}, {'a header row' if read.header else 'no header'}"
                f", quoting {'on' if read.quoting else 'off'}" + (", loose rows" if loose else "")
                if read.format == "csv" else "")
             + f"; {len(frame):,} rows, columns {', '.join(map(str, frame.columns[:8]))}"]
    lines += [f"note      {n}" for n in notes]
    try:
        config, parts, floor_why = settle(name, data, frame, read, text_column, label_column, fold_labels, lines)
    except EntryError as exc:  # a problem of this file: say which
        raise EntryError(newentry.in_file(data, exc)) from None
    config["loose_rows"] = loose
    del frame
    for line in lines:
        echo(line)

    source = newentry.copy_source(data, name)
    prepared = settings.data_dir() / "prepared" / name
    profile_path = settings.reports_dir() / name / "profile.md"
    config |= {"prepared_dir": project_relative(prepared), "source": project_relative(source),
               "budget_s": budget_s}
    mapping = {"kind": "text", "description": f"text classification of {config['label_column']} from "
                                             f"{config['text_column']} ({data.name})",
               "default": False, "schedule": None, "monitor": {"min_rows": 200}, "config": config}
    about = [f"from {source.name}. Meant to be reviewed and edited: the text and label columns, how the file is read",
             "(read), the labels (the model's identity; the positive class's F1 is the metric, macro-F1 when null),",
             "and the contract: max_chars (the longest text seen x 1.5), min/max_class_share (every class's share",
             "in every split, observed with a tolerance). promotion.floor is chance level: " + floor_why + ".",
             "behaviour: invariance tests only (add phrases/examples to test directions and known cases).",
             "register_baselines: true puts TF-IDF + logistic regression in the bake-off (it can be the champion).",
             f"The profile: {project_relative(profile_path)}. Then: deepflow run {name}"]
    cfg = newentry.write_entry(entry_path, mapping, command or f"deepflow new {name} --data {data}", about)
    profile_path.parent.mkdir(parents=True, exist_ok=True)
    profile_path.write_text(_profile(name, data, lines, parts))
    echo(f"wrote     {project_relative(entry_path)} (the entry: review it) and {project_relative(profile_path)}")

    def prepare_here() -> None:
        from deepflow.kinds.text.prepare import prepare_entry

        prepare_entry(cfg, prepared)

    used_dvc, counts = newentry.finish(name, entry_path, source, prepared, dvc_wanted=dvc,
                                       module="deepflow.kinds.text.prepare", stage_code=STAGE_CODE,
                                       prepare_here=prepare_here, echo=echo)
    return NewResult(name=name, entry=entry_path, profile=profile_path, source=source, prepared=prepared,
                     text_column=config["text_column"], label_column=config["label_column"], labels=config["labels"],
                     positive=config["positive"], floor=config["promotion"]["floor"], read=read, lines=lines,
                     counts=counts, dvc=used_dvc)


def _profile(name: str, data: Path, lines: list[str], parts: dict[str, pd.DataFrame]) -> str:
    """The profile report: what was inferred, then per split and class the texts, their lengths in
    characters (median, 95th percentile, longest) and two examples of each class."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# {name}: profile of {data.name}", "", f"Written by `deepflow new` on {when}.", "", "```", *lines, "```"]
    out += ["", "## Texts per split and class", "", "| split | class | texts | share | median chars | p95 chars | "
            "longest |", "|---|---|---:|---:|---:|---:|---:|"]
    for name_of_split, part in parts.items():
        for label, group in part.groupby("label", sort=True):
            n = group["text"].str.len()
            out.append(f"| {name_of_split} | {label} | {len(group):,} | {len(group) / max(len(part), 1):.1%} | "
                       f"{n.median():.0f} | {n.quantile(0.95):.0f} | {n.max():,} |")
    out += ["", "## Examples (training split)", ""]
    for label, group in parts["train"].groupby("label", sort=True):
        for text in group["text"].head(2):
            shown = text.replace("|", "\\|").replace("\n", " ")
            out.append(f"- **{label}**: {shown[:200]}{'...' if len(shown) > 200 else ''}")
    out += ["", "Duplicates removed before the split: `dedup.json` in the prepared folder.", ""]
    return "\n".join(out)
