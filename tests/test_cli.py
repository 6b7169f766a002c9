"""CLI contract: bad input is one clear line and exit code 2, never a traceback."""

import pytest
from typer.testing import CliRunner

from deepflow.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "weather"], "unknown use case 'weather'"),
        (["validate", "nope"], "unknown use case 'nope'"),
        (["train", "fraud", "train.epochz=3"], "unknown config key 'train.epochz'"),
        (["train", "fraud", "train.epochs=abc"], "train.epochs: expected int"),
        (["run", "fraud", "--set", "lr=1"], "unknown config key 'lr'"),
        (["promote", "weather"], "unknown use case"),
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
    assert result.exit_code == 1 and "dvc repro" in result.output


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
