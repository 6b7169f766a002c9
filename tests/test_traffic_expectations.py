"""The traffic data contract: generated frames pass, and each rule rejects a crafted bad case."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from deepflow import validation
from deepflow.kinds.detection import expectations
from deepflow.kinds.detection.config import DetectionConfig
from deepflow.usecases.traffic.generate import CLASSES
from tests.test_traffic_generate import traffic_splits  # noqa: F401 (fixture)

Splits = dict[str, pd.DataFrame]
CFG = DetectionConfig(classes=list(CLASSES))


def run(splits: Splits) -> validation.ValidationReport:
    return validation.validate("traffic.test", expectations.frames(splits, CFG.classes), expectations.suites(CFG))


def copy(splits: Splits) -> Splits:
    return {k: v.copy() for k, v in splits.items()}


def test_generated_frames_pass(traffic_splits: Splits) -> None:  # noqa: F811
    report = run(traffic_splits)
    assert report.success, report.to_markdown()
    frames = expectations.frames(traffic_splits, CFG.classes)  # every rule ran: the suites' and the shared ones
    rules = sum(map(len, expectations.suites(CFG).values())) + sum(len(validation.finite_rules(f))
                                                                   for f in frames.values())
    assert report.evaluated == rules and report.rows["images"] == 48


def _truncated_jpeg(s: Splits) -> None:
    s["val"].at[s["val"].index[2], "image"] = s["val"]["image"].iloc[2][:400]


def _size_mismatch(s: Splits) -> None:
    s["train"].at[s["train"].index[0], "width"] = 128


def _box_outside(s: Splits) -> None:
    s["train"].at[s["train"].index[1], "labels"] = "0 0.95 0.5 0.2 0.2\n"  # right edge at 1.05


def _zero_width(s: Splits) -> None:
    s["test"].at[s["test"].index[0], "labels"] = "1 0.5 0.5 0.0 0.2\n"


def _unknown_class(s: Splits) -> None:
    s["train"].at[s["train"].index[3], "labels"] = "9 0.5 0.5 0.2 0.2\n"


def _garbled_labels(s: Splits) -> None:
    s["val"].at[s["val"].index[0], "labels"] = "car 0.5 0.5\n"


def _too_many_boxes(s: Splits) -> None:
    s["train"].at[s["train"].index[4], "labels"] = "0 0.5 0.5 0.1 0.1\n" * 41


def _class_missing_from_train(s: Splits) -> None:  # no bus (id 2) left in train
    s["train"]["labels"] = s["train"]["labels"].str.replace(r"(?m)^2 ", "0 ", regex=True)


def _leak(s: Splits) -> None:  # the same pixels in train and test
    s["test"].at[s["test"].index[1], "image"] = s["train"]["image"].iloc[7]


CASES: list[tuple[Callable[[Splits], None], str, str]] = [
    (_truncated_jpeg, "expect_column_values_to_be_in_set", "decodes"),
    (_size_mismatch, "expect_column_pair_values_to_be_equal", "width"),
    (_box_outside, "expect_column_values_to_be_between", "right"),
    (_zero_width, "expect_column_values_to_be_between", "width_px"),
    (_unknown_class, "expect_column_values_to_be_in_set", "class_name"),
    (_garbled_labels, "expect_column_values_to_be_in_set", "class_name"),
    (_too_many_boxes, "expect_column_values_to_be_between", "n_boxes"),
    (_class_missing_from_train, "expect_column_values_to_be_between", "train_boxes"),
    (_leak, "expect_column_values_to_be_in_set", "splits_with_same_image"),
]


@pytest.mark.parametrize(("corrupt", "expectation", "column"), CASES, ids=[c[0].__name__[1:] for c in CASES])
def test_each_rule_rejects_its_bad_case(traffic_splits: Splits, corrupt, expectation: str,  # noqa: F811
                                        column: str) -> None:
    bad = copy(traffic_splits)
    corrupt(bad)
    report = run(bad)
    assert not report.success
    found = {(f.expectation, f.column or f.kwargs.get("column_A")) for f in report.failures}
    assert (expectation, column) in found, report.to_markdown()
    if corrupt is _truncated_jpeg:  # one readable line, not a cascade of size mismatches
        assert len(report.failures) == 1 and report.failures[0].examples == [False]
        assert report.failures[0].rows == [f"val/{traffic_splits['val']['image_id'].iloc[2]}"]
    if corrupt is _unknown_class:  # the out-of-range id, named with its image
        bad_image = f"train/{traffic_splits['train']['image_id'].iloc[3]}"
        failure = next(f for f in report.failures if f.column == "class_name")
        assert failure.examples == ["unknown class id 9"] and failure.rows == [bad_image]
    if corrupt is _class_missing_from_train:  # the one failure names the class too rare to learn
        assert [f.line() for f in report.failures] == [
            "[classes] expect_column_values_to_be_between on column 'train_boxes' {'min_value': 1.0}: "
            "1 bad value(s), e.g. [0] at ['bus']"]
