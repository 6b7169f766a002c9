"""The fraud data contract: the prepared data passes, and each rule rejects a crafted bad frame."""

from collections.abc import Callable

import pandas as pd
import pytest

from deepflow import usecase, validation
from deepflow.kinds.tabular import expectations

CFG = usecase.get("fraud").cfg  # the fraud entry's contract (datasets/fraud.yaml)
Splits = dict[str, pd.DataFrame]


def run(splits: Splits) -> validation.ValidationReport:
    frames = expectations.frames(CFG, splits)
    return validation.validate("fraud.test", frames, expectations.suites(CFG))


def copy(splits: Splits) -> Splits:
    return {k: v.copy() for k, v in splits.items()}


def test_prepared_data_passes(small_splits: Splits) -> None:
    report = run(small_splits)
    assert report.success, report.to_markdown()
    assert report.evaluated > 40


def _null_feature(s: Splits) -> None:
    s["train"].loc[s["train"].index[:3], "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW"] = None


def _string_feature(s: Splits) -> None:
    s["val"]["TX_AMOUNT"] = s["val"]["TX_AMOUNT"].astype(str)


def _bad_label(s: Splits) -> None:
    s["test"].loc[s["test"].index[0], "TX_FRAUD"] = 2


def _fraud_rate(s: Splits) -> None:
    for df in s.values():
        df.loc[df.index[: len(df) // 5], "TX_FRAUD"] = 1


def _duplicate_id(s: Splits) -> None:
    s["test"].loc[s["test"].index[0], "TRANSACTION_ID"] = s["train"]["TRANSACTION_ID"].iloc[0]


def _negative_amount(s: Splits) -> None:
    s["train"].loc[s["train"].index[5], "TX_AMOUNT"] = -3.0


def _risk_above_one(s: Splits) -> None:
    s["train"].loc[s["train"].index[5], "TERMINAL_ID_RISK_7DAY_WINDOW"] = 1.5


def _negative_count(s: Splits) -> None:
    s["val"].loc[s["val"].index[5], "TERMINAL_ID_NB_TX_30DAY_WINDOW"] = -1


def _overlapping_splits(s: Splits) -> None:
    s["val"] = pd.concat([s["val"], s["train"].tail(10).assign(TRANSACTION_ID=lambda d: d.TRANSACTION_ID + 10**9)])


def _missing_column(s: Splits) -> None:
    for k in s:
        s[k] = s[k].drop(columns=["TERMINAL_ID_RISK_1DAY_WINDOW"])


def _no_positive_in_test(s: Splits) -> None:
    s["test"]["TX_FRAUD"] = 0


CASES: list[tuple[Callable[[Splits], None], str, str | None]] = [
    (_null_feature, "expect_column_values_to_not_be_null", "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW"),
    (_string_feature, "expect_column_values_to_be_in_type_list", "TX_AMOUNT"),
    (_bad_label, "expect_column_values_to_be_in_set", "TX_FRAUD"),
    (_fraud_rate, "expect_column_mean_to_be_between", "TX_FRAUD"),
    (_duplicate_id, "expect_column_values_to_be_unique", "TRANSACTION_ID"),
    (_negative_amount, "expect_column_values_to_be_between", "TX_AMOUNT"),
    (_risk_above_one, "expect_column_values_to_be_between", "TERMINAL_ID_RISK_7DAY_WINDOW"),
    (_negative_count, "expect_column_values_to_be_between", "TERMINAL_ID_NB_TX_30DAY_WINDOW"),
    (_overlapping_splits, "expect_column_pair_values_a_to_be_greater_than_b", None),
    (_missing_column, "expect_table_columns_to_match_set", None),
    (_no_positive_in_test, "expect_column_values_to_be_between", "positives"),
]


# Three cases run by default (a value rule, a uniqueness rule, a schema rule); the rest, a few seconds
# each, are in the slow layer that CI runs.
FAST_CASES = {_null_feature, _duplicate_id, _missing_column}


@pytest.mark.parametrize(("mutate", "expectation", "column"),
                         [pytest.param(*c, id=c[0].__name__, marks=() if c[0] in FAST_CASES else pytest.mark.slow)
                          for c in CASES])
def test_rule_rejects_crafted_bad_frame(small_splits: Splits, mutate, expectation: str, column) -> None:
    bad = copy(small_splits)
    mutate(bad)
    report = run(bad)
    assert not report.success
    hits = [f for f in report.failures if f.expectation == expectation and (column is None or f.column == column)]
    assert hits, report.to_markdown()
    assert expectation in report.to_markdown()


def test_report_names_bad_values(small_splits: Splits, tmp_path) -> None:
    bad = copy(small_splits)
    _negative_amount(bad)
    report = run(bad)
    md = report.save(tmp_path).read_text()
    assert "TX_AMOUNT" in md and "-3.0" in md and "FAILED" in md
    assert (tmp_path / "validation.json").exists()
