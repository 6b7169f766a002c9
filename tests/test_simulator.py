import numpy as np
import pandas as pd
import pytest

from deepflow.usecases.fraud.simulate import DAY_S, SimulationParams, simulate
from tests.conftest import SMALL


@pytest.fixture(scope="module")
def tx() -> pd.DataFrame:
    return simulate(SMALL)


def test_seeded_and_reproducible(tx: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(tx, simulate(SMALL))
    other = simulate(SimulationParams(**{**SMALL.__dict__, "seed": 2}))
    assert not tx["TX_AMOUNT"].equals(other["TX_AMOUNT"])


def test_shape_of_the_design(tx: pd.DataFrame) -> None:
    assert tx["TRANSACTION_ID"].is_unique and tx["TX_TIME_SECONDS"].is_monotonic_increasing
    tod = tx["TX_TIME_SECONDS"] % DAY_S
    assert tod.between(1, DAY_S - 1).all()
    assert abs(tod.mean() - DAY_S / 2) < 1500  # N(noon, 20 000 s), truncated symmetrically
    assert (tx["TX_AMOUNT"] >= 0).all()
    assert tx["TX_TIME_DAYS"].between(0, SMALL.n_days - 1).all()
    assert set(tx["TX_FRAUD_SCENARIO"].unique()) == {0, 1, 2, 3}
    assert ((tx["TX_FRAUD"] == 1) == (tx["TX_FRAUD_SCENARIO"] > 0)).all()


def test_scenario_1_labels_every_large_amount(tx: pd.DataFrame) -> None:
    assert (tx.loc[tx["TX_AMOUNT"] > 220, "TX_FRAUD"] == 1).all()


def test_scenario_3_multiplies_amounts(tx: pd.DataFrame) -> None:
    s3 = tx[tx["TX_FRAUD_SCENARIO"] == 3]
    per_customer_mean = tx[tx["TX_FRAUD"] == 0].groupby("CUSTOMER_ID")["TX_AMOUNT"].mean()
    ratio = s3["TX_AMOUNT"].to_numpy() / per_customer_mean.reindex(s3["CUSTOMER_ID"]).to_numpy()
    assert np.nanmedian(ratio) > 3  # x5 of amounts drawn around the customer's mean


def test_terminals_are_within_the_radius() -> None:
    p = SimulationParams(n_customers=50, n_terminals=500, n_days=10, seed=3)
    tx = simulate(p)
    rng = np.random.default_rng(p.seed)  # replay the location draws (first in simulate)
    cust_xy = rng.uniform(0, 100, size=(p.n_customers, 2))
    rng.uniform(5, 100, size=p.n_customers)
    rng.uniform(0, 4, size=p.n_customers)
    term_xy = rng.uniform(0, 100, size=(p.n_terminals, 2))
    d = np.linalg.norm(cust_xy[tx["CUSTOMER_ID"]] - term_xy[tx["TERMINAL_ID"]], axis=1)
    assert (d < p.radius).all()


@pytest.mark.slow
def test_default_size_matches_the_handbook() -> None:
    tx = simulate(SimulationParams())
    assert 1_650_000 < len(tx) < 1_850_000  # handbook: 1,754,155
    assert 0.0070 < tx["TX_FRAUD"].mean() < 0.0100  # handbook: 0.84 %
