import numpy as np
import pandas as pd
import pytest

from deepflow.kinds.tabular.metrics import binary_metrics, card_precision_at_k

HANDBOOK = {"entity": "CUSTOMER_ID", "label": "TX_FRAUD", "time": "TX_DATETIME"}


def frame() -> pd.DataFrame:
    # day 1: cards a (fraud), b, c ; day 2: cards a, d (fraud)
    return pd.DataFrame({
        "TX_DATETIME": pd.to_datetime(["2018-01-01 10:00", "2018-01-01 11:00", "2018-01-01 12:00",
                                       "2018-01-01 13:00", "2018-01-02 10:00", "2018-01-02 11:00"]),
        "CUSTOMER_ID": ["a", "a", "b", "c", "a", "d"],
        "TX_FRAUD": [0, 1, 0, 0, 0, 1],
    })


def test_card_precision_ranks_cards_by_their_max_score() -> None:
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.6])
    # day 1 top-2 cards: a (0.9, fraud), b (0.8) -> 1/2; day 2 top-2: a, d (fraud) -> 1/2
    assert card_precision_at_k(frame(), scores, k=2, **HANDBOOK) == pytest.approx(0.5)
    # k=1: day 1 -> a (fraud) = 1; day 2 -> a was detected on day 1 and is blocked, so d (fraud) = 1
    assert card_precision_at_k(frame(), scores, k=1, **HANDBOOK) == pytest.approx(1.0)
    # without the handbook's removal of detected cards: day 2 -> a (0.7, genuine) = 0
    assert card_precision_at_k(frame(), scores, k=1, remove_detected=False, **HANDBOOK) == pytest.approx(0.5)


def test_binary_metrics_perfect_ranking() -> None:
    m = binary_metrics(frame(), np.array([0, 1, 0, 0, 0, 1.0]), k=1, entity="CUSTOMER_ID",
                      label="TX_FRAUD", time="TX_DATETIME")
    assert m["auprc"] == 1.0 and m["roc_auc"] == 1.0 and m["card_precision_at_1"] == 1.0


def test_single_class_is_an_error() -> None:
    f = frame().assign(TX_FRAUD=0)
    with pytest.raises(ValueError, match="single class"):
        binary_metrics(f, np.zeros(6), entity="CUSTOMER_ID", label="TX_FRAUD", time="TX_DATETIME")
