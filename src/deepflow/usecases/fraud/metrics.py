"""Fraud metrics, as in the handbook: average precision, ROC-AUC and card precision@k."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def card_precision_at_k(frame: pd.DataFrame, scores: np.ndarray, k: int = 100, *,
                        entity: str = "CUSTOMER_ID", label: str = "TX_FRAUD",
                        time: str = "TX_DATETIME") -> float:
    """Per day, rank cards by their highest score; share of frauded cards in the top ``k``.

    Averaged over days: what a team of investigators checking ``k`` cards a day would find.
    """
    per_card = pd.DataFrame(
        {
            "day": frame[time].dt.floor("D").to_numpy(),
            "card": frame[entity].to_numpy(),
            "score": scores,
            "fraud": frame[label].to_numpy(),
        }
    ).groupby(["day", "card"], sort=False).max()
    daily = [
        g.nlargest(k, "score")["fraud"].sum() / k for _, g in per_card.groupby(level="day")
    ]
    return float(np.mean(daily)) if daily else float("nan")


def fraud_metrics(frame: pd.DataFrame, scores: np.ndarray, *, k: int = 100, entity: str,
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
