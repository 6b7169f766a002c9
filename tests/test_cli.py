"""CLI contract: bad input is one clear line and exit code 2, never a traceback."""

import os

import pytest
from typer.testing import CliRunner

from deepflow.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "weather"], "unknown dataset entry 'weather'"),
        (["validate", "nope"], "unknown dataset entry 'nope'"),
        (["train", "fraud", "train.epochz=3"], "unknown config key 'train.epochz'"),
        (["train", "fraud", "train.epochs=abc"], "train.epochs: expected int"),
        (["run", "fraud", "--set", "lr=1"], "unknown config key 'lr'"),
        (["promote", "weather"], "unknown dataset entry"),
        (["train", "fraud", "candidates=[shallow,transformer]"], "candidates: unknown 'transformer'"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert message in text and "Traceback" not in result.output


def test_validate_reports_missing_data(tmp_path, store) -> None:
    result = runner.invoke(app, ["validate", "fraud", f"prepared_dir={tmp_path}"])
    assert result.exit_code == 1 and "make data" in result.output


@pytest.mark.slow  # several seconds: in the slow layer (CI runs it), the default run stays fast
def test_validate_failure_exits_1_and_names_the_report(prepared_dir, store) -> None:
    import pandas as pd

    train = pd.read_parquet(prepared_dir / "train.parquet")
    train.loc[train.index[0], "TX_AMOUNT"] = -5.0
    train.to_parquet(prepared_dir / "train.parquet")
    result = runner.invoke(app, ["validate", "fraud", f"prepared_dir={prepared_dir}"])
    text = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "TX_AMOUNT" in text and "validation.md" in text


def test_status_on_empty_store(store) -> None:
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0 and "registry" in result.output


def test_promote_without_challenger(store, fast_overrides) -> None:
    result = runner.invoke(app, ["promote", "fraud"])
    assert result.exit_code == 1 and "no @challenger" in result.output


@pytest.mark.parametrize(("flag", "accepted"), [([], False), (["--accept-schema-change"], True)])
def test_promote_passes_accept_schema_change(monkeypatch, flag: list[str], accepted: bool) -> None:
    from deepflow import steps

    calls = []

    def fake_promote(use_case, overrides=(), actor="pipeline", accept_schema_change=False):
        calls.append((use_case, accept_schema_change))
        return {"promoted": True, "challenger": "2", "previous_champion": "1", "champion": "2",
                "reasons": ["schema change accepted"]}

    monkeypatch.setattr(steps, "promote_challenger", fake_promote)
    result = runner.invoke(app, ["promote", "fraud", *flag])
    assert result.exit_code == 0, result.output
    assert calls == [("fraud", accepted)] and "v2 promoted" in result.output


def test_train_shows_progress_lines_and_a_failing_step_in_one_line(monkeypatch, tmp_path) -> None:
    import flows.pipeline
    from deepflow import progress

    def crashing_flow(use_case, overrides, promote_challenger, started_at=None):
        progress.step(use_case, "validate")
        raise RuntimeError("disk on fire")

    monkeypatch.setenv("DEEPFLOW_REPORTS_DIR", str(tmp_path))
    monkeypatch.setattr(flows.pipeline, "train_pipeline", crashing_flow)
    result = runner.invoke(app, ["train", "fraud"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    log = next(tmp_path.glob("logs/deepflow-*.log"))
    assert lines[0] == f"library logs: {log}"
    assert [line.split("] ", 1)[1] for line in lines[1:4]] == [
        "fraud: start: Prefect flow run, MLflow run", "fraud: validate", lines[3].split("] ", 1)[1]]
    assert lines[3].split("] ", 1)[1].startswith("fraud: failed in ")
    assert "fraud pipeline failed in step 'validate': RuntimeError: disk on fire" in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.slow  # several seconds: in the slow layer (CI runs it), the default run stays fast
def test_importing_the_cli_and_flows_changes_no_environment_and_works_from_anywhere(tmp_path) -> None:
    import subprocess
    import sys

    from deepflow import settings

    env = {k: v for k, v in os.environ.items() if k not in settings.QUIET_ENV and k not in (
        "MLFLOW_TRACKING_URI", "PREFECT_HOME", "DVC_SITE_CACHE_DIR", "MPLBACKEND")}
    code = ("import os; before = dict(os.environ); import deepflow.cli, flows.pipeline, flows.score, "
            "flows.prequential; from deepflow import settings; "
            "print(sorted(k for k in (*settings.QUIET_ENV, 'MLFLOW_TRACKING_URI', 'PREFECT_HOME') "
            "if os.environ.get(k) != before.get(k)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
