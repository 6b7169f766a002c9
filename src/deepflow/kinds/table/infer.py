"""What ``deepflow new`` infers from a table: target, task, classes, metric, split, column roles, leaks.

Every inference is printed (:meth:`Inference.lines`) and recorded in the entry
(:meth:`Inference.to_entry`), and each can be overridden (``--target``, ``--task``,
``--time-column``, or by editing the entry). Rules, after Ludwig's type inference and AutoGluon's
problem-type rules: the target comes from ``--target`` or from its name, with a confidence (high
only when no other column is named like a target), never a silent guess; a text target spelled in
several cases (``Yes``/``yes``) is folded; text targets are classes, whole numbers with two values
are binary (a 0/1 target is never a regression), whole numbers with few values are classes,
anything else numeric is a regression. A target the data cannot support (one class, missing
values, too many classes, a class too rare to reach every split, a ``--task`` its values do not
fit) is a one-line :class:`TableError`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from deepflow.kinds.table import leakage, roles
from deepflow.kinds.table.config import FEATURE_ROLES, MEMBERS, ColumnSpec, ReadConfig, SplitConfig
from deepflow.kinds.table.read import TableError
from deepflow.problems import listing, quote

MAX_CLASSES = 100  # more distinct text values than this: not a classification target
MULTICLASS_MAX = 20  # whole-number targets with at most this many values (not most rows distinct) are classes
MIN_CLASS_ROWS = 5  # rows of each class: at least one in every split, a few to learn from
RARE_POSITIVE = 0.2  # a positive class rarer than this is scored by AUPRC, not ROC-AUC
TRUTHY = ("1", "true", "yes", "y", "t", "positive", "pos")
# Names a target usually has, best first; (names, confidence). Prefixes is_/has_ are medium.
TARGET_NAMES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("target", "label", "class", "y", "outcome"), "high"),
    (("churn", "churned", "attrition", "default", "defaulted", "survived", "converted", "diagnosis"), "high"),
    (("species", "quality", "price", "sale_price", "saleprice", "response", "result"), "medium"),
)
_PREFIXED = re.compile(r"^(is|has)_[a-z0-9_]+$|_(label|target|class)$|^(label|target|class)_")
EVENT_TIME = re.compile(r"(date|time|timestamp|datetime|created|updated|event|when)", re.IGNORECASE)


@dataclass
class Inference:
    """Everything ``new`` inferred, with why."""

    rows: int
    target: str
    target_reason: str
    task: str
    task_reason: str
    classes: list[str]
    metric: str
    metric_reason: str
    columns: dict[str, ColumnSpec]
    stats: dict[str, dict[str, Any]]
    time_column: str | None
    time_reason: str
    target_summary: dict[str, Any]
    class_share: dict[str, list[float]] = field(default_factory=dict)
    rows_min: int = 1
    duplicate_share: float = 0.0  # rows that copy an earlier row (features and target), as measured
    target_min: float | None = None
    target_max: float | None = None
    drop_missing_target: bool = False
    leak_scores: dict[str, float] = field(default_factory=dict)
    read: ReadConfig | None = None
    notes: list[str] = field(default_factory=list)
    split: SplitConfig = field(default_factory=SplitConfig)
    source: str = ""  # the file's name, for the printed lines

    def features(self) -> list[str]:
        return [name for name, spec in self.columns.items() if spec.role in FEATURE_ROLES]

    def lines(self) -> list[str]:
        """Every inference, one printable line each (the same words as the profile report)."""
        from deepflow.kinds.table.profile import lines

        return lines(self)

    def to_entry(self, name: str, source_path: str, prepared_dir: str, budget_s: float) -> dict[str, Any]:
        """The entry file's mapping (``datasets/<name>.yaml``): kind ``table`` and its config."""
        read = self.read or ReadConfig()
        config: dict[str, Any] = {
            "source": source_path,
            "read": {"format": read.format, "delimiter": read.delimiter, "encoding": read.encoding,
                     "header": read.header, "na_values": list(read.na_values), "max_rows": read.max_rows},
            "prepared_dir": prepared_dir,
            "target": self.target, "task": self.task, "classes": list(self.classes), "metric": self.metric,
            "time_column": self.time_column,
            "split": {"val": self.split.val, "test": self.split.test, "seed": self.split.seed},
            "columns": {col: _column_entry(spec) for col, spec in self.columns.items()},
            "class_share": {c: list(b) for c, b in self.class_share.items()},
            "rows_min": self.rows_min,
            "contract": {"max_duplicate_share": roles.duplicate_bound(self.duplicate_share)},
        }
        if self.task == "regression":
            config.update(target_min=self.target_min, target_max=self.target_max)
        config.update(drop_missing_target=self.drop_missing_target, members=list(MEMBERS), budget_s=float(budget_s))
        what = {"regression": "regression of", "binary": "binary classification of",
                "multiclass": f"{len(self.classes)}-class classification of"}[self.task]
        return {"kind": "table", "description": f"{what} {self.target}", "default": False, "config": config}


def _column_entry(spec: ColumnSpec) -> dict[str, Any]:
    """A column's mapping with only the keys its role uses (the file stays readable)."""
    out: dict[str, Any] = {"role": spec.role, "dtype": spec.dtype, "null_share_max": spec.null_share_max}
    if spec.role in ("numeric", "boolean") or spec.min is not None or spec.max is not None:
        out.update(min=spec.min, max=spec.max)
    if spec.role == "categorical" or spec.categories:
        out.update(categories=list(spec.categories), known_share_min=spec.known_share_min, unknown=spec.unknown)
    if spec.role == "datetime" or spec.format:
        out["format"] = spec.format
    out["note"] = spec.note
    return out


def infer(frame: pd.DataFrame, target: str | None = None, task: str | None = None, time_column: str | None = None,
          drop_missing_target: bool = False, read: ReadConfig | None = None, read_notes: list[str] | None = None,
          split: SplitConfig | None = None, seed: int = 0) -> Inference:
    """Infer everything about ``frame`` (as :func:`read.read_table` returns it); TableError when it
    cannot be learned from. ``read``/``read_notes`` are how the file was read (recorded, printed)."""
    split = split or SplitConfig()
    notes = list(read_notes or [])
    if "_row_hash" in frame.columns:
        raise TableError("the table has a column named '_row_hash': deepflow uses that name; rename it")
    target, target_reason = choose_target(frame, target)
    missing = frame[target].isna() | frame[target].astype("str").str.strip().eq("")
    if missing.any():
        if not drop_missing_target:
            raise TableError(f"the target {target!r} is missing in {missing.sum():,} of {len(frame):,} rows: fill it "
                             "in, or pass --drop-missing-target to leave those rows out")
        notes.append(f"{missing.sum():,} rows without a target value are left out (--drop-missing-target)")
        frame = frame[~missing].reset_index(drop=True)
    frame = _fold_target(frame, target, notes)
    task, task_reason, kind = choose_task(frame[target], target, task)
    labels = class_labels(frame[target]) if task != "regression" else roles.as_numbers(frame[target])
    specs, stats = roles.profile(frame, target)
    notes += [roles.out_of_range(c, s["out_of_range"]) for c, s in stats.items() if s.get("out_of_range")]
    if not any(spec.role in FEATURE_ROLES for spec in specs.values()):
        raise TableError("no usable feature: every column other than the target is constant, an id, free text or "
                         f"too sparse ({', '.join(f'{c}: {s.role}' for c, s in specs.items())})")
    inf = Inference(rows=len(frame), target=target, target_reason=target_reason, task=task, task_reason=task_reason,
                    classes=[], metric="", metric_reason="", columns=specs, stats=stats, time_column=None,
                    time_reason="", target_summary={}, drop_missing_target=drop_missing_target, read=read,
                    notes=notes, split=split)
    _target_contract(inf, labels, kind)
    _check_leaks(inf, frame, labels, seed)
    inf.time_column, inf.time_reason = choose_time_column(specs, stats, time_column, target)
    if not inf.features():
        raise TableError("no usable feature left after the leakage check: "
                         + ", ".join(f"{c} ({inf.leak_scores[c]:.3f})" for c in inf.leak_scores))
    train_rows = len(frame) * (1 - split.val - split.test)
    inf.rows_min = max(1, int(train_rows * 0.5))
    inf.duplicate_share = float(frame.duplicated(subset=[*inf.features(), target]).mean()) if len(frame) else 0.0
    return inf



def _names(columns: list[str], limit: int = 30) -> str:
    shown = ", ".join(columns[:limit])
    return shown + (f", ... ({len(columns) - limit} more)" if len(columns) > limit else "")


def normalise(name: str) -> str:
    """``isActive`` -> ``is_active``, ``Default Payment`` -> ``default_payment``."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def check_column(frame: pd.DataFrame, name: str, what: str) -> str:
    """``name`` if it is a column, else a TableError with the closest names and the column list."""
    columns = [str(c) for c in frame.columns]
    if name in columns:
        return name
    close = difflib.get_close_matches(name, columns, n=3, cutoff=0.6)
    close += [c for c in columns if c.lower() == name.lower() and c not in close]
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise TableError(f"{what} {name!r} is not a column{hint} (columns: {_names(columns)})")


def choose_target(frame: pd.DataFrame, target: str | None) -> tuple[str, str]:
    """(target, why): ``--target`` when given, else the best-ranked target-like name: usable ones
    first, then high-confidence names before medium ones before ``is_*``-like ones, then two values
    before few before many (``survived`` before ``class``), then the later column. Confidence is
    high only for a high-confidence name without other candidates."""
    if target is not None:
        return check_column(frame, target, "--target"), "given with --target"
    ranked: list[tuple[bool, int, int, int, str, int]] = []  # (unusable, group, size, -position, column, n)
    for position, column in enumerate(frame.columns):
        norm = normalise(str(column))
        tiers = [confidence for names, confidence in TARGET_NAMES if norm in names]
        if tiers or _PREFIXED.search(norm):
            group = 0 if tiers[:1] == ["high"] else 1 if tiers else 2
            distinct = int(frame[column].nunique())
            size = 0 if distinct == 2 else 1 if distinct <= MULTICLASS_MAX else 2
            ranked.append((not _usable(frame[column]), group, size, -position, column, distinct))
    if not ranked:
        raise TableError("no column is named like a target (label, target, class, y, outcome, churned, is_..., "
                         f"has_...): pass --target, one of: {_names([str(c) for c in frame.columns])}")
    ranked.sort()
    _, group, _, _, column, _ = ranked[0]
    why = f"from its name, confidence {'medium' if group or len(ranked) > 1 else 'high'}"
    if len(ranked) > 1:
        others = (f"{c} ({n:,} value{'s' if n != 1 else ''})" for *_, c, n in ranked[1:])
        why += f"; other candidates: {', '.join(others)}, --target picks one"
    return column, why


def _usable(values: pd.Series) -> bool:
    """A target candidate with two or more values and, when it holds classes, none too rare."""
    counts = values.value_counts()
    return len(counts) >= 2 and (len(counts) > MAX_CLASSES or counts.min() >= MIN_CLASS_ROWS)


def _kind(values: pd.Series) -> str:
    """'bool', 'text', 'whole' (integer-valued numbers) or 'number' of the present values."""
    if isinstance(values.dtype, pd.BooleanDtype) or values.dtype == bool:
        return "bool"
    numbers = roles.as_numbers(values)
    if numbers.notna().sum() < values.notna().sum() or not np.isfinite(numbers.dropna()).all():
        return "text"
    present = numbers.dropna()
    return "whole" if (present == np.round(present)).all() else "number"


def choose_task(values: pd.Series, target: str, task: str | None) -> tuple[str, str, str]:
    """(task, why, kind of values) from ``--task`` or from the target's values (AutoGluon-like)."""
    kind = _kind(values)
    distinct = int(values.nunique())
    what = {"bool": "true/false values", "text": "text values", "whole": "whole numbers", "number": "numbers"}[kind]
    if distinct < 2:
        raise TableError(f"the target {target!r} has one value ({quote(values.dropna().iloc[0])}) in every row: "
                         "there is nothing to predict")
    if task is not None:
        if task not in ("binary", "multiclass", "regression"):
            raise TableError(f"--task must be binary, multiclass or regression, not {task!r}")
        if task == "regression" and kind in ("bool", "text"):
            raise TableError(f"--task regression needs a numeric target; {target!r} holds {what}")
        if task == "binary" and distinct != 2:
            raise TableError(f"--task binary needs two values; the target {target!r} has {distinct:,}")
        if task == "multiclass" and distinct == 2:
            raise TableError(f"--task multiclass needs three or more classes; the target {target!r} has two "
                             f"({', '.join(map(repr, sorted(map(str, values.dropna().unique()))))}): use --task "
                             "binary, or leave --task out")
        if task == "multiclass" and distinct > MAX_CLASSES:
            raise TableError(f"--task multiclass: the target {target!r} has {distinct:,} values (at most "
                             f"{MAX_CLASSES} classes)")
        return task, f"given with --task ({distinct:,} distinct {what})", kind
    if distinct == 2:
        return "binary", f"2 distinct {what}", kind
    if kind in ("bool", "text"):
        if distinct > MAX_CLASSES or distinct > 0.5 * len(values):
            raise TableError(f"the target {target!r} has {distinct:,} distinct text values in {len(values):,} rows: "
                             f"too many classes (at most {MAX_CLASSES}); is it the right column? (--target)")
        return "multiclass", f"{distinct} distinct {what}", kind
    if kind == "whole" and distinct <= MULTICLASS_MAX and distinct < 0.5 * len(values):
        return "multiclass", (f"{distinct} distinct whole numbers (at most {MULTICLASS_MAX}: classes; "
                              "--task regression if they are amounts)"), kind
    return "regression", f"{distinct:,} distinct {what}", kind


def class_labels(values: pd.Series) -> pd.Series:
    """Class names as text (``"1"``, never ``"1.0"``; ``"True"``/``"False"``); prepare writes the target so."""
    return roles.as_text(values)


def _fold_target(frame: pd.DataFrame, target: str, notes: list[str]) -> pd.DataFrame:
    """``frame`` with its text target's case and whitespace folded (:func:`roles.fold`) when that
    merges spellings (``Yes``/``yes``/`` no``/``No`` -> ``yes``/``no``); prepare folds alike."""
    values = frame[target]
    if not (pd.api.types.is_string_dtype(values.dtype) or values.dtype == object):
        return frame
    text = roles.as_text(values)
    folded = text.map(lambda v: v if v is None else roles.fold(v))
    if folded.nunique() >= text.nunique():
        return frame
    spellings = pd.DataFrame({"f": folded, "t": text}).dropna().drop_duplicates().groupby("f")["t"].agg(sorted)
    merged = "; ".join(f"{', '.join(map(repr, ts))} -> {f!r}" for f, ts in spellings.items() if ts != [f])
    notes.append(f"target {target!r}: {text.nunique()} spellings fold to {folded.nunique()} classes (case and "
                 f"spaces ignored; prepare folds alike): {merged}")
    return frame.assign(**{target: folded})


def _order(classes: list[str]) -> list[str]:
    try:
        return sorted(classes, key=float)
    except ValueError:
        return sorted(classes)


def _target_contract(inf: Inference, labels: pd.Series, kind: str) -> None:
    """Classes, positive class, metric and the target's contract bounds."""
    n = len(labels)
    if inf.task == "regression":
        inf.target_min, inf.target_max = roles.numeric_bounds(labels.to_numpy())
        inf.metric, inf.metric_reason = "r2", "R² of the regression (RMSE and MAE are reported too)"
        inf.target_summary = {"min": float(labels.min()), "max": float(labels.max()), "mean": float(labels.mean()),
                              "median": float(labels.median())}
        return
    counts = labels.value_counts()
    rare = counts[counts < MIN_CLASS_ROWS]
    if len(rare):
        raise TableError(f"the target {inf.target!r} has classes with fewer than {MIN_CLASS_ROWS} rows ("
                         + listing([f"{quote(c)}: {k}" for c, k in rare.items()], chars=120)
                         + "): every class needs rows in train, validation and test; merge or remove rare classes")
    if inf.task == "binary":
        a, b = _order(list(counts.index))
        truthy = [c for c in (a, b) if c.lower() in TRUTHY]
        if len(truthy) == 1:
            positive, why = truthy[0], "the yes/true/1 value"
        else:
            positive = b if counts[b] <= counts[a] else a
            why = "the rarer class"
        negative = a if positive == b else b
        inf.classes = [negative, positive]
        share = counts[positive] / n
        inf.task_reason += f"; positive class {positive!r} ({why}), {share:.1%} of rows"
        if share < RARE_POSITIVE:
            inf.metric = "auprc"
            inf.metric_reason = (f"AUPRC, as the positive class is rare ({share:.1%} < {RARE_POSITIVE:.0%}) and "
                                 "ROC-AUC or accuracy would flatter a model")
        else:
            inf.metric, inf.metric_reason = "roc_auc", (f"ROC-AUC, as the positive share is {share:.1%} (>= "
                                                    f"{RARE_POSITIVE:.0%}; AUPRC below that)")
    else:
        inf.classes = _order(list(counts.index))
        inf.metric, inf.metric_reason = "f1_macro", "macro-F1: every class counts the same"
    inf.target_summary = {c: int(counts[c]) for c in inf.classes}
    inf.class_share = {c: roles.share_bounds(counts[c] / n, counts[c] / n, n) for c in inf.classes}


def choose_time_column(specs: dict[str, ColumnSpec], stats: dict[str, dict], time_column: str | None,
                       target: str) -> tuple[str | None, str]:
    """(time column, why): ``--time-column``, else the one datetime feature that looks like an
    event time; None (a content-hash split) when there is none or several."""
    if time_column is not None:
        if time_column == target:
            raise TableError(f"--time-column {time_column!r} is the target")
        if time_column not in specs:
            close = difflib.get_close_matches(time_column, list(specs), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise TableError(f"--time-column {time_column!r} is not a column{hint} (columns: {_names(list(specs))})")
        role = specs[time_column].role
        if role not in ("datetime", "numeric"):
            raise TableError(f"--time-column {time_column!r} holds no dates or numbers (inferred role: {role}: "
                             f"{specs[time_column].note})")
        return time_column, "given with --time-column"
    dates = [c for c, s in specs.items() if s.role == "datetime"]
    usable = [c for c in dates if stats[c]["missing"] <= 0.05 and stats[c]["distinct"] >= 10]
    if len(usable) == 1:
        c = usable[0]
        only = "the only datetime column" if len(dates) == 1 else "the only complete datetime column"
        missing = f"{stats[c]['missing']:.1%} missing" if stats[c]["missing"] else "none missing"
        return c, f"{only}, {stats[c]['distinct']:,} distinct times, {missing}"
    named = [c for c in usable if EVENT_TIME.search(c)]
    if len(usable) > 1 and len(named) == 1:
        return named[0], f"of the datetime columns {', '.join(usable)}, the only one named like an event time"
    if usable:
        return None, (f"several datetime columns ({', '.join(usable)}): none chosen as the event time; "
                      "--time-column picks one for a time-ordered split")
    return None, "no datetime column"


def _check_leaks(inf: Inference, frame: pd.DataFrame, labels: pd.Series, seed: int) -> None:
    features = {c: s.role for c, s in inf.columns.items() if s.role in FEATURE_ROLES}
    positive = inf.classes[1] if inf.task == "binary" else None
    target = labels if inf.task != "regression" else labels.astype(float)
    inf.leak_scores = leakage.scores(frame, features, target, inf.task, positive, seed)
    for column, score in inf.leak_scores.items():
        if score >= leakage.LEAK_SCORE:
            spec = inf.columns[column]
            spec.note = (f"LEAK: alone it predicts {inf.target!r} with held-out {leakage.METRIC[inf.task]} "
                         f"{score:.3f} (>= {leakage.LEAK_SCORE}); not a feature. If it is known when predicting, "
                         f"set its role back to {spec.role}. Was: {spec.note}")
            spec.role = "leak"
