"""Global importance: what a model relies on overall, for its model card and the bake-off report.

Built on :mod:`deepflow.explain` (kind-independent, raw inputs):

* input columns (``tabular``, ``table``): :func:`column_importance`, the mean absolute Shapley
  value of each input over a seeded sample of test rows (:func:`global_columns`, bounded by
  :data:`GLOBAL_EVALS` model evaluations) and the permutation importance of the primary metric
  (:func:`permutation_importance`); :func:`column_reports` turns them into the card section
  (``card/importance.md``), a plot and one summary sentence (:data:`RELIES_ON`);
* words (``text``): :func:`global_tokens` and :func:`token_reports`.

The detection kind writes its own section (its boxes are its explanation; ``kinds/detection/figures.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from deepflow.explain import SEED, background_sample, columns, tokens

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
                           rows: int = 2000, repeats: int = 3, seed: int = SEED) -> tuple[pd.DataFrame, float]:
    """Per raw column: the mean (and spread over ``repeats`` shuffles) drop of ``metric(scores, rows)``
    when that column's values are shuffled across a seeded sample of ``rows`` rows, most important
    first; and the metric on that sample, nothing shuffled. A raw column's derived model inputs (a
    date's parts, a missing-value indicator, a category code) move together."""
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
    return table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True), float(base)


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
                      seed: int = SEED) -> Importance:
    """Both global measures of a scorer over ``frame`` (the test split); ``score(scores, rows)`` is
    the primary metric."""
    ranking = global_columns(predict, frame, background, shap_rows, seed)
    shap_rows = global_rows(len(background.columns), len(background), shap_rows)
    permutation_rows = int(min(permutation_rows, max(MIN_PERMUTATION_ROWS,
                                                     PERMUTATION_EVALS // (len(background.columns) * repeats))))
    table, base = permutation_importance(predict, frame, list(background.columns), score,
                                         rows=permutation_rows, repeats=repeats, seed=seed)
    return Importance(ranking, table, metric, unit, base, min(shap_rows, len(frame)),
                      min(permutation_rows, len(frame)), repeats)


def global_tokens(predict_texts: Callable[[list[str]], np.ndarray], texts: Sequence[str], labels: Sequence[str],
                  *, max_evals: int = 100, seed: int = SEED) -> pd.DataFrame:
    """The words a text model decides by, over ``texts`` (a sample of the test split): per predicted
    class and word (lower-cased), the mean contribution to that class's probability and in how
    many texts it appeared; within each class, largest total contribution first."""
    rows = []
    for why in tokens(predict_texts, texts, labels, top=10_000, max_evals=max_evals, seed=seed):
        for item in why["contributions"]:
            rows.append({"class": why["target"], "token": item["token"].lower(), "contribution": item["contribution"]})
    frame = pd.DataFrame(rows, columns=["class", "token", "contribution"])
    table = (frame.groupby(["class", "token"], sort=False)["contribution"].agg(["sum", "mean", "count"]).reset_index()
             .rename(columns={"sum": "total", "mean": "contribution", "count": "texts"}))
    # by the total over the texts: a word that helps in many texts ranks above one rare word
    return table.sort_values(["class", "total"], ascending=[True, False], kind="stable").reset_index(drop=True)


def token_reports(member: str, title: str, table: pd.DataFrame, explained: int, top: int = 10) -> dict[str, Any]:
    """What the ``text`` kind returns from ``UseCase.reports``: the card section (the words that
    push each class most), its plot and the bake-off report's sentence."""
    import matplotlib.pyplot as plt

    classes = list(dict.fromkeys(table["class"]))
    heads = {c: table[table["class"] == c].head(top) for c in classes}
    said = [f"'{c}' on " + ", ".join(f"`{t}`" for t in h["token"].head(3)) for c, h in heads.items() if len(h)]
    sentence = (f"`{member}` decides " + "; ".join(said) + " (the words that raise the predicted class's "
                f"probability most in total, over {explained} test texts)." if said
                else f"`{member}`: no word moves its decisions measurably.")
    lines = ["## What the model relies on", "", sentence, "",
             f"Word contributions to the predicted class's probability (Shapley values of the words, a removed word "
             f"being absent; docs/explain.md) over {explained} test texts: per class, the words with the largest total "
             "contribution over those texts (a word that helps in many texts ranks above a rare one), their mean "
             "and how many of the texts held them.", ""]
    for c, h in heads.items():
        lines += [f"**{c}**", "", "| word | total contribution | mean | texts |", "|---|---|---|---|"]
        lines += [f"| {t.replace('|', chr(92) + '|')} | {total:+.4f} | {v:+.4f} | {n} |"
                  for t, total, v, n in zip(h["token"], h["total"], h["contribution"], h["texts"], strict=True)]
        lines.append("")
    fig, axes = plt.subplots(1, max(1, len(heads)), figsize=(4.5 * max(1, len(heads)), 0.3 * top + 1.4), squeeze=False)
    for ax, (c, h) in zip(axes[0], heads.items(), strict=False):
        ax.barh(list(h["token"])[::-1], list(h["total"])[::-1], color="tab:blue")
        ax.set(xlabel=f"total contribution to p({c})", title=f"predicted {c}")
    fig.suptitle(f"{title}: what {member} relies on")
    fig.tight_layout()
    return {"card/importance.md": "\n".join(lines), "plots/importance.png": fig, RELIES_ON: sentence}
