"""Binary metrics of the ``tabular`` kind: average precision, ROC-AUC and entity precision@k.

Entity precision@k is "card precision top-k" of Le Borgne et al.'s handbook (chapter 4.2), kept
under its name there (``card_precision_at_k``, logged as ``card_precision_at_<k>``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def card_precision_at_k(frame: pd.DataFrame, scores: np.ndarray, k: int = 100, *,
                        entity: str, label: str, time: str, remove_detected: bool = True) -> float:
    """Entity precision@k: the handbook's ``card_precision_top_k`` (chapter 4.2), exactly.

    Day by day in time order: each entity (the ``entity`` column) gets its highest score of the
    day; the ``k`` top entities are what reviewers check; the day's precision is the number of
    positive entities (a row labelled 1 that day) among them over ``k`` (not over the number of
    entities, if fewer). With ``remove_detected``, a positive entity found in an earlier day's
    top ``k`` drops out of every later day. The result is the mean over days. Ties in score go
    to the smaller entity id.
    """
    per_entity = (
        pd.DataFrame({
            "day": frame[time].dt.floor("D").to_numpy(),
            "entity": frame[entity].to_numpy(),
            "score": np.asarray(scores, dtype=np.float64),
            "positive": frame[label].to_numpy(),
        })
        .groupby(["day", "entity"], sort=True).max()  # sorted: days in order, entities by id
        .reset_index()
    )
    detected: set = set()
    daily = []
    for _, day in per_entity.groupby("day", sort=True):
        if remove_detected and detected:
            day = day[~day["entity"].isin(detected)]
        top = day.sort_values("score", ascending=False, kind="stable").head(k)
        hits = top.loc[top["positive"] == 1, "entity"]
        daily.append(len(hits) / k)
        detected.update(hits.tolist())
    return float(np.mean(daily)) if daily else float("nan")


def binary_metrics(frame: pd.DataFrame, scores: np.ndarray, *, k: int = 100, entity: str | None,
                  label: str, time: str | None) -> dict[str, float]:
    """``auprc``, ``roc_auc`` and (with an entity and a time column) ``card_precision_at_<k>`` of
    ``scores`` against ``frame[label]``; a ValueError when the frame holds one class only."""
    y = frame[label].to_numpy()
    if y.min() == y.max():
        raise ValueError("evaluation split has a single class; AP and ROC-AUC are undefined")
    out = {"auprc": float(average_precision_score(y, scores)), "roc_auc": float(roc_auc_score(y, scores))}
    if entity is not None and time is not None:
        out[f"card_precision_at_{k}"] = card_precision_at_k(frame, scores, k, entity=entity, label=label, time=time)
    return out
