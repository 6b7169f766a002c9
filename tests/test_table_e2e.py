"""Bring your own table, as a user would, with no Python: a raw CSV -> `deepflow new` -> `deepflow run`
-> a served prediction from raw values (strings, dates, nulls) -> batch scoring -> monitoring, for
each task the table kind infers (binary, multiclass, regression). Then bad data for the same entry:
validation fails, nothing is registered and @champion stays where it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from typer.testing import CliRunner

from deepflow import tracking, usecase
from deepflow.cli import app
from tests.tables import customers, write_csv

runner = CliRunner()
FAST = ["--set", "train.epochs=6", "--set", "model.hgb_max_iter=60"]
RAW_ROW = {"tenure_months": 5, "monthly_charges": None, "region": "west", "contract": "monthly",
           "paperless": "yes", "senior": True, "signup_date": "2025-06-01"}


def deepflow(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, f"deepflow {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.output


@pytest.fixture
def project(store, datasets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEEPFLOW_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize(("name", "target", "task", "answer"), [
    ("churn", "churned", "binary", {"label", "probability", "probabilities"}),
    ("plans", "plan_next", "multiclass", {"label", "probabilities"}),
    ("spend", "spend_next", "regression", {"value"}),
])
def test_raw_csv_to_served_prediction(project: Path, name: str, target: str, task: str, answer: set) -> None:
    others = [c for c in ("churned", "plan_next", "spend_next") if c != target]
    csv = write_csv(customers(900).drop(columns=others), project / "upload" / f"{name}.csv")
    printed = deepflow("new", name, "--data", str(csv), "--target", target, "--no-dvc", "--budget", "120s")
    assert task in printed and target in printed
    cfg = usecase.get(name).cfg
    assert cfg.task == task
    assert cfg.columns["customer_id"].role == "id" and cfg.columns["country"].role == "constant"
    assert cfg.columns["region"].role == "categorical" and cfg.columns["signup_date"].role == "datetime"

    ran = deepflow("run", name, *FAST)
    champion = tracking.version_by_alias(name, tracking.CHAMPION)
    assert champion is not None and str(champion.version) == "1", ran
    assert champion.tags["deepflow.entry"] == f"{name}.yaml"

    from deepflow.serving import ServeConfig, create_app

    unseen = {**RAW_ROW, "region": "atlantis", "signup_date": "2025-07-15T10:00:00"}
    with TestClient(create_app(ServeConfig(reload_interval=0))) as client:
        reply = client.post(f"/v1/{name}/predict", json={"rows": [RAW_ROW, unseen]})
        assert reply.status_code == 200, reply.text
        predictions = reply.json()["predictions"]
        assert len(predictions) == 2 and all(set(p) == answer for p in predictions), predictions
        if task != "regression":
            assert {p["label"] for p in predictions} <= set(cfg.classes)
        else:
            assert all(np.isfinite(p["value"]) for p in predictions)
        # explained in the fields sent: a category as the category, a date as the date
        explained = client.post(f"/v1/{name}/predict?explain=true&top=20", json={"rows": [RAW_ROW, unseen]})
        assert explained.status_code == 200, explained.text
        for p, sent in zip(explained.json()["predictions"], [RAW_ROW, unseen], strict=True):
            why = p.pop("explanation")
            assert set(p) == answer and {c["feature"] for c in why["contributions"]} == set(cfg.features())
            assert {c["feature"]: c["value"] for c in why["contributions"]}["region"] == sent["region"]
            score = {"binary": p.get("probability"), "regression": p.get("value")}.get(task) or max(
                p["probabilities"].values())
            total = why["baseline"] + sum(c["contribution"] for c in why["contributions"]) + why["rest"]
            assert total == pytest.approx(score, abs=1e-6) and why["score"] == pytest.approx(score, abs=1e-6)
        typo = client.post(f"/v1/{name}/predict", json={"rows": [{**RAW_ROW, "tenure_monhts": 3}]})
        assert typo.status_code == 422, typo.text
        properties = client.get("/openapi.json").json()["components"]["schemas"]
        assert any(set(cfg.features()) <= set(s.get("properties", {})) for s in properties.values())

    new_rows = customers(200, seed=11).drop(columns=[target, *others])
    write_csv(new_rows, project / "new.csv")
    deepflow("score", name, str(project / "new.csv"), str(project / "scored.parquet"))
    scored = pd.read_parquet(project / "scored.parquet")
    assert len(scored) == 200
    deepflow("score", name, str(project / "new.csv"), str(project / "explained.parquet"), "--explain", "--top", "2")
    explained = pd.read_parquet(project / "explained.parquet")
    assert len(explained) == 200 and all(len(json.loads(e)["contributions"]) == 2 for e in explained["explanation"])


@pytest.mark.slow
def test_bad_data_registers_nothing(project: Path) -> None:
    frame = customers(700).drop(columns=["plan_next", "spend_next"])
    csv = write_csv(frame, project / "upload" / "churn.csv")
    deepflow("new", "churn", "--data", str(csv), "--target", "churned", "--no-dvc", "--budget", "90s")
    deepflow("run", "churn", *FAST)
    before = [v.version for v in MlflowClient().search_model_versions("name='churn'")]

    # The next month's file has an infinite charge and a broken label: the contract stops the run.
    frame.loc[3, "monthly_charges"] = np.inf
    uc = usecase.get("churn")
    write_csv(frame, usecase.project_path(uc.cfg.source))  # the tracked copy `new` made
    from deepflow.kinds.table.prepare import prepare

    prepare(uc.cfg, uc.prepared_dir)
    failed = deepflow("run", "churn", *FAST, code=1)
    assert "monthly_charges" in failed
    assert [v.version for v in MlflowClient().search_model_versions("name='churn'")] == before
    assert str(tracking.version_by_alias("churn", tracking.CHAMPION).version) == "1"
