"""Explanations: why a model decided, for one prediction and overall.

Kind-independent: everything here works on a scorer's own ``predict`` over *raw* inputs (the
fields a request or a batch file holds), so a one-hot or embedded category, a date's parts or a
missing-value indicator are explained as the one field the user sent, and every member of a
bake-off (classical, shallow, deep) is explained the same way.

* **Columns** (``tabular`` and ``table`` kinds), :func:`columns`: Shapley values of the input
  columns, computed by shap's ``PermutationExplainer`` (antithetic permutations) over the scorer's
  ``predict``. A column "left out" takes its values from a **background** of training rows that is
  stored with the model (:func:`attach_background`, :data:`BACKGROUND_ROWS` rows): interventional
  SHAP. The contributions of a row add up, exactly, to ``score(row) - baseline`` where the
  baseline is the mean score over the background (the efficiency of every permutation's
  marginal contributions; checked in tests). Scores are probabilities (binary: of the positive
  class; multiclass: of the class explained) or, for regression, the predicted value.
* **Tokens** (``text`` kind), :func:`tokens`: shap's ``PartitionExplainer`` with a word-level
  ``Text`` masker; a masked word is removed. The contributions to a class's probability add up to
  ``p(text) - p(every word removed)``: the baseline is the empty text.
* **Overall** (model cards, bake-off reports), :func:`global_columns` and
  :func:`permutation_importance`: the mean absolute contribution over a seeded sample of test rows,
  and the drop of the primary metric when one column is shuffled.

Cost is bounded by construction: :data:`PERMUTATIONS` permutations of the columns over the
background, :data:`TOKEN_EVALS` maskings of a text. Explaining is off unless asked for; a plain
prediction never imports shap. Measured cost: ``bench/explain_cost.py``, docs/explain.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

BACKGROUND_ROWS = 100  # training rows stored with a model: what "a column left out" means
PERMUTATIONS = 4  # antithetic permutation pairs per explained row (cost: 2 * PERMUTATIONS * (M + 1) evaluations)
TOKEN_EVALS = 300  # maskings of one text (PartitionExplainer's budget)
TOP = 5  # contributions listed per prediction by default
ATTRIBUTE = "explain_background"  # where a scorer carries its background rows
SEED = 0


class NotExplainable(ValueError):
    """The served version cannot be explained (e.g. registered before explanations existed)."""


# --- the background -------------------------------------------------------------------------------


def background_sample(frame: pd.DataFrame, columns: Sequence[str], rows: int = BACKGROUND_ROWS,
                      seed: int = SEED) -> pd.DataFrame:
    """A seeded sample of at most ``rows`` rows of ``frame[columns]``, kept in their original order."""
    take = np.sort(np.random.default_rng(seed).choice(len(frame), size=min(rows, len(frame)), replace=False))
    return frame[list(columns)].iloc[take].reset_index(drop=True)


def attach_background(scorer: Any, background: pd.DataFrame | None) -> None:
    """Store the background rows on the scorer (pickled with it into the registered model)."""
    if background is not None:
        setattr(scorer, ATTRIBUTE, background)


def background_or_sample(scorer: Any, frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The scorer's background rows; a sample of ``frame`` for a scorer without them (a member
    scored outside the pipeline): global importance then measures against that sample."""
    found = getattr(scorer, ATTRIBUTE, None)
    return found if isinstance(found, pd.DataFrame) and not found.empty else background_sample(frame, columns)


def background_of(scorer: Any, what: str) -> pd.DataFrame:
    """The scorer's background rows, or NotExplainable naming ``what`` (the version)."""
    found = getattr(scorer, ATTRIBUTE, None)
    if not isinstance(found, pd.DataFrame) or found.empty:
        raise NotExplainable(f"{what} carries no background rows to explain against (it was registered before "
                             "explanations existed); train a new version to explain its predictions")
    return found


# --- columns --------------------------------------------------------------------------------------


class _Codes:
    """Any columns as float codes shap can mask (a column's values -> positions in its distinct
    values, missing -> -1) and back to the original values and dtypes."""

    def __init__(self, frames: Sequence[pd.DataFrame], columns: Sequence[str]) -> None:
        self.columns = list(columns)
        joined = pd.concat([f[self.columns] for f in frames], ignore_index=True)
        self.uniques, codes = [], []
        for c in self.columns:
            code, unique = pd.factorize(joined[c], use_na_sentinel=True)
            self.uniques.append(unique)
            codes.append(code)
        self.codes = np.stack(codes, axis=1).astype(np.float64) if codes else np.zeros((len(joined), 0))
        self.sizes = [len(f) for f in frames]

    def part(self, i: int) -> np.ndarray:
        start = sum(self.sizes[:i])
        return self.codes[start: start + self.sizes[i]]

    def decode(self, codes: np.ndarray) -> pd.DataFrame:
        codes = np.asarray(codes).astype(np.int64).reshape(-1, len(self.columns))
        return pd.DataFrame({c: pd.api.extensions.take(np.asarray(u) if not hasattr(u, "array") else u.array,
                                                       codes[:, j], allow_fill=True)
                             for j, (c, u) in enumerate(zip(self.columns, self.uniques, strict=True))})


@dataclass(frozen=True)
class Shapley:
    """Contributions of ``rows`` (``values``: (N, M) or, multi-output, (N, M, C)), the baseline
    (a number or (C,)) and the scores they explain ((N,) or (N, C)): values sum to scores - baseline."""

    columns: list[str]
    values: np.ndarray
    baseline: np.ndarray
    scores: np.ndarray


def columns(predict: Callable[[pd.DataFrame], np.ndarray], rows: pd.DataFrame, background: pd.DataFrame,
            *, permutations: int = PERMUTATIONS, seed: int = SEED) -> Shapley:
    """Shapley values of ``rows``'s columns (those of ``background``) for ``predict`` (module docstring)."""
    import shap

    names = list(background.columns)
    if missing := [c for c in names if c not in rows.columns]:
        raise KeyError(f"rows lack the model's columns {missing[:5]}")
    codes = _Codes([background, rows[names]], names)

    def f(masked: np.ndarray) -> np.ndarray:
        return np.asarray(predict(codes.decode(masked)), dtype=np.float64)

    explainer = shap.PermutationExplainer(f, shap.maskers.Independent(codes.part(0), max_samples=len(background)),
                                          seed=seed)
    out = explainer(codes.part(1), max_evals=permutations * 2 * (len(names) + 1) + 1, silent=True)
    values = np.asarray(out.values, dtype=np.float64)
    baseline = np.asarray(out.base_values, dtype=np.float64)[0] if len(rows) else np.asarray(0.0)
    scores = baseline + values.sum(axis=1)
    return Shapley(names, values, baseline, scores)


def json_value(value: Any) -> Any:
    """A raw input value as JSON gives it back: numbers, strings, booleans, ISO dates, null."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, pd.Timestamp | datetime | date):
        return value.isoformat()
    if isinstance(value, bool | int | str):
        return value
    try:
        return None if pd.isna(value) else str(value)
    except (TypeError, ValueError):
        return str(value)


def ranked(names: Sequence[str], values: np.ndarray, raw: Sequence[Any], top: int) -> tuple[list[dict], float]:
    """The ``top`` contributions by size, largest first, as ``{"feature", "value", "contribution"}``;
    and the sum of the others (so listed + rest = score - baseline)."""
    order = np.argsort(-np.abs(values), kind="stable")
    shown = order[: max(0, top)]
    listed = [{"feature": str(names[j]), "value": json_value(raw[j]), "contribution": float(values[j])}
              for j in shown]
    return listed, float(values[order[len(shown):]].sum())


METHOD_COLUMNS = "shap permutation (interventional), raw input fields"
METHOD_TOKENS = "shap partition, word tokens removed"


def explain_rows(predict: Callable[[pd.DataFrame], np.ndarray], rows: pd.DataFrame, background: pd.DataFrame,
                 *, classes: Sequence[str] = (), target: str | None = None, top: int = TOP) -> list[dict[str, Any]]:
    """Per row: ``{"target", "baseline", "score", "contributions": [...top], "rest", "method"}``.

    A scorer with one output per row (a probability, a value) is explained as ``target`` (e.g. the
    positive class's name); a multi-output one for each row's most probable class of ``classes``."""
    sh = columns(predict, rows, background)
    out = []
    raw = rows[sh.columns].to_numpy(dtype=object)
    for i in range(len(rows)):
        values, base, score, name = sh.values[i], sh.baseline, sh.scores[i], target
        if values.ndim == 2:  # (M, C): the row's most probable class
            k = int(np.argmax(score))
            values, base, score = values[:, k], base[k], score[k]
            name = str(classes[k]) if k < len(classes) else str(k)
        listed, rest = ranked(sh.columns, values, raw[i], top)
        out.append({"target": name, "baseline": float(base), "score": float(score),
                    "contributions": listed, "rest": rest, "method": METHOD_COLUMNS})
    return out


def as_json(explanations: list[dict[str, Any]], index: pd.Index) -> pd.Series:
    """Explanations as one JSON string each (a batch output column), on ``index``."""
    import json

    return pd.Series([json.dumps(e, allow_nan=False, default=str) for e in explanations], index=index, dtype=object)


# --- tokens ---------------------------------------------------------------------------------------


def tokens(predict_texts: Callable[[list[str]], np.ndarray], texts: Sequence[str], labels: Sequence[str],
           *, top: int = TOP, max_evals: int = TOKEN_EVALS, seed: int = SEED) -> list[dict[str, Any]]:
    """Per text, for its most probable class: the words that pushed it there (module docstring):
    ``{"target", "baseline", "score", "contributions": [{"token", "start", "contribution"}], "rest"}``."""
    import shap

    masker = shap.maskers.Text(r"\W+", mask_token=" ", collapse_mask_token=True)  # " ": removed

    def f(batch: np.ndarray) -> np.ndarray:
        return np.asarray(predict_texts([str(t) for t in batch]), dtype=np.float64)

    explainer = shap.PartitionExplainer(f, masker, output_names=list(labels), seed=seed)
    out = []
    for text in texts:
        if len([w for w in re.split(r"\W+", text) if w]) > 1:
            ex = explainer([text], max_evals=max_evals, silent=True)
            values, base, pieces = np.asarray(ex.values[0]), np.asarray(ex.base_values[0]), list(ex.data[0])
        else:  # one word (or none): it alone moves the score from the empty text (shap cannot cluster one)
            base, whole = f(np.array(["", text], dtype=object))
            values, pieces = (whole - base)[None, :], [text]
        score = base + values.sum(axis=0)
        k = int(np.argmax(score))
        starts, at = [], 0
        for piece in pieces:  # the pieces are the text cut in order: offsets by their lengths
            found = text.find(piece, at) if piece else at
            starts.append(found if found >= 0 else at)
            at = (found if found >= 0 else at) + len(piece)
        order = np.argsort(-np.abs(values[:, k]), kind="stable")
        listed = [j for j in order if pieces[j].strip()][: max(0, top)]
        out.append({"target": str(labels[k]), "baseline": float(base[k]), "score": float(score[k]),
                    "contributions": [{"token": pieces[j].strip(),
                                       "start": int(starts[j] + len(pieces[j]) - len(pieces[j].lstrip())),
                                       "contribution": float(values[j, k])} for j in listed],
                    "rest": float(values[:, k].sum() - sum(values[j, k] for j in listed)), "method": METHOD_TOKENS})
    return out


# --- overall --------------------------------------------------------------------------------------


GLOBAL_EVALS = 400_000  # rows a model scores for a card's mean |contribution| (bounds its cost)
PERMUTATION_EVALS = 1_500_000  # rows a model scores for a card's permutation importance
MIN_GLOBAL_ROWS, MIN_PERMUTATION_ROWS = 20, 1000


def global_rows(columns_: int, background: int, rows: int = 200, permutations: int = 1) -> int:
    """How many test rows a card explains: ``rows``, fewer for a wide model so the model scores at
    most about :data:`GLOBAL_EVALS` rows (never fewer than :data:`MIN_GLOBAL_ROWS`)."""
    per_row = 2 * permutations * (columns_ + 1) * max(1, background)
    return int(min(rows, max(MIN_GLOBAL_ROWS, GLOBAL_EVALS // per_row)))


def global_columns(predict: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame, background: pd.DataFrame,
                   rows: int = 200, seed: int = SEED) -> pd.Series:
    """Mean |contribution| per column over a seeded sample of at most ``rows`` rows of ``frame``
    (:func:`global_rows`; multi-output: summed over the classes), largest first."""
    rows = global_rows(len(background.columns), len(background), rows)
    sample = background_sample(frame, background.columns, rows, seed)
    sh = columns(predict, sample, background, permutations=1)
    size = np.abs(sh.values)
    if size.ndim == 3:
        size = size.sum(axis=2)
    return pd.Series(size.mean(axis=0), index=sh.columns).sort_values(ascending=False, kind="stable")


def permutation_importance(predict: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame,
                           columns_: Sequence[str], metric: Callable[[np.ndarray, pd.DataFrame], float], *,
                           rows: int = 2000, repeats: int = 3, seed: int = SEED) -> pd.DataFrame:
    """Per raw column: the mean (and spread over ``repeats`` shuffles) drop of ``metric(scores, rows)``
    when that column's values are shuffled across a seeded sample of ``rows`` rows, most important first."""
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(frame), size=min(rows, len(frame)), replace=False))
    sample = frame.iloc[take].reset_index(drop=True)
    base = metric(predict(sample), sample)
    out = []
    for c in columns_:
        drops = []
        for _ in range(repeats):
            shuffled = sample.copy()
            shuffled[c] = sample[c].to_numpy()[rng.permutation(len(sample))]
            drops.append(base - metric(predict(shuffled), sample))
        out.append({"feature": c, "importance": float(np.nanmean(drops)), "std": float(np.nanstd(drops))})
    table = pd.DataFrame(out, columns=["feature", "importance", "std"])
    return table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


def relies_on(ranking: pd.Series, what: str, unit: str, top: int = 3, permutation: pd.DataFrame | None = None,
              metric: str = "") -> str:
    """Plain sentences from a mean-|contribution| ranking: which inputs carry the model; and, from
    the permutation table, any input among the ``top`` costliest to shuffle that the ranking's top
    leaves out (one that decides few rows, but those strongly)."""
    sentence = _relies(ranking, what, unit, top)
    if permutation is None or not len(permutation):
        return sentence
    head = set(ranking.head(top).index)
    missed = [r for r in permutation.head(top).itertuples() if r.feature not in head and r.importance > 0]
    if missed:
        sentence += (" Shuffling " + ", ".join(f"`{r.feature}` ({metric} -{r.importance:.3f})" for r in missed)
                     + " also costs much: " + ("it matters" if len(missed) == 1 else "they matter")
                     + " in few rows, but strongly there.")
    return sentence


def _relies(ranking: pd.Series, what: str, unit: str, top: int) -> str:
    if ranking.empty or not np.isfinite(ranking.to_numpy()).any() or float(ranking.sum()) <= 0:
        return f"{what}: no input moves its {unit} measurably."
    total = float(ranking.sum())
    head = ranking.head(top)
    head = head[head > 0]
    parts = [f"`{name}` ({value / total:.0%})" for name, value in head.items()]
    share = float(head.sum()) / total
    lead = "mostly on" if share >= 0.6 else "on many inputs, led by"
    return (f"{what} relies {lead} {', '.join(parts)}: {share:.0%} of the mean absolute contribution to its "
            f"{unit} over test rows, of {len(ranking)} inputs.")


@dataclass(frozen=True)
class Importance:
    """A member's global importance: mean |contribution| per input (``ranking``, largest first) and
    the permutation drop of the primary metric (``permutation``: feature, importance, std)."""

    ranking: pd.Series
    permutation: pd.DataFrame
    metric: str
    unit: str  # what a contribution moves: "probability of the positive class", "predicted value", ...
    base: float  # the metric on the permutation sample, nothing shuffled
    shap_rows: int
    permutation_rows: int
    repeats: int


def card_section(imp: Importance, member: str, roles: dict[str, str] | None = None) -> str:
    """The model card's "What the model relies on": the sentence, then both measures per input."""
    perm = imp.permutation.set_index("feature") if len(imp.permutation) else None
    lines = ["## What the model relies on", "", summary(imp, member), "",
             f"*Mean |contribution|*: the mean absolute Shapley value of each input over {imp.shap_rows:,} test "
             f"rows, in units of the {imp.unit} (docs/explain.md). *Permutation*: how much test {imp.metric} "
             f"drops (from {imp.base:.4f}) when the input's values are shuffled across {imp.permutation_rows:,} "
             f"test rows, mean ± spread of {imp.repeats} shuffles; near zero: the model does not need it (or "
             "another input carries the same information).", ""]
    head = ["input", *(["role"] if roles else []), "mean abs. contribution", "permutation", "±"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, value in imp.ranking.items():
        cells = [str(name), *([roles.get(name, "")] if roles else []), f"{value:.4f}"]
        cells += ([f"{perm.loc[name, 'importance']:+.4f}", f"{perm.loc[name, 'std']:.4f}"]
                  if perm is not None and name in perm.index else ["–", "–"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def column_reports(member: str, title: str, imp: Importance, roles: dict[str, str] | None = None) -> dict[str, Any]:
    """What a kind with input columns returns from ``UseCase.reports``: the card section, its plot
    and the one-line summary the bake-off report lists."""
    from deepflow import plots

    return {"card/importance.md": card_section(imp, member, roles),
            "plots/importance.png": plots.importance(imp.ranking, imp.permutation, imp.metric, imp.unit,
                                                     f"{title}: what {member} relies on"),
            RELIES_ON: summary(imp, member)}


def summary(imp: Importance, member: str) -> str:
    return relies_on(imp.ranking, f"`{member}`", imp.unit, permutation=imp.permutation, metric=imp.metric)


RELIES_ON = "relies_on.md"  # a report's one-sentence summary; the bake-off report lists it per member


def column_importance(predict: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame,
                      background: pd.DataFrame, metric: str, score: Callable[[np.ndarray, pd.DataFrame], float],
                      unit: str, *, shap_rows: int = 200, permutation_rows: int = 5000, repeats: int = 3,
                      seed: int = SEED, permutation: tuple[pd.DataFrame, float] | None = None) -> Importance:
    """Both global measures of a scorer over ``frame`` (the test split); ``score(scores, rows)`` is
    the primary metric. A kind with a faster permutation of its own passes (its table, its base)."""
    ranking = global_columns(predict, frame, background, shap_rows, seed)
    shap_rows = global_rows(len(background.columns), len(background), shap_rows)
    if permutation is None:
        permutation_rows = int(min(permutation_rows, max(MIN_PERMUTATION_ROWS,
                                                         PERMUTATION_EVALS // (len(background.columns) * repeats))))
        rng = np.random.default_rng(seed)
        take = np.sort(rng.choice(len(frame), size=min(permutation_rows, len(frame)), replace=False))
        base = float(score(predict(frame.iloc[take]), frame.iloc[take])) if len(frame) else float("nan")
        table = permutation_importance(predict, frame, list(background.columns), score,
                                       rows=permutation_rows, repeats=repeats, seed=seed)
    else:
        table, base = permutation
    return Importance(ranking, table, metric, unit, base, min(shap_rows, len(frame)),
                      min(permutation_rows, len(frame)), repeats)


def global_tokens(predict_texts: Callable[[list[str]], np.ndarray], texts: Sequence[str], labels: Sequence[str],
                  *, max_evals: int = 100, seed: int = SEED) -> pd.DataFrame:
    """The words a text model decides by, over ``texts`` (a sample of the test split): per predicted
    class and word (lower-cased), the mean contribution to that class's probability and in how
    many texts it appeared; strongest first within each class."""
    rows = []
    for why in tokens(predict_texts, texts, labels, top=10_000, max_evals=max_evals, seed=seed):
        for item in why["contributions"]:
            rows.append({"class": why["target"], "token": item["token"].lower(), "contribution": item["contribution"]})
    frame = pd.DataFrame(rows, columns=["class", "token", "contribution"])
    table = (frame.groupby(["class", "token"], sort=False)["contribution"].agg(["mean", "count"]).reset_index()
             .rename(columns={"mean": "contribution", "count": "texts"}))
    return table.sort_values(["class", "contribution"], ascending=[True, False], kind="stable").reset_index(drop=True)


def token_reports(member: str, title: str, table: pd.DataFrame, explained: int, top: int = 10) -> dict[str, Any]:
    """What the ``text`` kind returns from ``UseCase.reports``: the card section (the words that
    push each class most), its plot and the bake-off report's sentence."""
    import matplotlib.pyplot as plt

    classes = list(dict.fromkeys(table["class"]))
    heads = {c: table[table["class"] == c].head(top) for c in classes}
    said = [f"'{c}' on " + ", ".join(f"`{t}`" for t in h["token"].head(3)) for c, h in heads.items() if len(h)]
    sentence = (f"`{member}` decides " + "; ".join(said) + " (the words that raise the predicted class's "
                f"probability most, over {explained} test texts)." if said
                else f"`{member}`: no word moves its decisions measurably.")
    lines = ["## What the model relies on", "", sentence, "",
             f"Word contributions to the predicted class's probability (Shapley values of the words, a removed word "
             f"being absent; docs/explain.md) over {explained} test texts: per class, the words with the largest mean "
             "contribution and how many of those texts held them.", ""]
    for c, h in heads.items():
        lines += [f"**{c}**", "", "| word | mean contribution | texts |", "|---|---|---|"]
        lines += [f"| {t.replace('|', chr(92) + '|')} | {v:+.4f} | {n} |"
                  for t, v, n in zip(h["token"], h["contribution"], h["texts"], strict=True)]
        lines.append("")
    fig, axes = plt.subplots(1, max(1, len(heads)), figsize=(4.5 * max(1, len(heads)), 0.3 * top + 1.4), squeeze=False)
    for ax, (c, h) in zip(axes[0], heads.items(), strict=False):
        ax.barh(list(h["token"])[::-1], list(h["contribution"])[::-1], color="tab:blue")
        ax.set(xlabel=f"mean contribution to p({c})", title=f"predicted {c}")
    fig.suptitle(f"{title}: what {member} relies on")
    fig.tight_layout()
    return {"card/importance.md": "\n".join(lines), "plots/importance.png": fig, RELIES_ON: sentence}
