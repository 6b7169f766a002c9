"""The prequential protocol: fold dates, fold cuts, history scopes; end to end through the CLI (slow)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepflow import usecase
from deepflow.usecases.fraud import fits, reproduction, search
from deepflow.usecases.fraud import protocol as pq
from tests.conftest import prequential

TINY = [  # small simulated data (2018-04-01 + 60 days), 2 folds, one setting per model, 1 epoch
    "prequential.n_folds=2", "prequential.val_start=2018-04-24", "prequential.test_start=2018-05-08",
    "prequential.grids={logistic_regression: {C: [1]}, random_forest: {max_depth: [5], n_estimators: [10]},"
    " xgboost: {max_depth: [3], n_estimators: [10], learning_rate: [0.3], max_bin: [256]}}",
    "prequential.search.max_trials=1", "prequential.search.max_epochs=1", "prequential.ae_epochs=1",
    "prequential.threads=1", "train.batch_size=512",
]


def tiny(transactions: Path, *more: str) -> list[str]:
    return prequential(transactions, TINY, *more)


def test_default_folds_are_the_handbooks() -> None:
    cfg = usecase.get("fraud").cfg
    assert [f.train_start for f in pq.folds(cfg, "val")] == ["2018-07-11", "2018-07-04", "2018-06-27", "2018-06-20"]
    assert [f.train_start for f in pq.folds(cfg, "test")] == ["2018-08-15", "2018-08-08", "2018-08-01", "2018-07-25"]
    assert pq.fold_end(cfg, pq.folds(cfg, "test")[0]) == pd.Timestamp("2018-09-05")  # 7 + 7 + 7 days later


def test_fold_cut_trains_a_week_skips_the_delay_and_drops_known_cards(transactions: Path) -> None:
    cfg = usecase.get("fraud", tiny(transactions)).cfg
    table = pq.build_table(cfg)
    for fold in pq.folds(cfg, "val") + pq.folds(cfg, "test"):
        train, assess = pq.cut(cfg, table, fold)
        start = pd.Timestamp(fold.train_start)
        assert train["TX_DATETIME"].min().floor("D") == start
        assert train["TX_DATETIME"].max() < start + pd.Timedelta(days=7)
        assert assess["TX_DATETIME"].min() >= start + pd.Timedelta(days=14)
        assert assess["TX_DATETIME"].max() < start + pd.Timedelta(days=21)
        known = set(train.loc[train["TX_FRAUD"] == 1, "CUSTOMER_ID"])
        assert known and not known & set(assess["CUSTOMER_ID"])
    fold = pq.folds(cfg, "test")[0]
    _, assess = pq.cut(cfg, table, fold)
    full = pq.with_history(cfg, table, assess, 3, "full")
    inside = pq.with_history(cfg, table, assess, 3, "split")
    start = pd.Timestamp(fold.train_start) + pd.Timedelta(days=14)
    reach = lambda f: f["TX_DATETIME"] - pd.to_timedelta(f["PREV3_HOURS_AGO"], unit="h")  # noqa: E731
    has = lambda f: f["PREV3_HOURS_AGO"] > 0  # noqa: E731
    assert (reach(full)[has(full)] < start).any()  # full history reaches before the assessment week
    assert (reach(inside)[has(inside)] >= start).all()  # the handbook's: only inside the week
    assert has(full).mean() > has(inside).mean()


def test_partial_grid_override_keeps_the_other_axes() -> None:
    cfg = usecase.get("fraud", ["prequential.grids.xgboost.max_depth=[3]"]).cfg
    grid = search.grid_of(cfg, "xgboost")
    assert grid["max_depth"] == [3] and grid["n_estimators"] == [25, 50, 100] and len(search.grid_points(grid)) == 6
    assert len(search.grid_points(search.grid_of(cfg, "random_forest"))) == 12


def test_reproduction_table_compares_with_the_book() -> None:
    def result(name: str, ap: float) -> dict:
        folds = [{"auprc": ap - 0.01, "roc_auc": 0.87, "card_precision_at_100": 0.3},
                 {"auprc": ap + 0.01, "roc_auc": 0.87, "card_precision_at_100": 0.3}]
        summary = fits.summarise(folds)
        return {"model": name, "base": name, "params": {"C": 1}, "val": summary, "test": summary,
                "search_s": 1.0, "test_s": 1.0, "trials": 4, "pruned": 0}

    results = {"logistic_regression": result("logistic_regression", 0.60),
               "xgboost": result("xgboost", 0.64), "sequence": result("sequence", 0.71)}
    rows = {r["book"]: r for r in reproduction.reproduction_rows(results)}
    assert rows["logistic_regression"]["within"] and rows["logistic_regression"]["diff"] == pytest.approx(-0.023)
    assert not rows["xgboost"]["within"] and rows["ffn"]["ours"] is None
    text = reproduction.markdown({"run_id": "r", "results": list(results.values()), "folds": {}, "n_folds": 2,
                                  "timings": {"wall": 60.0}})
    assert "| XGBoost | 0.640 ± 0.010 | 0.687 | -0.047 | **no** |" in text
    assert "1 of 2 **not met**" in text and "`sequence`, AP 0.710 ± 0.010: goal AP ≥ 0.70 **met**" in text
    assert np.isclose(fits.summarise(results["sequence"]["test"]["folds"])["std"]["auprc"], 0.01)


@pytest.mark.slow
def test_deepflow_run_fraud_prequential_end_to_end(store, transactions: Path) -> None:
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from deepflow import settings, tracking
    from deepflow.cli import app

    args = ["run", "fraud", "-s", "protocol=prequential"]
    for item in tiny(transactions):
        args += ["-s", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "nothing registered" in text and "random_forest" in text and "sequence" in text

    client = MlflowClient(settings.tracking_uri())
    exp = client.get_experiment_by_name("fraud").experiment_id
    parent = client.search_runs([exp], "tags.`deepflow.kind` = 'prequential'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    parent_id = parent[0].info.run_id
    models = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'")
    names = {r.data.tags["deepflow.member"] for r in models}
    assert names == {"logistic_regression", "random_forest", "xgboost", "ffn", "sequence", "sequence_in_split",
                     "autoencoder", "isolation_forest", "logistic_regression+ae_error", "xgboost+ae_error"}
    seq = next(r for r in models if r.data.tags["deepflow.member"] == "sequence")
    assert {"test/auprc", "test/auprc_std", "val/auprc", "test/auprc_fold1"} <= set(seq.data.metrics)
    trials = client.search_runs([exp], f"tags.mlflow.parentRunId = '{seq.info.run_id}'")
    assert len(trials) == 1 and trials[0].data.tags["deepflow.kind"] == "search-trial"
    assert "val/auprc" in trials[0].data.metrics and "seq_length" in trials[0].data.params
    rf = next(r for r in models if r.data.tags["deepflow.member"] == "random_forest")
    assert len(client.search_runs([exp], f"tags.mlflow.parentRunId = '{rf.info.run_id}'")) == 1  # one grid point
    artifacts = {a.path for a in client.list_artifacts(parent_id, "prequential")}
    assert {"prequential/report.md", "prequential/report.html", "prequential/prequential_ap.png"} <= artifacts
    report = (settings.reports_dir() / "fraud" / "prequential" / "report.md").read_text()
    assert "The handbook's table, reproduced" in report and "Bake-off on the test folds" in report
    assert tracking.version_by_alias("fraud", tracking.CHAMPION) is None  # the benchmark registers nothing
    assert not tracking.registered_models()
