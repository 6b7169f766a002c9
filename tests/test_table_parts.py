"""The ``table`` kind's serving, batch and drift parts, per task, with real fitted scorers.

Each task gets a :class:`TableScorer` over the kind's own preprocessor and a scikit-learn linear
model fitted on the prepared train split of ``tests/tables.customers`` (no MLflow: the served
version is loaded straight into a :class:`ModelStore` slot, the batch model is built in place).
``region`` is categorical with the "other" policy, ``contract`` with "reject".
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from deepflow import batch, drift, kinds
from deepflow.kinds.table.features import Preprocessor
from deepflow.kinds.table.scorer import TableScorer
from deepflow.serving import ModelStore, ServeConfig, create_app, load_version
from tests.entries import write_entry
from tests.tables import customers, write_csv
from tests.test_table_contract import TARGETS, prepared

NAMES = {"binary": "churn", "multiclass": "plans", "regression": "spend"}
THRESHOLD = 0.3
ROW = {"tenure_months": 5, "monthly_charges": 80.5, "region": "west", "contract": "monthly",
       "paperless": "yes", "senior": True, "signup_date": "2025-06-01"}


def fit_scorer(cfg, train: pd.DataFrame) -> TableScorer:
    from sklearn.linear_model import LogisticRegression, Ridge

    pre = Preprocessor.create(cfg.columns, cfg.features()).fit(train)
    x = pre.onehot(*pre.transform(train))
    if cfg.task == "regression":
        model = Ridge(alpha=1.0).fit(x, train[cfg.target].to_numpy())
    else:
        model = LogisticRegression(max_iter=500).fit(x, train[cfg.target].map(cfg.classes.index).to_numpy())
    return TableScorer(pre, model, member="linear", family="linear", task=cfg.task, classes=list(cfg.classes))


@pytest.fixture(scope="module")
def tasks() -> dict[str, tuple]:
    """task -> (config, splits, scorer)."""
    out = {}
    for task in NAMES:  # a test split of 450 rows: a 400-row batch drawn from it is no small-sample echo
        cfg, splits = prepared(task, n=3000)
        out[task] = (cfg, splits, fit_scorer(cfg, splits["train"]))
    return out


NA_TOKENS = ["", "NA", "null", "?"]  # what `deepflow new` records a CSV source's reader took for missing


def entry_config(cfg, prepared_dir: Path, **extra) -> dict:
    columns = {c: {"role": s.role, "categories": list(s.categories), "unknown": s.unknown, "format": s.format}
               for c, s in cfg.columns.items()}
    return {"target": cfg.target, "task": cfg.task, "classes": list(cfg.classes), "columns": columns,
            "prepared_dir": str(prepared_dir), "read": {"format": "csv", "na_values": NA_TOKENS}, **extra}


@pytest.fixture
def entries(datasets: Path, tasks, tmp_path: Path) -> Path:
    """One table entry per task, its prepared splits on disk (for make_batch)."""
    for task, name in NAMES.items():
        cfg, splits, _ = tasks[task]
        directory = tmp_path / "prepared" / name
        directory.mkdir(parents=True)
        for split, frame in splits.items():
            frame.to_parquet(directory / f"{split}.parquet", index=False)
        write_entry(datasets, name, "table", entry_config(cfg, directory))
    return datasets


class Store(ModelStore):
    """A store whose versions are put in place by the test (no registry to poll)."""

    def refresh(self) -> None:
        pass


@pytest.fixture
def client(entries, tasks):
    store = Store(tuple(NAMES.values()))
    for task, name in NAMES.items():
        version = SimpleNamespace(version="3", tags={"deepflow.threshold": str(THRESHOLD)}, run_id="run")
        store.get(name).loaded = load_version(name, version, lambda _uri, s=tasks[task][2]: s, kind="table")
    with TestClient(create_app(ServeConfig(reload_interval=0, use_cases=tuple(NAMES.values())), store)) as c:
        yield c


def post(client, name: str, rows, raw: bytes | None = None):
    if raw is not None:
        return client.post(f"/v1/{name}/predict", content=raw, headers={"content-type": "application/json"})
    return client.post(f"/v1/{name}/predict", json={"rows": rows})


# --- serving -------------------------------------------------------------------------------------


def test_openapi_lists_every_field_with_its_type(client, tasks) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    row = schemas["ChurnRow"]
    assert set(row["properties"]) == set(tasks["binary"][0].features()) and row["additionalProperties"] is False
    types = {name: {t.get("type") for t in p["anyOf"]} for name, p in row["properties"].items()}
    assert types["tenure_months"] == {"number", "null"} and "boolean" in types["senior"]
    assert types["signup_date"] == {"string", "null"} and types["region"] == {"string", "null"}
    region, contract = row["properties"]["region"], row["properties"]["contract"]
    assert all(c in region["description"] for c in ("north", "south", "east", "west")) and region["examples"]
    assert "other" in region["description"] and sorted(contract["anyOf"][0]["enum"]) == ["monthly", "yearly"]
    assert "imputed" in row["properties"]["monthly_charges"]["description"]
    assert {"ChurnResponse", "PlansResponse", "SpendResponse"} <= set(schemas)


def test_answers_by_task(client, tasks) -> None:
    frame = pd.DataFrame([ROW])
    binary = post(client, "churn", [ROW, {**ROW, "tenure_months": 70, "contract": "yearly"}])
    assert binary.status_code == 200, binary.text
    body = binary.json()
    assert body["model"] == {"name": "churn", "version": "3"} and body["threshold"] == THRESHOLD
    first = body["predictions"][0]
    assert set(first) == {"label", "probability", "probabilities"}
    assert first["probability"] == pytest.approx(float(tasks["binary"][2].predict(frame)[0]))
    assert first["probabilities"]["yes"] == pytest.approx(first["probability"])
    assert all(p["label"] == ("yes" if p["probability"] >= THRESHOLD else "no") for p in body["predictions"])

    multi = post(client, "plans", [ROW]).json()["predictions"][0]
    assert set(multi) == {"label", "probabilities"} and set(multi["probabilities"]) == {"basic", "plus", "premium"}
    assert multi["label"] == max(multi["probabilities"], key=multi["probabilities"].get)
    assert sum(multi["probabilities"].values()) == pytest.approx(1.0)

    value = post(client, "spend", [ROW]).json()["predictions"][0]
    assert set(value) == {"value"} and value["value"] == pytest.approx(float(tasks["regression"][2].predict(frame)[0]))


def test_missing_and_null_fields_are_imputed(client, tasks) -> None:
    scorer = tasks["binary"][2]
    sparse = {"tenure_months": 12}
    left_out = post(client, "churn", [sparse]).json()["predictions"][0]["probability"]
    nulls = post(client, "churn", [{**dict.fromkeys(ROW), **sparse}]).json()["predictions"][0]["probability"]
    expected = scorer.predict(pd.DataFrame([{**dict.fromkeys(ROW, None), **sparse}]))[0]
    assert left_out == nulls == pytest.approx(float(expected))
    assert post(client, "churn", [{**ROW, "region": "  ", "signup_date": ""}]).status_code == 200


def test_unknown_categories_follow_the_policy(client) -> None:
    other = post(client, "churn", [{**ROW, "region": "atlantis"}])
    assert other.status_code == 200, other.text
    rejected = post(client, "churn", [{**ROW, "contract": "lifetime"}])
    assert rejected.status_code == 422
    detail = rejected.json()["detail"][0]
    assert detail["loc"] == ["body", "rows", 0, "contract"]
    assert "lifetime" in detail["msg"] and "'monthly'" in detail["msg"] and "'yearly'" in detail["msg"]


def test_a_typo_is_refused_by_name(client) -> None:
    reply = post(client, "churn", [{**ROW, "tenure_monhts": 3}])
    assert reply.status_code == 422
    msg = reply.json()["detail"][0]["msg"]
    assert "tenure_monhts" in msg and "did you mean 'tenure_months'" in msg


@pytest.mark.parametrize("raw", [
    b'{"rows": [{"tenure_months": NaN}]}',
    b'{"rows": [{"tenure_months": Infinity}]}',
    b'{"rows": [{"tenure_months": -Infinity}]}',
    b'{"rows": [{"tenure_months": 1e400}]}',
    b'{"rows": [{"tenure_months": 1' + b"0" * 400 + b'}]}',
    b'{"rows": [{"tenure_months": 1e39}]}',
    b'{"rows": [{"tenure_months": "12"}]}',
    b'{"rows": [{"tenure_months": true}]}',
    b'{"rows": [{"region": "\\ud800"}]}',
    b'{"rows": [{"region": "\xed\xa0\x80"}]}',
    b'{"rows": [{"\\udc80": 1}]}',
    b'{"rows": [{"region": 1.5}]}',
    b'{"rows": [{"senior": "maybe"}]}',
    b'{"rows": [{"senior": 2}]}',
    b'{"rows": [{"signup_date": "yesterday"}]}',
    b'{"rows": [{"signup_date": "9999-12-31"}]}',
    b'{"rows": [{"signup_date": 20250601}]}',
    b'{"rows": []}',
    b'{"rows": [1]}',
    b'{"rows": {"tenure_months": 1}}',
    b'{not json',
])
def test_bad_input_is_a_422_with_a_json_body(client, raw: bytes) -> None:
    reply = post(client, "churn", None, raw=raw)
    assert reply.status_code == 422, reply.text
    json.loads(reply.content)  # strict JSON: no NaN, no lone surrogate


def test_accepted_spellings(client, tasks) -> None:
    rows = [{**ROW, "senior": v} for v in (True, 1, "yes", "TRUE", None)]
    rows += [{**ROW, "signup_date": d} for d in ("2025-06-01T10:00:00Z", "2025-06-01 10:00", "2025-06-01T12:00+02:00")]
    reply = post(client, "churn", rows)
    assert reply.status_code == 200, reply.text
    p = [x["probability"] for x in reply.json()["predictions"]]
    assert p[0] == p[1] == p[2] == p[3]


def test_a_version_loaded_after_start_up_checks_its_own_rows(entries, tasks) -> None:
    store = Store(("churn",))
    with TestClient(create_app(ServeConfig(reload_interval=0, use_cases=("churn",)), store)) as client:
        assert post(client, "churn", [ROW]).status_code == 503  # nothing served yet: no guess at a schema
        version = SimpleNamespace(version="4", tags={}, run_id="run")
        store.get("churn").loaded = load_version("churn", version, lambda _uri: tasks["binary"][2], kind="table")
        good = post(client, "churn", [ROW, {"tenure_months": 3}])
        assert good.status_code == 200 and good.json()["threshold"] == 0.5  # no tag: DEFAULT_THRESHOLD
        bad = post(client, "churn", [ROW, {**ROW, "tenure_monhts": 1, "senior": "maybe"}])
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:3] == ["body", "rows", 1]


def test_a_reloaded_version_rechecks_rows_parsed_by_the_first(client, tasks) -> None:
    store = client.app.state.store
    version = SimpleNamespace(version="5", tags={}, run_id="run")
    store.get("churn").loaded = load_version("churn", version, lambda _uri: tasks["binary"][2], kind="table")
    reply = post(client, "churn", [ROW, {**ROW, "senior": "no", "signup_date": "2025-06-01T10:00:00+02:00"}])
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"]["version"] == "5"
    assert post(client, "churn", [{**ROW, "contract": "lifetime"}]).status_code == 422


def test_serving_reads_only_the_entrys_missing_tokens(client, entries, tasks, tmp_path: Path) -> None:
    imputed = post(client, "churn", [{**ROW, "contract": None}]).json()["predictions"][0]["probability"]
    for token in ("NA", " ? ", "null", ""):  # the CSV source's reader read these as missing
        reply = post(client, "churn", [{**ROW, "contract": token}])
        assert reply.status_code == 200 and reply.json()["predictions"][0]["probability"] == imputed, token
    assert post(client, "churn", [{**ROW, "contract": "N/A"}]).status_code == 422  # a value: unknown category
    cfg, _, scorer = tasks["binary"]
    write_entry(entries, "churn", "table", entry_config(cfg, tmp_path, read={"format": "parquet", "na_values": []}))
    store = Store(("churn",))
    store.get("churn").loaded = load_version("churn", SimpleNamespace(version="6", tags={}, run_id="r"),
                                             lambda _uri: scorer, kind="table")
    with TestClient(create_app(ServeConfig(reload_interval=0, use_cases=("churn",)), store)) as typed:
        reply = post(typed, "churn", [{**ROW, "contract": "NA"}])  # from a Parquet source: a category
        assert reply.status_code == 422 and "unknown category 'NA'" in reply.json()["detail"][0]["msg"]
        assert post(typed, "churn", [{**ROW, "region": "NA", "contract": ""}]).status_code == 200


@pytest.mark.parametrize("far", ["9999-12-31", "0001-01-01", "2262-04-12T00:00:00"])
def test_serving_refuses_a_date_the_model_cannot_hold_naming_the_field(client, far: str) -> None:
    reply = post(client, "churn", [ROW, {**ROW, "signup_date": far}])
    assert reply.status_code == 422
    detail = reply.json()["detail"][0]
    assert detail["loc"] == ["body", "rows", 1, "signup_date"] and "1677-09-21..2262-04-11" in detail["msg"]


def test_the_kind_provides_every_part() -> None:
    required = {"serving": ("DEFAULT_THRESHOLD", "prepare", "body_limit", "add_routes"),
                "batch": ("NEEDS_THRESHOLD", "OUTPUTS", "outputs", "inputs", "validate", "score"),
                "drift": ("detect", "load_batch", "make_batch")}
    for part, names in required.items():
        module = kinds.part("table", part)
        assert all(hasattr(module, n) for n in names), (part, names)


# --- batch ---------------------------------------------------------------------------------------


def raw_rows(n: int = 60, seed: int = 11) -> pd.DataFrame:
    return customers(n, seed=seed).drop(columns=list(TARGETS.values()))


@pytest.mark.parametrize("task", list(NAMES))
def test_batch_scores_raw_csv_by_task(entries, tasks, tmp_path: Path, task: str) -> None:
    cfg, _, scorer = tasks[task]
    frame = raw_rows().astype(object)
    frame.loc[1, "tenure_months"] = "abc"
    frame.loc[2, "monthly_charges"] = "inf"
    frame.loc[3, "contract"] = "lifetime"  # policy reject
    frame.loc[4, "region"] = "atlantis"  # policy other: scored
    frame.loc[5, "senior"] = "maybe"
    frame.loc[6, "signup_date"] = "not a date"
    frame.loc[7, "monthly_charges"] = None  # missing: imputed, scored
    frame.loc[8, "tenure_months"] = "NA"  # missing as the source's reader reads it: scored
    source = write_csv(frame, tmp_path / "in.csv")
    model = batch.Model(NAMES[task], "table", "3", None, scorer, THRESHOLD if task == "binary" else None)
    result = batch.score_file(NAMES[task], source, tmp_path / "out.parquet", model=model, progress=False)
    out, rejects = pd.read_parquet(tmp_path / "out.parquet"), pd.read_parquet(tmp_path / "out.rejects.parquet")
    assert (result.scored, result.rejected) == (55, 5)
    assert rejects.set_index("row")["column"].to_dict() == {1: "tenure_months", 2: "monthly_charges", 3: "contract",
                                                          5: "senior", 6: "signup_date"}
    assert "not a number: 'abc'" in rejects["reason"].iloc[0] and "known: monthly, yearly" in rejects["reason"].iloc[2]
    outputs = kinds.part("table", "batch").outputs(model)
    assert list(out.columns) == ["row", "Unnamed: 0", "customer_id", "comment", "country", "model", "version",
                                 *outputs]
    if task == "binary":
        assert outputs == ("label", "probability", "threshold")
        assert (out["label"] == np.where(out["probability"] >= THRESHOLD, "yes", "no")).all()
    elif task == "multiclass":
        columns = [f"p_{c}" for c in cfg.classes]
        assert outputs == ("label", *columns) and set(columns) == {"p_basic", "p_plus", "p_premium"}
        probs = out[columns].to_numpy()
        assert np.allclose(probs.sum(1), 1) and (out["label"] == np.array(cfg.classes)[probs.argmax(1)]).all()
    else:
        assert outputs == ("value",) and np.isfinite(out["value"]).all()
    clean = raw_rows().drop(index=[1, 2, 3, 5, 6])
    clean.loc[4, "region"], clean.loc[7, "monthly_charges"], clean.loc[8, "tenure_months"] = "atlantis", None, None
    expected = np.asarray(scorer.predict(clean)).reshape(len(clean), -1)[:, 0]  # multiclass: classes[0]
    got = out[outputs[1] if task != "regression" else "value"]  # binary P(classes[1]); multiclass P(classes[0])
    assert np.allclose(got.to_numpy(), expected)


def test_batch_refuses_an_input_column_named_like_an_output(tasks, tmp_path: Path) -> None:
    frame = raw_rows().assign(p_basic=1)
    model = batch.Model("plans", "table", "3", None, tasks["multiclass"][2], None)
    with pytest.raises(batch.BatchError, match="p_basic"):
        batch.score_file("plans", write_csv(frame, tmp_path / "in.csv"), tmp_path / "out.csv", model=model)


def test_batch_rejects_dates_a_model_cannot_hold(entries, tasks, tmp_path: Path) -> None:
    frame = raw_rows(10)
    frame.loc[2, "signup_date"], frame.loc[5, "signup_date"] = "9999-12-31", "0001-01-01"
    model = batch.Model("churn", "table", "3", None, tasks["binary"][2], THRESHOLD)
    result = batch.score_file("churn", write_csv(frame, tmp_path / "in.csv"), tmp_path / "out.parquet", model=model)
    rejects = pd.read_parquet(tmp_path / "out.rejects.parquet").set_index("row")
    assert (result.scored, result.rejected) == (8, 2)
    assert rejects["column"].to_dict() == {2: "signup_date", 5: "signup_date"}
    assert rejects["reason"].str.contains("outside 1677-09-21..2262-04-11").all()


SOURCE_READ = {"format": "csv", "delimiter": ";", "encoding": "cp1252", "header": True, "na_values": ["", "-"]}


def day_first_scorer(tasks) -> tuple:
    """(config, scorer) of the binary task with ``signup_date`` recorded as read with %d/%m/%Y."""
    cfg = copy.deepcopy(tasks["binary"][0])
    cfg.columns["signup_date"].format = "%d/%m/%Y"
    return cfg, fit_scorer(cfg, tasks["binary"][1]["train"])


def test_batch_and_drift_read_files_as_the_source_was_read(entries, tasks, tmp_path: Path) -> None:
    cfg, scorer = day_first_scorer(tasks)
    write_entry(entries, "churn", "table", entry_config(cfg, tmp_path / "prepared" / "churn", read=SOURCE_READ))
    raw = raw_rows(40)
    expected = scorer.predict(raw)  # ISO dates, numbers
    dates = pd.to_datetime(raw["signup_date"]).dt.strftime("%d/%m/%Y")
    text = raw.astype(object).assign(signup_date=dates, comment="café crème", monthly_charges=[
        "-" if pd.isna(v) else str(v).replace(".", ",") for v in raw["monthly_charges"]])
    text = text.rename(columns={"tenure_months": " tenure_months "})  # blanks around a header
    files = {".csv": tmp_path / "in.csv", ".tsv": tmp_path / "in.tsv", ".jsonl": tmp_path / "in.jsonl",
             ".parquet": tmp_path / "in.parquet"}
    text.to_csv(files[".csv"], sep=";", index=False, encoding="cp1252")
    text.to_csv(files[".tsv"], sep="\t", index=False, encoding="cp1252")
    typed = raw.assign(signup_date=dates, comment="café crème")
    typed.to_json(files[".jsonl"], orient="records", lines=True, force_ascii=False)
    typed.to_parquet(files[".parquet"], index=False)
    model = batch.Model("churn", "table", "3", None, scorer, THRESHOLD)
    for suffix, path in files.items():
        result = batch.score_file("churn", path, tmp_path / f"out{suffix}.parquet", model=model, progress=False)
        out = pd.read_parquet(tmp_path / f"out{suffix}.parquet")
        assert result.rejected == 0, (suffix, pd.read_parquet(tmp_path / f"out{suffix}.rejects.parquet"))
        assert np.allclose(out["probability"], expected), suffix
        assert (out["comment"] == "café crème").all(), suffix
    current = drift.load_batch("table", files[".csv"], cfg.features(), entry="churn")
    assert current["monthly_charges"].isna().sum() == raw["monthly_charges"].isna().sum()
    report = drift.detect("table", tasks["binary"][1]["train"], current, scorer=scorer, use_case="churn")
    assert not any("did not parse" in n for n in report.notes), report.notes
    with pytest.raises(drift.DriftInputError, match="not utf-8 text"):  # without the entry: UTF-8
        drift.load_batch("table", files[".tsv"], cfg.features())
    with pytest.raises(drift.DriftInputError, match="missing column"):  # ... and commas
        drift.load_batch("table", write_csv(raw, tmp_path / "semi.csv", sep=";"), cfg.features())


def test_na_text_is_missing_only_where_the_source_read_it_so(entries, tasks, tmp_path: Path) -> None:
    cfg, _, scorer = tasks["binary"]
    frame = raw_rows(10)
    frame.loc[1, "contract"], frame.loc[2, "region"] = "NA", "NA"
    frame.loc[3, "contract"] = "N/A"  # not one of the entry's tokens: a value (unknown: rejected)
    model = batch.Model("churn", "table", "3", None, scorer, THRESHOLD)
    files = [write_csv(frame, tmp_path / "in.csv"), tmp_path / "in.parquet"]
    frame.to_parquet(files[1], index=False)
    for path in files:  # a CSV source's reader read "NA" as missing: so does any input format
        result = batch.score_file("churn", path, tmp_path / f"a{path.suffix}", model=model)
        assert (result.scored, result.rejected) == (9, 1), path
    write_entry(entries, "churn", "table", entry_config(cfg, tmp_path, read={"format": "parquet", "na_values": []}))
    for path in files:  # from a Parquet source "NA" is a value: an unknown contract is rejected
        result = batch.score_file("churn", path, tmp_path / f"b{path.suffix}", model=model)
        rejects = pd.read_parquet(tmp_path / "b.rejects.parquet").set_index("row") if path.suffix == ".parquet" \
            else pd.read_csv(tmp_path / "b.rejects.csv").set_index("row")
        assert (result.scored, result.rejected) == (8, 2) and rejects["column"].to_dict() == {1: "contract",
                                                                                              3: "contract"}
        assert "unknown category 'NA'" in rejects.loc[1, "reason"], path


def test_a_target_named_like_an_output_is_left_out_of_the_input(entries, tasks, tmp_path: Path) -> None:
    cfg, _, scorer = tasks["binary"]
    model = batch.Model("churn", "table", "3", None, scorer, THRESHOLD)
    frame = raw_rows(20).assign(label="yes")  # a labelled file, its target named `label`
    write_entry(entries, "churn", "table", entry_config(cfg, tmp_path / "p", target="label"))
    result = batch.score_file("churn", write_csv(frame, tmp_path / "in.csv"), tmp_path / "out.parquet", model=model)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert result.scored == 20 and list(out.columns).count("label") == 1
    assert (out["label"] == np.where(out["probability"] >= THRESHOLD, "yes", "no")).all()  # the decision
    write_entry(entries, "churn", "table", entry_config(cfg, tmp_path / "p"))  # target `churned`
    with pytest.raises(batch.BatchError, match="label"):  # not the target: a clash, refused as before
        batch.score_file("churn", tmp_path / "in.csv", tmp_path / "out2.parquet", model=model)
    batch.score_file("churn", write_csv(raw_rows(5).assign(churned="no"), tmp_path / "b.csv"),
                     tmp_path / "out3.parquet", model=model)
    assert (pd.read_parquet(tmp_path / "out3.parquet")["churned"] == "no").all()  # passes through, like an id


# --- drift ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", list(NAMES))
def test_no_drift_between_train_and_test(tasks, task: str) -> None:
    cfg, splits, scorer = tasks[task]
    report = drift.detect("table", splits["train"], splits["test"], scorer=scorer, use_case=NAMES[task])
    assert not report.drifted, report.markdown()
    names = {s.name for s in report.signals}
    assert {"tenure_months", "region", "senior"} <= names and "signup_date" not in names
    assert ("predicted_classes" if task == "multiclass" else "prediction") in names
    assert any("signup_date" in n for n in report.notes)


def test_a_shifted_batch_drifts(entries, tasks, tmp_path: Path) -> None:
    cfg, splits, scorer = tasks["binary"]
    calm = drift.load_batch("table", drift.make_batch("churn", tmp_path, rows=400, drift=0.0, seed=1),
                            cfg.features())
    shifted_path = drift.make_batch("churn", tmp_path, rows=400, drift=1.0, seed=1)
    shifted = drift.load_batch("table", shifted_path, cfg.features())
    assert "churned" not in shifted.columns and "_row_hash" not in shifted.columns
    assert not drift.detect("table", splits["train"], calm, scorer=scorer).drifted
    report = drift.detect("table", splits["train"], shifted, scorer=scorer)
    assert report.drifted, report.markdown()
    drifted = {s.name for s in report.signals if s.drifted}
    assert {"tenure_months", "monthly_charges", "region"} <= drifted, report.markdown()


def test_make_batch_draws_distinct_rows_from_every_split(entries, tasks, tmp_path: Path) -> None:
    _, splits, _ = tasks["binary"]
    frame = pd.read_parquet(drift.make_batch("churn", tmp_path, rows=2000, drift=0.0, seed=4))
    assert len(frame) == 2000 and frame["customer_id"].is_unique  # without replacement: no echo of a row
    drawn = set(frame["customer_id"])
    assert all(drawn & set(split["customer_id"]) for split in splits.values())  # train, val and test pooled
    with pytest.warns(UserWarning, match="3,000"):
        capped = drift.make_batch("churn", tmp_path, rows=5000, drift=0.0, seed=4)
    assert len(pd.read_parquet(capped)) == 3000 and capped.name == "churn-n3000-drift0.00-seed4.parquet"


def test_drift_reads_raw_csv_batches(entries, tasks, tmp_path: Path) -> None:
    cfg, splits, scorer = tasks["multiclass"]
    frame = raw_rows(300)
    frame.loc[frame.index[:150], "region"] = "atlantis"  # a new category floods in
    path = write_csv(frame, tmp_path / "batch.csv")
    current = drift.load_batch("table", path, cfg.features())
    report = drift.detect("table", splits["train"], current, scorer=scorer, features=cfg.features())
    region = next(s for s in report.signals if s.name == "region")
    assert region.drifted and "(other)" in region.detail
    assert not next(s for s in report.signals if s.name == "tenure_months").drifted
    with pytest.raises(drift.DriftInputError, match="contract"):
        drift.load_batch("table", write_csv(frame.drop(columns=["contract"]), tmp_path / "b.csv"), cfg.features())
    assert drift.entry_features("plans") == cfg.features()


def test_drift_without_a_scorer_reads_roles_from_the_reference(tasks) -> None:
    cfg, splits, _ = tasks["binary"]
    report = drift.detect("table", splits["train"], splits["val"], features=cfg.features())
    assert {s.name for s in report.signals} == {"tenure_months", "monthly_charges", "region", "contract",
                                                "paperless", "senior"}
