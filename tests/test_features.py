import numpy as np
import pandas as pd

from deepflow.usecases.fraud.prepare import DAY_S, add_features, rolling_sum


def test_rolling_sum_matches_pandas_time_rolling() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    df = pd.DataFrame({
        "g": rng.integers(0, 30, n),
        "t": np.sort(rng.integers(0, 40 * DAY_S, n)),
        "v": rng.uniform(0, 10, n),
    })
    ours = rolling_sum(df["g"].to_numpy(), df["t"].to_numpy(), df["v"].to_numpy(), 7 * DAY_S)
    df["dt"] = pd.to_datetime(df["t"], unit="s")
    ref = df.groupby("g", group_keys=False).apply(
        lambda g: g.rolling("7D", on="dt")["v"].sum(), include_groups=False
    )
    np.testing.assert_allclose(ours, ref.sort_index().to_numpy())


def test_terminal_risk_uses_only_delayed_labels(small_splits) -> None:
    """A fraud inside the 7-day delay must not change today's terminal risk."""
    base = pd.DataFrame({
        "TRANSACTION_ID": range(4),
        "TX_DATETIME": pd.to_datetime(["2018-01-01", "2018-01-05", "2018-01-09", "2018-01-10"]),
        "CUSTOMER_ID": [1, 2, 3, 4],
        "TERMINAL_ID": [7, 7, 7, 7],
        "TX_AMOUNT": [10.0, 20.0, 30.0, 40.0],
        "TX_FRAUD": [1, 1, 0, 0],
    })
    base["TX_TIME_SECONDS"] = (base["TX_DATETIME"] - pd.Timestamp("2018-01-01")).dt.total_seconds().astype(int)
    f = add_features(base, delay_days=7)
    # On Jan 9 only the Jan 1 transaction is older than the 7-day delay -> risk 1 over 1 tx.
    assert f.loc[2, "TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 1
    assert f.loc[2, "TERMINAL_ID_RISK_7DAY_WINDOW"] == 1.0
    # Jan 1 itself has no delayed history at all.
    assert f.loc[0, "TERMINAL_ID_NB_TX_30DAY_WINDOW"] == 0 and f.loc[0, "TERMINAL_ID_RISK_30DAY_WINDOW"] == 0
    assert f.loc[3, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1


def test_split_is_time_ordered_and_drops_known_compromised_cards(small_splits) -> None:
    train, val, test = small_splits["train"], small_splits["val"], small_splits["test"]
    assert train["TX_DATETIME"].max() < val["TX_DATETIME"].min()
    assert val["TX_DATETIME"].max() < test["TX_DATETIME"].min()
    known = set(train.loc[train["TX_FRAUD"] == 1, "CUSTOMER_ID"])
    assert known and not known & set(test["CUSTOMER_ID"])
    assert (test["TX_DATETIME"].dt.normalize().nunique(), train["TX_DATETIME"].dt.normalize().nunique()) == (7, 7)
