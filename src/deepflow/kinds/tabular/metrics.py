"""Fraud metrics, as in the handbook: average precision, ROC-AUC and card precision@k."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def card_precision_at_k(frame: pd.DataFrame, scores: np.ndarray, k: int = 100, *,
                        entity: str = "CUSTOMER_ID", label: str = "TX_FRAUD",
                        time: str = "TX_DATETIME", remove_detected: bool = True) -> float:
    """The handbook's card precision top-k (``card_precision_top_k``, chapter 4.2), exactly.

    Day by day in time order: each card gets its highest score of the day; the ``k`` top cards
    are what investigators check; the day's precision is the number of frauded cards among
    them over ``k`` (not over the number of cards, if fewer). With ``remove_detected``, a
    frauded card found in an earlier day's top ``k`` is blocked and drops out of every later
    day. The result is the mean over days. Ties in score go to the smaller card id.
    """
    per_card = (
        pd.DataFrame({
            "day": frame[time].dt.floor("D").to_numpy(),
            "card": frame[entity].to_numpy(),
            "score": np.asarray(scores, dtype=np.float64),
            "fraud": frame[label].to_numpy(),
        })
        .groupby(["day", "card"], sort=True).max()  # sorted: days in order, cards by id
        .reset_index()
    )
    detected: set = set()
    daily = []
    for _, day in per_card.groupby("day", sort=True):
        if remove_detected and detected:
            day = day[~day["card"].isin(detected)]
        top = day.sort_values("score", ascending=False, kind="stable").head(k)
        hits = top.loc[top["fraud"] == 1, "card"]
        daily.append(len(hits) / k)
        detected.update(hits.tolist())
    return float(np.mean(daily)) if daily else float("nan")


def binary_metrics(frame: pd.DataFrame, scores: np.ndarray, *, k: int = 100, entity: str,
                  label: str, time: str) -> dict[str, float]:
    y = frame[label].to_numpy()
    if y.min() == y.max():
        raise ValueError("evaluation split has a single class; AP and ROC-AUC are undefined")
    return {
        "auprc": float(average_precision_score(y, scores)),
        "roc_auc": float(roc_auc_score(y, scores)),
        f"card_precision_at_{k}": card_precision_at_k(
            frame, scores, k, entity=entity, label=label, time=time
        ),
    }
