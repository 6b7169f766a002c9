"""The ``table`` kind's learning side: preprocessing, the four rungs of the ladder, metrics and the
bootstrap, the scorer's pickling and MLflow round trip, and a network's time limit.

Prepared splits are built here by hand in the design's dtypes (numeric float64, boolean float64
1/0/NaN, categorical object str, datetime64[ns], target str or float64), from tests/tables.py.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from deepflow.config import ConfigError
from deepflow.kinds.table import metrics
from deepflow.kinds.table.classical import holdout_fits
from deepflow.kinds.table.config import ColumnSpec, TableConfig
from deepflow.kinds.table.features import Preprocessor, parse_dates
from deepflow.kinds.table.models import embedding_dim
from deepflow.kinds.table.usecase import TableUseCase, batch_size
from deepflow.usecase import Entry
from tests.tables import customers

TARGETS = {"binary": "churned", "multiclass": "plan_next", "regression": "spend_next"}
CLASSES = {"binary": ["no", "yes"], "multiclass": ["basic", "plus", "premium"], "regression": []}
ROLES = {"Unnamed: 0": "drop", "customer_id": "id", "tenure_months": "numeric", "monthly_charges": "numeric",
         "region": "categorical", "contract": "categorical", "paperless": "boolean", "senior": "boolean",
         "signup_date": "datetime", "comment": "text", "country": "constant"}
FEATURES = [c for c, r in ROLES.items() if r in ("numeric", "categorical", "boolean", "datetime")]
FAST = {"epochs": 3, "patience": 3}


def prepare_by_hand(raw: pd.DataFrame, target: str | None = None) -> pd.DataFrame:
    """The prepared dtypes of the design, from a raw customers() frame."""
    out = pd.DataFrame({
        "customer_id": raw["customer_id"].astype(object),
        "tenure_months": raw["tenure_months"].astype("float64"),
        "monthly_charges": raw["monthly_charges"].astype("float64"),
        "region": raw["region"].astype(object),
        "contract": raw["contract"].astype(object),
        "paperless": (raw["paperless"] == "yes").astype("float64"),
        "senior": raw["senior"].astype("float64"),
        "signup_date": pd.to_datetime(raw["signup_date"]).astype("datetime64[ns]"),
    })
    if target is not None:
        out[target] = raw[target].astype("float64") if target == "spend_next" else raw[target].astype(object)
    out["_row_hash"] = [f"{i:016x}" for i in range(len(raw))]
    return out


def table_config(task: str, prepared_dir: str = "unused", **overrides) -> TableConfig:
    columns = {c: ColumnSpec(role=r) for c, r in ROLES.items()}
    columns["region"].categories = ["north", "south", "east", "west"]
    columns["contract"].categories = ["monthly", "yearly"]
    cfg = TableConfig(prepared_dir=prepared_dir, target=TARGETS[task], task=task, classes=CLASSES[task],
                      columns=columns, **overrides)
    cfg.model.hgb_max_iter, cfg.model.deep_width, cfg.model.deep_blocks = 40, 32, 2
    return cfg


def make(task: str, n: int = 900, seed: int = 3, **overrides) -> tuple[TableUseCase, dict[str, pd.DataFrame]]:
    """A use case over hand-prepared splits (70 / 15 / 15, seeded)."""
    frame = prepare_by_hand(customers(n, seed), TARGETS[task])
    order = np.random.default_rng(0).permutation(n)
    cuts = {"train": order[: int(0.7 * n)], "val": order[int(0.7 * n): int(0.85 * n)], "test": order[int(0.85 * n):]}
    splits = {s: frame.iloc[np.sort(i)].reset_index(drop=True) for s, i in cuts.items()}
    entry = Entry(name="customers", kind="table", path=Path("customers.yaml"))
    return TableUseCase(entry, table_config(task, **overrides)), splits


# --- preprocessing ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted() -> tuple[Preprocessor, pd.DataFrame]:
    train = prepare_by_hand(customers(400))
    return Preprocessor.create(table_config("binary").columns, FEATURES).fit(train), train


def test_preprocessor_shapes_and_standardisation(fitted) -> None:
    pre, train = fitted
    numeric, codes = pre.transform(train)
    assert numeric.dtype == np.float32 and codes.dtype == np.int64
    assert codes.shape == (400, 2) and numeric.shape == (400, len(pre.numeric_names))
    assert "monthly_charges#missing" in pre.numeric_names  # train had missing charges
    assert not np.isnan(numeric).any() and np.abs(numeric).max() <= 5
    assert np.allclose(numeric[:, pre.slices["tenure_months"][0][0]].mean(), 0, atol=1e-5)
    assert pre.categories["region"] == ["north", "south", "east", "west"]  # most frequent first
    assert codes.min() >= 1  # every training category is known


def test_raw_values_coerce_like_prepared_ones(fitted) -> None:
    pre, train = fitted
    row = train.iloc[[0]].reset_index(drop=True)
    raw = pd.DataFrame([{
        "tenure_months": f" {row['tenure_months'][0]:g} ", "monthly_charges": str(row["monthly_charges"][0]),
        "region": f" {row['region'][0]} ", "contract": row["contract"][0],
        "paperless": {1.0: "yes", 0.0: "no"}[row["paperless"][0]], "senior": bool(row["senior"][0]),
        "signup_date": row["signup_date"][0].strftime("%Y-%m-%d"),
    }])
    for a, b in zip(pre.transform(row), pre.transform(raw), strict=True):
        assert np.allclose(a, b)


def test_missing_and_unseen_values(fitted) -> None:
    pre, train = fitted
    odd = pd.DataFrame([{"tenure_months": None, "monthly_charges": np.nan, "region": "atlantis", "contract": None,
                         "paperless": "maybe", "senior": None, "signup_date": None}])
    numeric, codes = pre.transform(odd)
    assert codes.tolist() == [[0, 0]]  # unseen and missing categories: the "other" bucket
    assert not np.isnan(numeric).any()
    missing = pre.numeric_names.index("monthly_charges#missing")
    assert numeric[0, missing] == 1
    assert pre.transform(train.head(1).assign(region=3.0))[1][0, 0] == 0  # a number is not a known region


def test_iso_strings_and_datetime64_give_the_same_parts(fitted) -> None:
    pre, train = fitted
    when = pd.Series(pd.to_datetime(["2024-03-05 13:30:00", "2025-12-31", None], format="ISO8601"),
                     dtype="datetime64[ns]")
    frame = pd.concat([train.head(3)] * 2, ignore_index=True)
    frame["signup_date"] = pd.concat([when, pd.Series(["2024-03-05T13:30:00", "2025-12-31", None], dtype=object)],
                                     ignore_index=True)
    numeric, _ = pre.transform(frame)
    assert np.allclose(numeric[:3], numeric[3:])
    utc = pre.transform(frame.head(1).assign(signup_date="2024-03-05T14:30:00+01:00"))[0]
    assert np.allclose(utc, numeric[:1])  # an aware time is read in UTC


def test_categories_come_from_the_training_split_only() -> None:
    train = prepare_by_hand(customers(200)).assign(region="north")
    pre = Preprocessor.create(table_config("binary").columns, FEATURES).fit(train)
    assert pre.categories["region"] == ["north"]
    assert pre.transform(train.head(2).assign(region=["south", "north"]))[1][:, 0].tolist() == [0, 1]
    assert pre.describe()["region"] == {"role": "categorical", "categories": ["north"], "unknown": "other"}


def test_dates_outside_what_datetime64_ns_holds_are_missing(fitted) -> None:
    pre, train = fitted
    row = train.head(1)
    imputed = pre.transform(row.assign(signup_date=None))
    for far in ("9999-12-31", "0001-01-01", "2262-04-12", pd.Timestamp("9999-12-31").as_unit("s")):
        got = pre.transform(row.assign(signup_date=pd.Series([far]).astype(object)))
        assert all(np.array_equal(a, b) for a, b in zip(got, imputed, strict=True)), far  # not 1816-03-29
    typed = pd.Series(pd.to_datetime(["9999-12-31"]).as_unit("s"))  # a Parquet file's datetime64[s]
    assert np.array_equal(pre.transform(row.assign(signup_date=typed))[0], imputed[0])
    assert np.isnat(parse_dates(pd.Series(["9999-12-31", "1677-09-20"]))[0]).all()
    assert not np.isnat(parse_dates(pd.Series(["2262-04-10", "1677-09-22", "20250601"]))[0]).any()


def test_text_dates_are_read_with_the_recorded_format() -> None:
    columns = table_config("binary").columns
    columns["signup_date"] = ColumnSpec(role="datetime", format="%d/%m/%Y")
    train = prepare_by_hand(customers(300))
    pre = Preprocessor.create(columns, FEATURES).fit(train)
    assert pre.describe()["signup_date"] == {"role": "datetime", "unknown": "other", "format": "%d/%m/%Y"}
    row = train.head(1)
    day_first = pre.transform(row.assign(signup_date="01/02/2025"))[0]
    assert np.allclose(day_first, pre.transform(row.assign(signup_date="2025-02-01"))[0])  # 1 February
    assert not np.allclose(day_first, pre.transform(row.assign(signup_date="2025-01-02"))[0])
    iso = Preprocessor.create(table_config("binary").columns, FEATURES).fit(train)  # format "": ISO 8601 only
    assert iso.describe()["signup_date"]["format"] == ""
    assert np.allclose(iso.transform(row.assign(signup_date="01/02/2025"))[0],
                       iso.transform(row.assign(signup_date=None))[0])  # not guessed: missing
    assert np.isnat(parse_dates(pd.Series(["now", "today"]))[0]).all()  # not the current time


def test_category_text_is_never_taken_for_missing() -> None:
    tokens = ["NA", "?", "null", "None", "nan", "N/A"]
    train = prepare_by_hand(customers(120)).assign(region=(tokens * 20)[:120])
    pre = Preprocessor.create(table_config("binary").columns | {"region": ColumnSpec(role="categorical")},
                              FEATURES).fit(train)
    assert sorted(pre.categories["region"]) == sorted(tokens)
    codes = pre.transform(train.head(6))[1][:, 0]
    assert (codes > 0).all() and len(set(codes)) == 6  # each token its own known category


def test_a_hand_made_categorical_column_learns_its_categories_from_train() -> None:
    columns = table_config("binary").columns
    columns["region"] = ColumnSpec(role="categorical")  # a role changed by hand: no categories listed
    pre = Preprocessor.create(columns, FEATURES).fit(prepare_by_hand(customers(400)))
    assert pre.categories["region"] == ["north", "south", "east", "west"]


@pytest.mark.parametrize("labels", [
    [0] * 5 + [1] * 5 + [2] * 4,  # 14 rows: a 2-row holdout cannot hold 3 classes
    [0] * 30 + [1] * 19 + [2],  # a class of one row cannot be stratified
])
def test_hgb_fits_a_classification_table_too_small_for_early_stopping(labels: list[int]) -> None:
    uc, splits = make("multiclass")
    train = splits["train"].head(len(labels)).assign(plan_next=np.array(CLASSES["multiclass"])[labels])
    assert not holdout_fits(np.array(labels), 0.1)
    scorer, info = uc.fit("hgb", "baseline", {**splits, "train": train})
    assert info["early_stopping"] is False
    scores = scorer.predict(splits["test"])
    assert scores.shape == (len(splits["test"]), 3) and np.allclose(scores.sum(1), 1)
    assert holdout_fits(np.array([0] * 20 + [1] * 10 + [2] * 3), 0.1)  # ceil(3.3) = 4 >= 3 classes, each >= 2


def test_embedding_width_and_auto_batch_size() -> None:
    assert embedding_dim(2, 16) == 2 and embedding_dim(5, 16) == 4 and embedding_dim(10_000, 16) == 16
    assert (batch_size(0, 500), batch_size(0, 6400), batch_size(0, 10**7), batch_size(256, 10)) == (32, 100, 1024, 256)


# --- the ladder ---------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["binary", pytest.param("multiclass", marks=pytest.mark.slow),
                                  pytest.param("regression", marks=pytest.mark.slow)])
def test_every_member_trains_and_predicts_the_task_shape(task: str) -> None:
    uc, splits = make(task)
    uc.cfg.train.epochs, uc.cfg.train.patience = FAST["epochs"], FAST["patience"]
    test = splits["test"]
    for member, kind in uc.members():
        scorer, info = uc.fit(member, kind, splits)
        scores = scorer.predict(test)
        expected = (len(test), 3) if task == "multiclass" else (len(test),)
        assert scores.shape == expected, member
        assert np.isfinite(scores).all(), member
        if task == "multiclass":
            assert np.allclose(scores.sum(1), 1)
        if task == "binary":
            assert ((scores >= 0) & (scores <= 1)).all()
        evaluated = uc.evaluate(scores, test)
        assert set(evaluated) == set(metrics.SUMMARY[task]) and uc.primary_metric in evaluated
        assert scorer.task == task and scorer.classes == CLASSES[task] and scorer.features == FEATURES
        assert info["fit_seconds"] > 0


@pytest.mark.slow  # ~15 s quiet; CI runs it
def test_a_regression_network_beats_the_mean() -> None:
    uc, splits = make("regression")
    uc.cfg.train.epochs = 30
    scorer, _ = uc.fit("shallow", "candidate", splits)
    assert uc.evaluate(scorer.predict(splits["test"]), splits["test"])["r2"] > 0.5  # the mean scores about 0


@pytest.mark.parametrize("member", ["linear", "hgb", "deep"])
def test_scorer_pickles(member: str) -> None:
    uc, splits = make("multiclass")
    uc.cfg.train.epochs = 2
    scorer, _ = uc.fit(member, dict(uc.members())[member], splits)
    again = pickle.loads(pickle.dumps(scorer))
    assert np.allclose(again.predict(splits["test"]), scorer.predict(splits["test"]))
    assert again.columns == scorer.columns and again.features == FEATURES


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_packed_trees_answer_as_scikit_learn_does(task: str) -> None:
    uc, splits = make(task)
    scorer, _ = uc.fit("hgb", "baseline", splits)
    assert scorer.packed is not None
    numeric, codes = scorer.encode(splits["test"])
    codes[:5, 0] = [0, 0, 1, 2, 3]  # the "other" bucket, which training never saw
    numeric[5:10, 0] = np.nan
    x = np.concatenate([numeric, codes.astype(np.float32)], axis=1)
    ours = scorer.packed.predict(x, task)
    theirs = scorer.model.predict(x) if task == "regression" else scorer.model.predict_proba(x)
    assert np.allclose(ours, theirs, rtol=0, atol=1e-9)


def test_time_limit_stops_a_network() -> None:
    uc, splits = make("regression")
    uc.cfg.train.epochs, uc.cfg.train.patience = 10_000, 10_000
    started = time.perf_counter()
    scorer, info = uc.fit("deep", "candidate", splits, time_limit_s=2.0)
    assert time.perf_counter() - started < 10  # 10,000 epochs would take minutes
    assert info["stopped_by"] == "time limit" and info["time_limit_s"] == 2.0
    assert scorer.predict(splits["test"]).shape == (len(splits["test"]),)


# --- the use case's contract --------------------------------------------------------------------


def test_primary_metric_schema_and_config_checks() -> None:
    uc, _ = make("binary", class_share={"no": [0.6, 0.9], "yes": [0.1, 0.4]})
    assert uc.primary_metric == "roc_auc"  # positives ~25 %
    assert make("binary", class_share={"no": [0.85, 0.99], "yes": [0.01, 0.15]})[0].primary_metric == "auprc"
    assert make("multiclass")[0].primary_metric == "f1_macro" and make("regression")[0].primary_metric == "r2"
    assert uc.summary_metrics[0] == "roc_auc" and uc.registrable("baseline")
    assert uc.members() == [("linear", "baseline"), ("hgb", "baseline"), ("shallow", "candidate"),
                            ("deep", "candidate")]
    assert uc.schema() == {"kind": "table", "target": "churned", "task": "binary", "classes": ["no", "yes"],
                           "features": {f: ROLES[f] for f in FEATURES}}
    with pytest.raises(ConfigError, match="accuracy"):
        make("multiclass", metric="accuracy")
    with pytest.raises(ConfigError, match="unknown 'forest'"):
        make("binary", members=["linear", "forest"])


def test_threshold_figures_reports_and_example() -> None:
    uc, splits = make("binary")
    scorer, _ = uc.fit("linear", "baseline", splits)
    val, test = splits["val"], splits["test"]
    threshold = uc.threshold(scorer.predict(val), val)
    assert 0 < threshold < 1
    assert make("binary", threshold=0.3)[0].threshold(scorer.predict(val), val) == 0.3
    scores = scorer.predict(test)
    assert set(uc.figures("linear", scores, test, threshold)) == {"plots/pr_curve.png", "plots/confusion_matrix.png"}
    out = uc.reports("linear", scorer, scores, test)
    assert out["card/importance.md"].startswith("## What the model relies on")
    assert "| tenure_months | numeric |" in out["card/importance.md"]
    assert hasattr(out["plots/importance.png"], "savefig")
    example = uc.input_example(test, scorer.features)
    assert list(example.columns) == FEATURES and len(example) == 5
    assert example["region"].dtype == object and str(example["signup_date"].dtype) == "datetime64[ns]"


def test_regression_figures() -> None:
    uc, splits = make("regression")
    scorer, _ = uc.fit("linear", "baseline", splits)
    figs = uc.figures("linear", scorer.predict(splits["test"]), splits["test"], 0.5)
    assert set(figs) == {"plots/predicted_vs_actual.png", "plots/residuals.png"}


def test_logged_scorer_round_trips_through_mlflow(store) -> None:
    import mlflow

    from deepflow import tracking

    uc, splits = make("multiclass")
    scorer, _ = uc.fit("hgb", "baseline", splits)
    run_id = tracking.start_run("customers", "hgb")
    uri = tracking.log_scorer(run_id, scorer, uc.input_example(splits["test"], scorer.features))
    odd = splits["test"][FEATURES].head(3).copy()
    odd.loc[0, "monthly_charges"] = np.nan
    odd.loc[1, "region"] = None
    odd.loc[2, "region"] = "atlantis"
    expected = scorer.predict(odd)
    assert np.allclose(tracking.load_scorer(uri).predict(odd), expected)
    assert np.allclose(np.asarray(mlflow.pyfunc.load_model(uri).predict(odd)), expected)  # schema enforced


# --- metrics and the bootstrap ------------------------------------------------------------------


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=2000) < 0.2).astype(int)
    p = np.round(np.clip(0.3 * y + 0.7 * rng.uniform(size=2000), 0, 1), 2)  # ties included
    got = metrics.evaluate("binary", y, p)
    assert got["auprc"] == pytest.approx(skm.average_precision_score(y, p))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert got["f1"] == pytest.approx(skm.f1_score(y, p >= 0.5))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, p))
    k = rng.integers(0, 3, 2000)
    probs = rng.dirichlet(np.ones(3), 2000)
    got = metrics.evaluate("multiclass", k, probs)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(k, probs.argmax(1), average="macro"))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(k, probs.argmax(1)))
    v = rng.normal(size=2000)
    guess = v + rng.normal(size=2000)
    got = metrics.evaluate("regression", v, guess)
    assert got["r2"] == pytest.approx(skm.r2_score(v, guess))
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(v, guess))


@pytest.mark.parametrize(("task", "name"), [("binary", "auprc"), ("binary", "roc_auc"), ("binary", "f1"),
                                            ("multiclass", "f1_macro"), ("regression", "r2")])
def test_paired_bootstrap_prefers_a_perfect_scorer(task: str, name: str) -> None:
    rng = np.random.default_rng(2)
    n = 600
    if task == "regression":
        y = rng.normal(size=n)
        perfect, noise = y.copy(), rng.normal(size=n)
    elif task == "binary":
        y = (rng.uniform(size=n) < 0.3).astype(int)
        perfect, noise = y.astype(float), rng.uniform(size=n)
    else:
        y = rng.integers(0, 3, n)
        perfect, noise = np.eye(3)[y], rng.dirichlet(np.ones(3), n)
    gain = metrics.bootstrap(task, name, y, perfect, noise, resamples=300, seed=5)
    assert gain.low > 0 and gain.estimate > 0
    assert metrics.bootstrap(task, name, y, perfect, noise, resamples=300, seed=5) == gain  # seeded
    alone = metrics.bootstrap(task, name, y, noise, resamples=300, seed=5)
    assert alone.low <= metrics.value(task, name, y, noise) <= alone.high
