"""Card precision@k exactly as the handbook defines it (``card_precision_top_k``, chapter 4.2)."""

import numpy as np
import pandas as pd
import pytest

from deepflow.kinds.tabular.metrics import card_precision_at_k

HANDBOOK = {"entity": "CUSTOMER_ID", "label": "TX_FRAUD", "time": "TX_DATETIME"}


def hand_made() -> tuple[pd.DataFrame, np.ndarray]:
    rows = [  # (day, card, score, fraud)
        (1, "A", 0.90, 1), (1, "B", 0.80, 0), (1, "B", 0.10, 0), (1, "C", 0.70, 0), (1, "C", 0.20, 1),
        (2, "A", 0.95, 1), (2, "C", 0.60, 1), (2, "D", 0.50, 0), (2, "E", 0.40, 1),
        (3, "C", 0.99, 1), (3, "B", 0.30, 0), (3, "E", 0.20, 1), (3, "F", 0.10, 0),
    ]
    frame = pd.DataFrame({
        "TX_DATETIME": [pd.Timestamp("2018-08-01") + pd.Timedelta(days=d - 1, hours=i % 20) for i, (d, *_)
                        in enumerate(rows)],
        "CUSTOMER_ID": [r[1] for r in rows],
        "TX_FRAUD": [r[3] for r in rows],
    })
    return frame, np.array([r[2] for r in rows])


def test_card_precision_on_a_hand_made_case() -> None:
    frame, scores = hand_made()
    # k=2. Day 1: per card max score A .9 (fraud), B .8, C .7 (fraud: its .2 transaction) -> top A, B -> 1/2;
    #   A is detected. Day 2: A is blocked; C .6 (fraud), D .5, E .4 -> top C, D -> 1/2; C detected.
    #   Day 3: C is blocked; B .3, E .2 (fraud), F .1 -> top B, E -> 1/2.  Mean 0.5.
    assert card_precision_at_k(frame, scores, k=2, **HANDBOOK) == pytest.approx(0.5)
    # Without the removal of detected cards: day 2 -> A, C = 2/2; day 3 -> C, B = 1/2. Mean 2/3.
    assert card_precision_at_k(frame, scores, k=2, remove_detected=False, **HANDBOOK) == pytest.approx(2 / 3)
    # k larger than the number of cards: still divided by k. Day 1: A, C of A, B, C -> 2/5; day 2: A, C
    #   blocked, E of D, E -> 1/5; day 3: C, E blocked, none of B, F -> 0.
    assert card_precision_at_k(frame, scores, k=5, **HANDBOOK) == pytest.approx((2 / 5 + 1 / 5 + 0) / 3)


def handbook_reference(frame: pd.DataFrame, scores: np.ndarray, k: int) -> float:
    """The handbook's algorithm, step by step: per day, drop detected cards, take each card's max
    prediction and max label, sort by prediction, keep the top k, count frauded cards / k."""
    df = frame.assign(predictions=scores, day=frame["TX_DATETIME"].dt.floor("D"))
    detected: list = []
    daily = []
    for day in sorted(df["day"].unique()):
        d = df[df["day"] == day][["predictions", "CUSTOMER_ID", "TX_FRAUD"]]
        d = d[~d["CUSTOMER_ID"].isin(detected)]
        top = d.groupby("CUSTOMER_ID").max().sort_values("predictions", ascending=False).head(k)
        found = list(top[top["TX_FRAUD"] == 1].index)
        daily.append(len(found) / k)
        detected.extend(found)
    return float(np.mean(daily))


def test_card_precision_matches_the_handbook_algorithm_on_random_days() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    frame = pd.DataFrame({
        "TX_DATETIME": pd.Timestamp("2018-08-01") + pd.to_timedelta(np.sort(rng.integers(0, 7 * 86_400, n)), unit="s"),
        "CUSTOMER_ID": rng.integers(0, 400, n),
        "TX_FRAUD": (rng.random(n) < 0.05).astype(int),
    })
    scores = rng.random(n) + 0.3 * frame["TX_FRAUD"].to_numpy()  # continuous: no ties
    for k in (5, 20, 100):
        expected = handbook_reference(frame, scores, k)
        assert card_precision_at_k(frame, scores, k, **HANDBOOK) == pytest.approx(expected, abs=1e-12)
