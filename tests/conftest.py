"""Shared fixtures: a small simulated fraud dataset and an isolated MLflow store per test."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from deepflow import settings

settings.apply_env_defaults()
# Commands started by tests get a Prefect server of their own that dies with them, never the shared
# background one (tests/test_prefect_server.py asks for that one explicitly and stops it by pid).
os.environ["DEEPFLOW_PREFECT_SERVER"] = "command"
# Per-epoch checkpoints of the commands tests start (a killed one leaves its folder) go to a temporary
# folder of this session, never into the project's .checkpoints/ (tests/test_resume.py sets its own).
if "DEEPFLOW_CHECKPOINT_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["DEEPFLOW_CHECKPOINT_DIR"] = tempfile.mkdtemp(prefix="deepflow-checkpoints-")
    atexit.register(shutil.rmtree, os.environ["DEEPFLOW_CHECKPOINT_DIR"], ignore_errors=True)

# colorama (DVC's logger calls colorama.init(), its ui deinit()/reinit() around tables) keeps the
# sys.stdout of its init() and puts it back later. typer's CliRunner swaps sys.stdout for each
# invoke, so colorama put back an earlier invoke's (closed) stream, the current invoke's stream lost
# its last reference and was closed mid-test: "ValueError: I/O operation on closed file" (CI, under
# pytest-xdist's test order). On Linux colorama's stream swapping does nothing else: off in tests.
import colorama  # noqa: E402

for _swap in ("init", "deinit", "reinit", "just_fix_windows_console"):
    setattr(colorama, _swap, lambda *args, **kwargs: None)

from deepflow.usecases.fraud.prepare import SplitParams, add_features, split  # noqa: E402
from deepflow.usecases.fraud.simulate import SimulationParams, simulate  # noqa: E402

SMALL = SimulationParams(n_customers=400, n_terminals=2000, n_days=60, seed=1,
                         terminals_per_day=1, customers_per_day=1)
SMALL_SPLIT = SplitParams(train_start="2018-05-10")
FAST = ["train.epochs=2", "train.batch_size=512", "model.xgb_trees=20",
        "model.deep_width=32", "model.deep_blocks=4", "promotion.floor=0.05"]


PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_up() -> bool:
    """PostgreSQL on 127.0.0.1:5432 (trust auth) answers; False when there is none or no driver."""
    try:
        import psycopg2

        psycopg2.connect(PG_URL, connect_timeout=3).close()
        return True
    except Exception:  # no driver, no server, refused: not available
        return False


def need_postgres(what: str) -> None:
    """Skip without PostgreSQL; under CI=true fail instead, so a green CI means ``what`` ran."""
    if postgres_up():
        return
    missing = "no PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{missing}: CI runs {what}; .ci/run starts or installs it")
    pytest.skip(missing)


@pytest.fixture(scope="session")
def small_splits() -> dict[str, pd.DataFrame]:
    """~13k transactions over 60 days, split with the handbook's protocol."""
    return split(add_features(simulate(SMALL)), SMALL_SPLIT)


@pytest.fixture(scope="module")
def transactions(tmp_path_factory) -> Path:
    """The same simulated transactions as a file, for the fraud entry's prequential benchmark
    (its fold table is cached beside it: :func:`prequential`)."""
    path = tmp_path_factory.mktemp("transactions") / "transactions.parquet"
    simulate(SMALL).to_parquet(path, index=False)
    return path


def prequential(transactions: Path, tiny: list[str], *more: str) -> list[str]:
    """Overrides pointing the prequential benchmark at ``transactions``, then ``tiny``, then ``more``."""
    return [f"prequential.transactions={transactions}", f"prequential.cache_dir={transactions.parent / 'cache'}",
            *tiny, *more]


@pytest.fixture
def prepared_dir(tmp_path: Path, small_splits) -> Path:
    out = tmp_path / "prepared"
    out.mkdir()
    for name, frame in small_splits.items():
        frame.to_parquet(out / f"{name}.parquet", index=False)
    return out


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SQLite MLflow store + artifacts + reports under tmp_path."""
    root = tmp_path / "mlflow"
    root.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("DEEPFLOW_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.delenv("DEEPFLOW_ARTIFACT_ROOT", raising=False)
    yield root
    import mlflow

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"))


@pytest.fixture
def datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private datasets folder (copies of the shipped entries) that tests may add entries to."""
    from tests.entries import private_datasets

    folder = private_datasets(tmp_path / "datasets")
    monkeypatch.setenv("DEEPFLOW_DATASETS_DIR", str(folder))
    return folder


@pytest.fixture
def places(tmp_path: Path, datasets: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Where a bad-input test's entry, data and reports go (tests/faults.py), all under tmp_path."""
    monkeypatch.setenv("DEEPFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEEPFLOW_REPORTS_DIR", str(tmp_path / "reports"))
    return {"datasets": datasets, "data": tmp_path / "data", "reports": tmp_path / "reports", "in": tmp_path / "in"}


@pytest.fixture
def fast_overrides(prepared_dir: Path) -> list[str]:
    return [f"prepared_dir={prepared_dir}", *FAST]
