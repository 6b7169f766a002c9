"""The lasting bad-input suite for the built-in tabular entries (fraud; paysim shares its contract).

Each case breaks a copy of the prepared data the way a real source goes wrong, with a champion in
place; validation must fail with a message naming what and where (column, rows or counts), and
afterwards no version is registered and ``@champion`` has not moved. One case goes through the
real ``deepflow run`` command. (Issue 19; the cases and results are in docs/reliability.md.)
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from deepflow import ledger, steps, tracking
from deepflow.validation import ValidationFailed

pytestmark = pytest.mark.slow  # ~5-10 s of Great Expectations per validation


def _set(split: str, column: str, rows: list[int], value):
    def change(splits):
        frame = splits[split]
        if isinstance(value, str):  # a text column in parquet: the number column was read as text
            frame[column] = frame[column].astype(str)
        frame.loc[rows, column] = value
    return change


def _drop_column(splits):
    for frame in splits.values():
        frame.drop(columns=["TERMINAL_ID_RISK_7DAY_WINDOW"], inplace=True)


def _copy_rows(splits):
    train = splits["train"]
    copies = train.head(len(train) // 4).assign(TRANSACTION_ID=lambda f: f["TRANSACTION_ID"] + 10**9)
    splits["train"] = pd.concat([train, copies], ignore_index=True)


def _repeat_id(splits):
    splits["test"].loc[1, "TRANSACTION_ID"] = splits["train"]["TRANSACTION_ID"].iloc[0]


def _cut(splits):
    for name in splits:
        splits[name] = splits[name].head(int(len(splits[name]) * 0.6))


def _empty_test(splits):
    splits["test"] = splits["test"].head(0)


def _no_fraud_in_val(splits):
    splits["val"]["TX_FRAUD"] = 0


def _all_fraud(splits):
    splits["train"]["TX_FRAUD"] = 1


def _test_before_train(splits):
    splits["test"]["TX_DATETIME"] = splits["train"]["TX_DATETIME"].min() - pd.Timedelta(days=1)


def _both(*changes):
    def change(splits):
        for c in changes:
            c(splits)
    return change


# (case, how the data breaks, the words each failure line must hold). Cases that break different
# columns share one validation (its report lists every failure), since each costs seconds of GX.
CASES = [
    ("+inf amount", _set("train", "TX_AMOUNT", [5, 9], np.inf), ["'TX_AMOUNT'", "no ±inf", "train:5"]),
    ("-inf risk", _set("val", "TERMINAL_ID_RISK_1DAY_WINDOW", [2], -np.inf),
     ["'TERMINAL_ID_RISK_1DAY_WINDOW'", "no ±inf", "val:2"]),
    ("missing value", _set("train", "CUSTOMER_ID_NB_TX_1DAY_WINDOW", [3], np.nan),
     ["'CUSTOMER_ID_NB_TX_1DAY_WINDOW'", "not_be_null", "train:3"]),
    ("unknown label", _set("train", "TX_FRAUD", [0, 1], 2), ["'TX_FRAUD'", "in_set", "train:0"]),
    ("negative amount", _set("test", "CUSTOMER_ID_NB_TX_7DAY_WINDOW", [7], -3.0),
     ["'CUSTOMER_ID_NB_TX_7DAY_WINDOW'", "between", "test:7"]),
    ("id in two rows", _repeat_id, ["'TRANSACTION_ID'", "unique"]),
    ("text in a number column, one value 5 MB", _set("train", "TX_AMOUNT", [0], "9" * 5_000_000),
     ["'TX_AMOUNT'", "type", "characters)"]),
    ("missing column", _drop_column, ["TERMINAL_ID_RISK_7DAY_WINDOW", "missing"]),
    ("every row labelled fraud", _all_fraud, ["'TX_FRAUD'", "mean"]),
    ("no positive in a split", _no_fraud_in_val, ["'positives'"]),
    ("splits out of time order", _test_before_train, ["t_min"]),
    ("rows copied with new ids", _copy_rows, ["exact copies", "= train:0"]),
    ("source cut at 60 %", _cut, ["rows_vs_champion", "for @champion v1"]),
    ("empty split", _empty_test, ["'rows'"]),
]
# Which cases break the data together, in one validation.
GROUPS = {"row values": CASES[0:6], "a column's type": CASES[6:7], "columns, labels and time": CASES[7:11],
          "copies": CASES[11:12], "cut": CASES[12:13], "empty split": CASES[13:14]}


@pytest.fixture
def champion(store, tmp_path, monkeypatch, prepared_dir) -> str:
    """Version 1, trained (as far as the registry knows) on exactly the unbroken data, is @champion."""
    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", str(tmp_path / "locks"))
    rows = sum(len(pd.read_parquet(p)) for p in prepared_dir.glob("*.parquet"))
    run_id = tracking.start_run("fraud", "dummy")
    version = str(tracking.register("fraud", f"runs:/{run_id}/model", run_id, {"deepflow.data_rows": rows}))
    ledger.move_alias("fraud", "champion", version, reason="fixture", evidence="e", actor="test")
    return version


def _break(prepared_dir, change) -> None:
    splits = {n: pd.read_parquet(prepared_dir / f"{n}.parquet") for n in ("train", "val", "test")}
    change(splits)
    for name, frame in splits.items():
        frame.to_parquet(prepared_dir / f"{name}.parquet", index=False)


@pytest.mark.parametrize("group", list(GROUPS))
def test_bad_data_fails_validation_and_changes_nothing(group, champion, prepared_dir) -> None:
    cases = GROUPS[group]
    _break(prepared_dir, _both(*(change for _, change, _ in cases)))
    with pytest.raises(ValidationFailed) as caught:
        steps.validate_data("fraud", [f"prepared_dir={prepared_dir}"])
    lines = [str(caught.value), *(f.line() for f in caught.value.report.failures)]
    for case, _, words in cases:  # each case is named by a failure of its own
        assert any(all(w in line for w in words) for line in lines), (case, "\n".join(lines)[:4000])
    assert max(len(line) for line in lines) < 2000  # values are cut, whatever their size
    assert caught.value.report_path.is_file()
    assert [str(v.version) for v in tracking.client().search_model_versions("name='fraud'")] == [champion]
    assert str(tracking.version_by_alias("fraud", tracking.CHAMPION).version) == champion
    assert ledger.consistent("fraud")


def test_deepflow_run_on_bad_data_stops_before_training(champion, prepared_dir, store) -> None:
    _break(prepared_dir, CASES[0][1])
    command = [sys.executable, "-m", "deepflow.cli", "run", "fraud", "--set", f"prepared_dir={prepared_dir}"]
    done = subprocess.run(command,
                          env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode != 0
    assert "TX_AMOUNT" in done.stdout + done.stderr and "±inf" in done.stdout + done.stderr
    assert [str(v.version) for v in tracking.client().search_model_versions("name='fraud'")] == [champion]
    assert str(tracking.version_by_alias("fraud", tracking.CHAMPION).version) == champion
    runs = tracking.client().search_runs([tracking.experiment_id("fraud")])
    assert not [r for r in runs if r.data.tags.get("deepflow.member")]  # no member was trained
