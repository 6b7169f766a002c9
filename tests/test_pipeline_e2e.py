"""The Prefect flow end to end on a small sample, into a temporary MLflow store."""

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from deepflow import ledger, settings, tracking
from deepflow.validation import ValidationFailed
from flows.pipeline import train_pipeline


def registry_state(client: MlflowClient) -> tuple[list[str], str | None, str | None]:
    versions = sorted(v.version for v in client.search_model_versions("name='fraud'"))
    champ = tracking.version_by_alias("fraud", "champion")
    chall = tracking.version_by_alias("fraud", "challenger")
    return ([str(v) for v in versions], champ and str(champ.version), chall and str(chall.version))


@pytest.mark.slow  # two full pipeline runs (~20-30 s): CI runs it
def test_lifecycle_register_promote_and_fail_closed(store, prepared_dir, fast_overrides) -> None:
    client = MlflowClient(settings.tracking_uri())

    # 1. First run: the best candidate becomes v1, @challenger and (no champion yet) @champion.
    summary = train_pipeline("fraud", fast_overrides)
    assert registry_state(client) == (["1"], "1", "1")
    assert {m["member"] for m in summary["members"]} == {
        "shallow", "deep", "autoencoder", "sequence", "logistic_regression", "xgboost"}
    v1 = client.get_model_version("fraud", "1")
    for tag in ("deepflow.data_version", "deepflow.git_commit", "deepflow.validation",
                "deepflow.flow_run_id", "deepflow.member", "deepflow.decision", "test/auprc"):
        assert v1.tags.get(tag), tag
    assert v1.tags["deepflow.validation"].startswith("passed")
    assert v1.tags["deepflow.flow_run_id"] == summary["flow_run_id"] != "none"
    assert summary["promotion"]["promoted"] and summary["registered"]["member"] in {
        "shallow", "deep", "autoencoder", "sequence"}

    # Each member is its own run nested under the pipeline run, with per-epoch metrics and plots.
    children = client.search_runs([client.get_experiment_by_name("fraud").experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary['run_id']}'")
    assert len(children) == 6
    shallow = next(r for r in children if r.data.tags["deepflow.member"] == "shallow")
    history = client.get_metric_history(shallow.info.run_id, "val/auprc")
    assert {0, 1} <= {m.step for m in history}  # one point per epoch (epochs=2), then the final
    artifacts = {a.path for a in client.list_artifacts(shallow.info.run_id, "plots")}
    assert {"plots/pr_curve.png", "plots/confusion_matrix.png"} <= artifacts
    scorer = tracking.load_scorer("models:/fraud@champion")
    test = pd.read_parquet(prepared_dir / "test.parquet")
    assert scorer.predict(test.head(3)).shape == (3,)

    # 2. Same data, same seed: v2 ties the champion on the same test split, so it is not promoted.
    second = train_pipeline("fraud", fast_overrides)
    assert registry_state(client) == (["1", "2"], "1", "2")
    assert not second["promotion"]["promoted"]
    assert client.get_model_version("fraud", "2").tags["deepflow.decision"] == "rejected"

    from typer.testing import CliRunner

    from deepflow.cli import app

    cli = CliRunner()
    shown = cli.invoke(app, ["status"])
    assert shown.exit_code == 0, shown.output
    assert "champion" in shown.output and "challenger" in shown.output and "auprc" in shown.output

    # Birth certificate: complete, printed by `deepflow show`.
    cert = json.loads(cli.invoke(app, ["show", "fraud@champion"]).stdout)
    assert cert["version"] == "1" and cert["data"]["md5"] == summary["data_version"]
    for key in ("code", "validation", "orchestration", "config", "config_hash", "lock_hash", "seed",
                "versions", "hardware", "training_seconds"):
        assert cert[key] not in (None, "", {}), key
    assert cert["orchestration"]["flow_run_id"] == summary["flow_run_id"]
    assert json.loads(cli.invoke(app, ["show", "fraud:2"]).stdout)["version"] == "2"
    assert v1.tags["cert.lock_hash"] == cert["lock_hash"]

    # Decision evidence and the bake-off report are logged; the ledger has every move.
    v2 = client.get_model_version("fraud", "2")
    assert "gain over v1" in v2.tags["deepflow.decision_reasons"]
    decision = json.loads(Path(mlflow.artifacts.download_artifacts(
        v2.tags["deepflow.decision_artifact"], tracking_uri=settings.tracking_uri())).read_text())
    assert decision["promote"] is False and decision["evidence"]["gain"]["low"] == 0.0
    bakeoff = {a.path for a in client.list_artifacts(summary["run_id"], "bakeoff")}
    assert bakeoff == {"bakeoff/report.md", "bakeoff/report.html", "bakeoff/quality_vs_latency.png"}
    assert "## Verdict" in Path(summary["bakeoff"]["md"]).read_text()
    moves = [(m.alias, m.from_version, m.to_version) for m in ledger.history("fraud")]
    assert moves == [("challenger", None, "1"), ("champion", None, "1"), ("challenger", "1", "2")]

    # Rollback round trip through the CLI; v2 failed its gates, so only --force puts it in production.
    refused = cli.invoke(app, ["rollback", "fraud", "--to", "2", "--reason", "try v2"])
    assert refused.exit_code == 1 and "v2 failed its promotion gates" in " ".join(refused.output.split())
    assert cli.invoke(app, ["rollback", "fraud", "--to", "2", "--force", "--reason", "try v2"]).exit_code == 0
    back = cli.invoke(app, ["rollback", "fraud", "--reason", "v2 misbehaves"])
    assert back.exit_code == 0 and "v2 -> v1" in back.output
    hist = cli.invoke(app, ["history", "fraud"])
    assert hist.exit_code == 0 and "v2 misbehaves" in " ".join(hist.output.split())
    assert registry_state(client) == (["1", "2"], "1", "2")

    # 3. Bad data: validation stops the run before training; the registry is untouched.
    train = pd.read_parquet(prepared_dir / "train.parquet")
    pd.concat([train, train.head(5)]).to_parquet(prepared_dir / "train.parquet")  # duplicate ids
    with pytest.raises(ValidationFailed, match="expect_column_values_to_be_unique"):
        train_pipeline("fraud", fast_overrides)
    assert registry_state(client) == (["1", "2"], "1", "2")
    train.to_parquet(prepared_dir / "train.parquet")

    # 4. A crashed training (here: an impossible batch size): no new version, @champion stays
    #    where it was, and the pipeline run is marked FAILED.
    with pytest.raises(ValueError, match="batch_size"):
        train_pipeline("fraud", [*fast_overrides, "train.batch_size=0"])
    assert registry_state(client) == (["1", "2"], "1", "2")
    last = client.search_runs([client.get_experiment_by_name("fraud").experiment_id],
                              "tags.`deepflow.kind` = 'pipeline'", order_by=["start_time DESC"])[0]
    assert last.info.status == "FAILED"


@pytest.mark.slow
def test_paysim_schema_goes_through_the_same_pipeline(store, tmp_path) -> None:
    from deepflow.usecases.fraud import paysim

    out = tmp_path / "paysim"
    out.mkdir()
    raw = pd.read_csv(settings.PROJECT_ROOT / "data/external/paysim/paysim_sample.csv")
    for name, frame in paysim.prepare(raw).items():
        frame.to_parquet(out / f"{name}.parquet", index=False)
    summary = train_pipeline("paysim", [f"prepared_dir={out}", "train.epochs=2"])
    assert summary["promotion"]["promoted"]
    assert tracking.version_by_alias("paysim", "champion") is not None
    best = max(m["test"]["auprc"] for m in summary["members"])
    assert best > 0.9  # PaySim is nearly separable: a schema check, not a benchmark
