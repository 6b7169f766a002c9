"""What ``deepflow new`` infers from a labelled text file: which column is the text, which the label.

Rules (printed with their reasons, overridable with ``--text-column`` and ``--target``):

- **text**: the free-text column, the string column with the most words per value among those
  whose values are mostly distinct (at least :data:`TEXT_DISTINCT` of them) and several words
  long on average (at least :data:`TEXT_WORDS`);
- **label**: among the other columns, those with 2 to :data:`MAX_LABELS` distinct values, each
  held by at least :data:`MIN_CLASS_ROWS` rows (else the most rows held by such values); a name
  like ``label``/``target``/``class``/``sentiment`` wins, then the fewest distinct values, then
  the later column;
- a file without a header has positional columns: ``column_1``, ``column_2``, ... (``--target 1``
  means ``column_1``).

:func:`looks_like_text` tells ``deepflow new`` whether a file is a text entry at all: a free-text
column, a label and at most :data:`MAX_OTHER` other columns that carry anything (not an id, not
constant).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from deepflow.newentry import EntryError

TEXT_WORDS = 3.0  # mean words per value of a free-text column, at least
TEXT_DISTINCT = 0.5  # share of distinct values among a free-text column's values, at least
MAX_LABELS = 50  # more distinct values: not a label
MIN_CLASS_ROWS = 5  # rows of a class: at least one in every split, a few to learn from
MAX_OTHER = 2  # other informative columns a text entry may have (beyond text and label)
SAMPLE = 20_000  # rows looked at to measure a column
LABEL_NAMES = ("label", "labels", "target", "class", "category", "sentiment", "polarity", "y", "tag", "topic",
               "intent", "emotion", "stance", "rating", "score", "gold", "annotation")
_WORD = re.compile(r"\w+")


@dataclass
class Profile:
    """One column measured: how text-like and how label-like it is."""

    name: str
    values: int  # non-missing
    distinct: int
    distinct_share: float
    words: float  # mean words per value (string columns; 0 otherwise)
    chars: float  # mean characters per value
    smallest: int  # rows of the rarest value (when few distinct values)
    decimal: bool = False  # a float column (all values distinct there is a measurement, not an id)

    @property
    def is_text(self) -> bool:
        return self.words >= TEXT_WORDS and self.distinct_share >= TEXT_DISTINCT

    @property
    def is_label(self) -> bool:
        return 2 <= self.distinct <= MAX_LABELS and not self.is_text

    @property
    def is_id(self) -> bool:
        return self.values > 0 and self.distinct_share > 0.95 and not self.is_text and not self.decimal

    def describe(self) -> str:
        return (f"{self.distinct:,} distinct values in {self.values:,}, {self.words:.1f} words and "
                f"{self.chars:.0f} characters on average")


def profile(frame: pd.DataFrame, name: str) -> Profile:
    values = frame[name].dropna()
    if len(values) > SAMPLE:
        values = values.sample(SAMPLE, random_state=0)
    counts = values.astype(str).value_counts()
    if pd.api.types.is_string_dtype(values.dtype) or values.dtype == object:
        text = values.astype(str)
        words = float(text.map(lambda t: len(_WORD.findall(t))).mean()) if len(text) else 0.0
        chars = float(text.str.len().mean()) if len(text) else 0.0
    else:
        words, chars = 0.0, 0.0
    return Profile(name=name, values=len(values), distinct=len(counts),
                   distinct_share=len(counts) / max(len(values), 1), words=words, chars=chars,
                   smallest=int(counts.min()) if len(counts) else 0,
                   decimal=pd.api.types.is_float_dtype(values.dtype))


def resolve(frame: pd.DataFrame, given: str, option: str) -> str:
    """A column named on the command line: its name, a stripped/case-insensitive match, or a
    1-based position (``2`` or ``column_2`` in a file without a header)."""
    columns = [str(c) for c in frame.columns]
    if given in columns:
        return given
    folded = [c for c in columns if c.strip().casefold() == given.strip().casefold()]
    if len(folded) == 1:
        return folded[0]
    if given.strip().isdigit() and 1 <= int(given) <= len(columns):
        return columns[int(given) - 1]
    raise EntryError(f"{option} {given!r}: no such column; the columns are {', '.join(map(repr, columns[:30]))} "
                     "(a name, or a position counted from 1)")


def choose_text(frame: pd.DataFrame, profiles: dict[str, Profile], given: str | None) -> tuple[str, str]:
    if given is not None:
        name = resolve(frame, given, "--text-column")
        return name, f"given with --text-column ({profiles[name].describe()})"
    texts = sorted((p for p in profiles.values() if p.is_text), key=lambda p: (-p.words, -p.chars))
    if not texts:
        best = max(profiles.values(), key=lambda p: p.words)
        raise EntryError(f"no free-text column: none has {TEXT_WORDS:.0f}+ words per value and mostly distinct values "
                         f"(the wordiest is {best.name!r}: {best.describe()}); name it with --text-column")
    chosen = texts[0]
    why = f"the free-text column: {chosen.describe()}"
    if len(texts) > 1:
        why += f"; also text-like: {', '.join(p.name for p in texts[1:4])} (--text-column picks another)"
    return chosen.name, why


def _hint(name: str) -> int:
    key = name.strip().casefold()
    return 0 if key in LABEL_NAMES or any(key.endswith(f"_{n}") or key.startswith(f"{n}_") for n in LABEL_NAMES[:6]) \
        else 1


def choose_label(frame: pd.DataFrame, profiles: dict[str, Profile], text: str, given: str | None) -> tuple[str, str]:
    if given is not None:
        name = resolve(frame, given, "--target")
        if name == text:
            raise EntryError(f"--target {name!r} is the text column; the label must be another column")
        p = profiles[name]
        if p.is_text or p.distinct > MAX_LABELS:
            raise EntryError(f"--target {name!r} looks like free text, not a label ({p.describe()}; a label has 2 to "
                             f"{MAX_LABELS} distinct values): pass the label column with --target")
        return name, f"given with --target ({p.distinct} distinct values)"
    others = [p for n, p in profiles.items() if n != text]
    labels = [p for p in others if p.is_label]
    if not labels:
        single = [p for p in others if p.distinct == 1 and _hint(p.name) == 0]
        if single:
            value = frame[single[0].name].dropna().iloc[0]
            raise EntryError(f"one label only ({str(value).strip()!r} in column {single[0].name!r}, "
                             f"{single[0].values:,} rows): a classifier needs texts of two or more classes")
        seen = "; ".join(f"{p.name}: {p.describe()}" for p in others[:4]) or "no other column"
        raise EntryError(f"no label column: a label has 2 to {MAX_LABELS} distinct values besides the text "
                         f"{text!r} ({seen}); name it with --target")
    position = {p.name: i for i, p in enumerate(others)}
    ranked = sorted(labels, key=lambda p: (_hint(p.name), p.smallest < MIN_CLASS_ROWS, p.distinct,
                                           -position[p.name]))
    chosen = ranked[0]
    why = ("named like a label" if _hint(chosen.name) == 0 else "the column with the fewest distinct values") \
        + f": {chosen.distinct} distinct values, the rarest in {chosen.smallest:,} rows"
    if len(ranked) > 1:
        why += f"; also label-like: {', '.join(p.name for p in ranked[1:4])} (--target picks another)"
    return chosen.name, why


def columns(frame: pd.DataFrame, text_column: str | None = None,
            label_column: str | None = None) -> tuple[str, str, str, str]:
    """(text column, why, label column, why)."""
    profiles = {str(n): profile(frame, n) for n in frame.columns}
    if label_column is not None and text_column is None:  # the text is another column than the one named
        label_column = resolve(frame, label_column, "--target")
        others = {n: p for n, p in profiles.items() if n != label_column}
        text, text_why = choose_text(frame[list(others)], others, None)
    else:
        text, text_why = choose_text(frame, profiles, text_column)
    label, label_why = choose_label(frame, profiles, text, label_column)
    return text, text_why, label, label_why


def _short(name: str) -> str:
    return name if len(name) <= 30 else name[:27] + "..."


def looks_like_text(frame: pd.DataFrame) -> tuple[bool, str]:
    """Whether ``frame`` is a labelled text file (one free-text column, a label and at most
    :data:`MAX_OTHER` other informative columns), and why (one line)."""
    profiles = {str(n): profile(frame, n) for n in frame.columns}
    texts = sorted((p for p in profiles.values() if p.is_text), key=lambda p: (-p.words, -p.chars))
    if not texts:
        return False, "no free-text column (several words per value, mostly distinct)"
    text = texts[0]
    labels = [p for n, p in profiles.items() if n != text.name and p.is_label]
    if not labels:
        return False, f"{text.name!r} is free text, but no column looks like a label (2 to {MAX_LABELS} values)"
    label = min(labels, key=lambda p: (_hint(p.name), p.distinct))
    other = [n for n, p in profiles.items() if n not in (text.name, label.name) and p.distinct > 1 and not p.is_id]
    if len(other) > MAX_OTHER:
        return False, (f"{text.name!r} is free text, but {len(other)} other columns carry information "
                       f"({', '.join(other[:5])}): a table with a text column")
    return True, (f"{_short(text.name)!r} is free text ({text.words:.1f} words per value), "
                  f"{_short(label.name)!r} a label ({label.distinct} values)"
                  + (f", {len(other)} other column(s)" if other else ""))
