"""The card-history builder: no future, no same-second neighbour, padding, split crossing, label delay."""

import numpy as np
import pandas as pd
import pytest
import torch

from deepflow.kinds.tabular import sequences
from deepflow.kinds.tabular.models import SequenceNet, sequence_scalers
from deepflow.usecases.fraud.prepare import FEATURES, SplitParams, add_features, split
from deepflow.usecases.fraud.simulate import SimulationParams, simulate
from tests.conftest import SMALL, SMALL_SPLIT

HOURS = "HOURS_AGO"


def test_history_index_on_a_hand_made_table() -> None:
    # rows:        0    1    2    3    4    5
    card = np.array(["a", "b", "a", "a", "a", "b"])
    time = np.array([10, 11, 20, 20, 50, 60])  # rows 2 and 3: card a, same second
    idx = sequences.history_index(card, time, 3)
    assert idx.tolist() == [
        [-1, -1, -1],  # a@10: no history
        [-1, -1, -1],  # b@11
        [0, -1, -1],   # a@20: only a@10 - never its same-second neighbour
        [0, -1, -1],   # a@20 (the other one): the same
        [3, 2, 0],     # a@50: most recent first
        [1, -1, -1],   # b@60
    ]


def test_history_never_looks_at_the_future_and_is_complete() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    card = rng.integers(0, 50, n)
    time = np.sort(rng.integers(0, 2000, n))  # many same-second pairs
    order = rng.permutation(n)  # the builder must not rely on row order
    card, time = card[order], time[order]
    idx = sequences.history_index(card, time, 4)
    for r in range(n):
        prev = idx[r][idx[r] >= 0]
        assert (card[prev] == card[r]).all() and (time[prev] < time[r]).all()
        assert (np.diff(time[prev]) <= 0).all()  # most recent first
        earlier = np.flatnonzero((card == card[r]) & (time < time[r]))
        assert len(prev) == min(4, len(earlier))  # padding only where the card has no more history
        if len(prev):  # and they are the latest ones
            assert time[prev].min() >= np.sort(time[earlier])[-len(prev)]


def small_table() -> pd.DataFrame:
    return add_features(simulate(SMALL))


def test_history_columns_pad_with_zeros_and_carry_the_previous_features() -> None:
    table = small_table()
    idx = sequences.history_index(table["CUSTOMER_ID"].to_numpy(), table["TX_DATETIME"].to_numpy(), 3)
    rows = np.arange(len(table))
    hist = sequences.history_frame(table, rows, idx, FEATURES)
    assert list(hist.columns) == sequences.columns(FEATURES, 3) and len(hist.columns) == 3 * (len(FEATURES) + 1)
    for k in (1, 2, 3):
        present = idx[:, k - 1] >= 0
        step = hist[[f"PREV{k}_{f}" for f in [*FEATURES, HOURS]]].to_numpy()
        assert (step[~present] == 0).all()  # a missing step is all zeros
        assert (hist[f"PREV{k}_{HOURS}"].to_numpy()[present] > 0).all()  # present <=> HOURS_AGO > 0
        prev = table.iloc[idx[present, k - 1]]
        np.testing.assert_allclose(step[present][:, : len(FEATURES)], prev[FEATURES].to_numpy(np.float32))
        gap = (table["TX_DATETIME"].to_numpy()[present] - prev["TX_DATETIME"].to_numpy()) / np.timedelta64(1, "h")
        np.testing.assert_allclose(hist[f"PREV{k}_{HOURS}"].to_numpy()[present], gap, rtol=1e-5)
    assert (idx[:, 0] < 0).any() and (idx[:, 0] >= 0).any()  # some cards start within the table


def test_split_history_crosses_split_boundaries_but_not_into_the_future(small_splits) -> None:
    train, test = small_splits["train"], small_splits["test"]
    test_start = test["TX_DATETIME"].min().floor("D")
    # test rows see the card's transactions from before the test week (val / train / earlier)
    first = test["TX_DATETIME"] - pd.to_timedelta(test[f"PREV1_{HOURS}"], unit="h")
    assert (first[test[f"PREV1_{HOURS}"] > 0] < test_start).any()
    # a training row's history ends before that row, hence long before the test week
    for k in range(1, SplitParams().history + 1):
        seen = train["TX_DATETIME"] - pd.to_timedelta(train[f"PREV{k}_{HOURS}"], unit="h")
        assert (seen[train[f"PREV{k}_{HOURS}"] > 0] < train["TX_DATETIME"][train[f"PREV{k}_{HOURS}"] > 0]).all()
    label_like = [c for c in train.columns if c.startswith("PREV") and ("FRAUD" in c or "SCENARIO" in c)]
    assert not label_like  # no label of a past transaction is a step feature


def test_rows_features_and_history_ignore_labels_inside_the_delay_and_the_future() -> None:
    """Flip every label a transaction of day D could not know yet (less than 7 days older than it),
    and change every amount after D: the features and history of D's transactions must not move."""
    tx = simulate(SimulationParams(n_customers=300, n_terminals=600, n_days=40, seed=4, terminals_per_day=1,
                                   customers_per_day=1))
    day = pd.Timestamp("2018-04-01") + pd.Timedelta(days=30)
    parts = {"d": tx[(tx["TX_DATETIME"] >= day) & (tx["TX_DATETIME"] < day + pd.Timedelta(days=1))]}

    def rows_of_day(frame: pd.DataFrame) -> pd.DataFrame:
        feats = add_features(frame, delay_days=7)
        return sequences.with_history(feats, {"d": feats.loc[parts["d"].index]}, FEATURES, 5)["d"]

    base = rows_of_day(tx)
    changed = tx.copy()
    recent = changed["TX_DATETIME"] > day + pd.Timedelta(days=1) - pd.Timedelta(days=7)  # undelayed for all of D
    changed.loc[recent, "TX_FRAUD"] = 1 - changed.loc[recent, "TX_FRAUD"]
    later = changed["TX_DATETIME"] >= day + pd.Timedelta(days=1)
    changed.loc[later, "TX_AMOUNT"] *= 3
    after = rows_of_day(changed)
    columns = [*FEATURES, *sequences.columns(FEATURES, 5)]
    pd.testing.assert_frame_equal(base[columns], after[columns])
    # ... while labels older than the delay do move the terminal risk (the test can fail)
    old = changed["TX_DATETIME"] < day - pd.Timedelta(days=8)
    changed.loc[old, "TX_FRAUD"] = 1 - changed.loc[old, "TX_FRAUD"]
    assert not rows_of_day(changed)[columns].equals(base[columns])


def test_prepared_splits_carry_the_default_history(small_splits) -> None:
    expected = sequences.columns(FEATURES, SplitParams().history)
    for frame in small_splits.values():
        assert set(expected) <= set(frame.columns)
    again = split(add_features(simulate(SMALL)), SplitParams(train_start=SMALL_SPLIT.train_start, history=0))
    assert not any(c.startswith("PREV") for c in again["test"].columns)


def test_sequence_net_ignores_padding_and_trains() -> None:
    f, length = len(FEATURES), 4
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, f + length * (f + 1))).astype(np.float32)
    steps = x[:, f:].reshape(64, length, f + 1)
    steps[..., -1] = np.abs(steps[..., -1]) * 10 + 0.1  # hours ago > 0: present
    steps[:32, 2:, :] = 0.0  # the first 32 rows have only 2 previous transactions
    x[:, f:] = steps.reshape(64, -1)
    scaler, step_scaler = sequence_scalers(x, f, length)
    net = SequenceNet(scaler, step_scaler, length, hidden=8, cell="lstm", attention=True, blocks=1).eval()
    out = net(torch.from_numpy(x))
    assert out.shape == (64,) and torch.isfinite(out).all()
    noisy = x.copy()
    pad = noisy[:32, f:].reshape(32, length, f + 1)
    pad[:, 2:, :-1] = rng.normal(size=(32, length - 2, f)) * 100  # garbage in padded steps, HOURS_AGO stays 0
    noisy[:32, f:] = pad.reshape(32, -1)
    torch.testing.assert_close(net(torch.from_numpy(noisy)), out)
    none = x.copy()
    none[:, f:] = 0.0  # no history at all: attention over nothing must stay finite
    assert torch.isfinite(net(torch.from_numpy(none))).all()
    net.train()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(torch.from_numpy(x)), torch.ones(64))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("bad", [0, -1])
def test_no_history_requested_means_no_columns(bad: int) -> None:
    frame = small_table().head(50)
    assert sequences.with_history(frame, {"x": frame}, FEATURES, bad)["x"] is frame
