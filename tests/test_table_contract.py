"""The ``table`` kind's data contract: suites generated from the entry's ``columns`` pass on good
prepared splits and fail, naming the column (and the rows), on each kind of bad data.

The prepared splits are built here as the design specifies them (dtypes, ``_row_hash``, a split
by content hash) from ``tests/tables.customers``, with the bounds ``deepflow new`` would measure
(observed range and shares with a tolerance); ``prepared`` is shared with the parts' tests.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from deepflow import validation
from deepflow.kinds.table import expectations
from deepflow.kinds.table.config import ColumnSpec, TableConfig
from tests.tables import customers

TARGETS = {"binary": "churned", "multiclass": "plan_next", "regression": "spend_next"}


def _row_hash(frame: pd.DataFrame) -> pd.Series:
    text = ["\x1f".join(map(str, row)) for row in frame.itertuples(index=False)]
    return pd.Series([hashlib.sha1(t.encode()).hexdigest()[:16] for t in text], index=frame.index, dtype=object)


def prepared_frame(raw: pd.DataFrame, target: str, task: str) -> pd.DataFrame:
    """A raw customers table in the prepared dtypes: features and id (source order), target, hash."""
    out = pd.DataFrame({
        "customer_id": raw["customer_id"].astype(object),
        "tenure_months": raw["tenure_months"].astype(np.float64),
        "monthly_charges": raw["monthly_charges"].astype(np.float64),
        "region": raw["region"].astype(object),
        "contract": raw["contract"].astype(object),
        "paperless": (raw["paperless"] == "yes").astype(np.float64),
        "senior": raw["senior"].astype(np.float64),
        "signup_date": pd.to_datetime(raw["signup_date"]).astype("datetime64[ns]"),
    })
    out[target] = raw[target].astype(np.float64) if task == "regression" else raw[target].astype(object)
    out["_row_hash"] = _row_hash(out.drop(columns=["customer_id"]))
    return out


def split(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """70/15/15 by the content hash (stable as data grows)."""
    order = frame["_row_hash"].map(lambda h: hashlib.sha1(f"0{h}".encode()).hexdigest()).argsort()
    rows = frame.iloc[order.to_numpy()].reset_index(drop=True)
    a, b = int(len(rows) * 0.7), int(len(rows) * 0.85)
    return {"train": rows.iloc[:a].reset_index(drop=True), "val": rows.iloc[a:b].reset_index(drop=True),
            "test": rows.iloc[b:].reset_index(drop=True)}


def measured(frame: pd.DataFrame, target: str, task: str) -> TableConfig:
    """The entry ``deepflow new`` would write: every source column, bounds with tolerance."""
    def spec(col: str, role: str, **extra) -> ColumnSpec:
        values = frame[col]
        nulls = float(values.isna().mean())
        bounds = {}
        if role in ("numeric", "boolean"):
            lo, hi = float(values.min()), float(values.max())
            pad = 0.1 * (hi - lo) if role == "numeric" else 0.0
            bounds = {"min": lo - pad, "max": hi + pad}
        if role == "categorical":
            counts = values.value_counts()
            extra = {"categories": [str(c) for c in counts.index], "known_share_min": 0.95, **extra}
        return ColumnSpec(role=role, null_share_max=min(1.0, nulls + 0.05) if nulls else 0.02, **bounds, **extra)

    columns = {"Unnamed: 0": ColumnSpec(role="drop"), "customer_id": spec("customer_id", "id"),
               "tenure_months": spec("tenure_months", "numeric"), "monthly_charges": spec("monthly_charges", "numeric"),
               "region": spec("region", "categorical"), "contract": spec("contract", "categorical", unknown="reject"),
               "paperless": spec("paperless", "boolean"), "senior": spec("senior", "boolean"),
               "signup_date": spec("signup_date", "datetime"), "comment": ColumnSpec(role="text"),
               "country": ColumnSpec(role="constant")}
    cfg = TableConfig(target=target, task=task, columns=columns, rows_min=50, prepared_dir="unused")
    if task == "regression":
        y = frame[target]
        pad = 0.1 * float(y.max() - y.min())
        cfg.target_min, cfg.target_max = float(y.min()) - pad, float(y.max()) + pad
    else:
        shares = frame[target].value_counts(normalize=True)
        cfg.classes = sorted(shares.index, key=lambda c: shares[c], reverse=True)
        if task == "binary":
            cfg.classes = ["no", "yes"]
        cfg.class_share = {c: [max(0.0, shares[c] - 0.1), min(1.0, shares[c] + 0.1)] for c in cfg.classes}
    return cfg


def prepared(task: str = "binary", n: int = 800, seed: int = 3) -> tuple[TableConfig, dict[str, pd.DataFrame]]:
    """(the entry's config, its prepared train/val/test splits) for one task."""
    target = TARGETS[task]
    frame = prepared_frame(customers(n, seed), target, task)
    return measured(frame, target, task), split(frame)


def run(cfg: TableConfig, splits: dict[str, pd.DataFrame]) -> validation.ValidationReport:
    return validation.validate("table.test", expectations.frames(cfg, splits), expectations.suites(cfg))


@pytest.fixture(scope="module")
def binary() -> tuple[TableConfig, dict[str, pd.DataFrame]]:
    return prepared("binary")


def copy(splits: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {k: v.copy() for k, v in splits.items()}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_good_prepared_splits_pass(task: str, tmp_path) -> None:
    cfg, splits = prepared(task) if task != "binary" else prepared("binary")
    report = run(cfg, splits)
    assert report.success, report.to_markdown()
    report.save(tmp_path)
    contract = json.loads((tmp_path / "contract.json").read_text())
    kinds = {e["type"] for items in contract["frames"].values() for e in items}
    assert {"expect_column_values_to_be_between", "expect_column_values_to_be_in_set"} <= kinds
    rules = contract["frames"]["rows"]
    assert any(e["kwargs"].get("column") == "tenure_months" for e in rules)  # the suite is reviewable data


def _inf(s):
    s["train"].loc[5, "tenure_months"] = np.inf
    s["test"].loc[2, "tenure_months"] = -np.inf


def _out_of_range(s):
    s["val"].loc[1, "monthly_charges"] = 1e6


def _nulls(s):
    s["val"].loc[s["val"].index[::2], "monthly_charges"] = np.nan


def _unknown_categories(s):
    s["train"].loc[s["train"].index[::5], "region"] = "atlantis"


def _class_share(s):
    s["test"]["churned"] = "yes"


def _missing_column(s):
    s["val"] = s["val"].drop(columns=["senior"])


def _hash_in_two_splits(s):
    s["test"] = pd.concat([s["test"], s["train"].iloc[[3]]], ignore_index=True)
    s["test"].loc[len(s["test"]) - 1, "customer_id"] = "C-new"  # a new id: only the hash repeats


def _duplicate_ids(s):
    s["test"].loc[0, "customer_id"] = s["train"].loc[0, "customer_id"]


def _unknown_class(s):
    s["val"].loc[4, "churned"] = "maybe"


def _too_few_rows(s):
    s["train"] = s["train"].iloc[:10]


def _numeric_as_text(s):
    s["train"]["tenure_months"] = s["train"]["tenure_months"].astype(str)


CASES = [
    (_inf, "rows", "expect_column_values_to_be_between", "tenure_months", "inf"),
    (_out_of_range, "rows", "expect_column_values_to_be_between", "monthly_charges", "1000000.0"),
    (_nulls, "nulls", "expect_column_values_to_be_between", "monthly_charges", "val"),
    (_unknown_categories, "rows", "expect_column_values_to_be_in_set", "region", "atlantis"),
    (_class_share, "classes", "expect_column_values_to_be_between", "yes", "test"),
    (_missing_column, "columns", "expect_column_values_to_be_in_set", "senior", "missing"),
    (_hash_in_two_splits, "overlap", "expect_column_values_to_be_between", "splits", "test+train"),
    (_duplicate_ids, "rows", "expect_column_values_to_be_unique", "customer_id", "test:0"),
    (_unknown_class, "rows", "expect_column_values_to_be_in_set", "churned", "maybe"),
    (_too_few_rows, "splits", "expect_column_values_to_be_between", "train_rows", "10"),
    (_numeric_as_text, "columns", "expect_column_values_to_be_in_set", "tenure_months", "string"),
]


@pytest.mark.parametrize(("mutate", "frame", "expectation", "column", "shown"), CASES,
                         ids=[c[0].__name__.strip("_") for c in CASES])
def test_bad_data_fails_naming_the_column(binary, mutate, frame: str, expectation: str, column: str,
                                          shown: str) -> None:
    cfg, good = binary
    bad = copy(good)
    mutate(bad)
    report = run(cfg, bad)
    assert not report.success
    hits = [f for f in report.failures if (f.frame, f.expectation, f.column) == (frame, expectation, column)]
    assert hits, report.to_markdown()
    line = hits[0].line()
    assert repr(column) in line and shown in line, line


def test_infinity_names_the_rows_and_a_readable_error(binary, tmp_path) -> None:
    cfg, good = binary
    bad = copy(good)
    _inf(bad)
    report = run(cfg, bad)
    hit = next(f for f in report.failures if f.column == "tenure_months")
    assert sorted(hit.rows) == ["test:2", "train:5"] and hit.unexpected_count == 2
    error = validation.ValidationFailed(report, report.save(tmp_path))
    assert "tenure_months" in str(error) and "train:5" in str(error)
    assert "tenure_months" in (tmp_path / "validation.md").read_text()
    json.loads((tmp_path / "validation.json").read_text())  # the report stays valid JSON


def test_an_unset_bound_still_rejects_infinity(binary) -> None:
    cfg, good = binary
    cfg = TableConfig(**{**cfg.__dict__, "columns": {**cfg.columns, "tenure_months": ColumnSpec(role="numeric")}})
    bad = copy(good)
    bad["val"].loc[0, "tenure_months"] = np.inf
    failures = [f for f in run(cfg, bad).failures if f.column == "tenure_months"]
    assert failures and failures[0].rows == ["val:0"]


def test_regression_target_range(tmp_path) -> None:
    cfg, splits = prepared("regression")
    splits["test"].loc[0, "spend_next"] = cfg.target_max + 100
    hits = [f for f in run(cfg, splits).failures if f.column == "spend_next"]
    assert hits and hits[0].rows == ["test:0"]


def test_a_class_missing_from_a_split_fails_naming_split_and_class() -> None:
    cfg, splits = prepared("multiclass")
    cfg.class_share = {c: [0.0, 1.0] for c in cfg.classes}  # shares alone would let it pass
    gone = cfg.classes[-1]
    splits["val"] = splits["val"][splits["val"]["plan_next"] != gone].reset_index(drop=True)
    report = run(cfg, splits)
    assert not report.success
    hits = [f for f in report.failures if f.frame == "class_rows"]
    assert [(f.column, f.rows) for f in hits] == [(gone, ["val"])], report.to_markdown()
    assert repr(gone) in hits[0].line() and "val" in hits[0].line()
    assert run(*prepared("multiclass")).success  # every class in every split: passes


def test_a_categorical_column_without_categories_has_no_in_set_rule(binary) -> None:
    cfg, good = binary
    columns = {**cfg.columns, "region": ColumnSpec(role="categorical", known_share_min=0.95,
                                                   null_share_max=0.02)}  # a role changed by hand
    assert expectations.column_rules("region", columns["region"]) == []
    report = run(TableConfig(**{**cfg.__dict__, "columns": columns}), copy(good))
    assert report.success, report.to_markdown()
