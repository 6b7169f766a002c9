"""Adding datasets without code: a second tabular schema and a three-class text dataset, each one
entry file, driven as a user would (the `deepflow` CLI, the HTTP API) through validate -> train ->
register -> promote -> serve -> batch score -> monitor, while another entry's @champion and
ledger stay exactly where they were."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from typer.testing import CliRunner

from deepflow import ledger, settings, tracking
from deepflow.cli import app
from deepflow.kinds.text.prepare import PrepareParams, prepare
from tests.entries import LOANS_CONFIG, LOANS_FEATURES, TOPICS_CONFIG, loans_splits, write_entry
from tests.nlp_toy import toy_frame, write_toy_csv

runner = CliRunner()


def deepflow(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"deepflow {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.output


def state(name: str) -> tuple[str | None, list]:
    champion = tracking.version_by_alias(name, tracking.CHAMPION)
    return (str(champion.version) if champion else None), [(m.alias, m.to_version) for m in ledger.history(name)]


@pytest.mark.slow
def test_two_new_entries_end_to_end_touch_no_other_entry(store, datasets, prepared_dir, tmp_path) -> None:
    inbox = ["--set", f"monitor.incoming_dir={tmp_path / 'incoming'}"]
    # Another entry with a champion: fraud, on the small simulated sample.
    deepflow("run", "fraud", "--set", f"prepared_dir={prepared_dir}", "--set", "candidates=[shallow]",
             "--set", "baselines=[logistic_regression]", "--set", "train.epochs=2", "--set", "promotion.floor=0")
    fraud_before = state("fraud")
    assert fraud_before[0] == "1"

    # 1. A second tabular schema: prepared splits + one entry file.
    loans_dir = tmp_path / "loans"
    loans_dir.mkdir()
    splits = loans_splits()
    for split, frame in splits.items():
        frame.to_parquet(loans_dir / f"{split}.parquet", index=False)
    write_entry(datasets, "loans", "tabular", {**LOANS_CONFIG, "prepared_dir": str(loans_dir)})
    # 2. A three-class text dataset: a raw CSV through the text kind's prepare step + one entry file.
    topics_dir = tmp_path / "topics"
    prepare(write_toy_csv(tmp_path / "topics.csv"), topics_dir,
            PrepareParams(sep=",", header=True, text_column="text", label_column="label"))
    write_entry(datasets, "topics", "text", {**TOPICS_CONFIG, "prepared_dir": str(topics_dir)})

    for name in ("loans", "topics"):
        assert "validation passed" in deepflow("validate", name)
        ran = deepflow("run", name)
        champion = tracking.version_by_alias(name, tracking.CHAMPION)
        assert champion is not None and str(champion.version) == "1", ran
        assert champion.tags["deepflow.data_version"].startswith("files:")  # its own data, not a DVC hash
        assert champion.tags["deepflow.entry"] == f"{name}.yaml"
        experiment = MlflowClient().get_experiment_by_name(name)
        assert experiment is not None and MlflowClient().search_runs([experiment.experiment_id])
    assert state("fraud") == fraud_before  # nothing moved in another entry
    assert [str(v.version) for v in MlflowClient().search_model_versions("name='fraud'")] == ["1"]

    # 3. Served under their own routes, typed from their own schemas.
    from deepflow.serving import ServeConfig, create_app

    test = splits["test"]
    rows = test[LOANS_FEATURES].head(3).to_dict("records")
    with TestClient(create_app(ServeConfig(reload_interval=0))) as client:
        body = client.post("/v1/loans/predict", json={"rows": rows}).json()
        assert body["model"] == {"name": "loans", "version": "1"}
        assert all(set(p) == {"probability", "defaulted"} for p in body["predictions"]), body
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        assert set(LOANS_FEATURES) <= set(schema["LoansRow"]["properties"])
        texts = {"texts": ["Storm and rain in the forecast today", "Big league match, what a goal"]}
        answer = client.post("/v1/topics/predict", json=texts).json()
        assert [p["label"] for p in answer["predictions"]] == ["weather", "sport"], answer
        assert set(answer["predictions"][0]["probabilities"]) == {"weather", "sport", "money"}
        fraud = client.post("/v1/fraud/predict", json={"rows": pd.read_parquet(prepared_dir / "test.parquet")[
            settings_features()].head(1).to_dict("records")}).json()
        assert set(fraud["predictions"][0]) == {"probability", "fraud"}  # fraud clients see no change

    # 4. Batch scoring of raw files.
    test.to_csv(tmp_path / "loans-new.csv", index=False)
    deepflow("score", "loans", str(tmp_path / "loans-new.csv"), str(tmp_path / "loans-scored.parquet"))
    scored = pd.read_parquet(tmp_path / "loans-scored.parquet")
    assert len(scored) == len(test) and scored["probability"].between(0, 1).all()
    toy_frame(n_per_class=20, seed=9)[["text"]].to_csv(tmp_path / "topics-new.csv", index=False)
    deepflow("score", "topics", str(tmp_path / "topics-new.csv"), str(tmp_path / "topics-scored.parquet"))
    assert len(pd.read_parquet(tmp_path / "topics-scored.parquet")) == 60

    # 5. Monitoring: new batches from each kind's generic generator, drift-checked against the
    # entry's own training data (no retraining here: nothing drifted enough, or no deployment).
    for name in ("loans", "topics"):
        deepflow("incoming", name, "--rows", "300", "--drift", "0", *inbox)
        report = deepflow("monitor", name, *inbox)
        assert f"{name}: no drift" in report, report
    assert state("fraud") == fraud_before
    assert {state("loans")[0], state("topics")[0]} == {"1"}


def settings_features() -> list[str]:
    from deepflow import usecase

    return list(usecase.get("fraud").cfg.features)


def test_private_datasets_folder_is_used(datasets: Path) -> None:
    assert settings.datasets_dir() == datasets
