"""The ``table`` kind's front door without training: reading any file a user brings, inferring the
target, task and column roles (with the traps: a 0/1 target, whole-number classes, leaks), the
bad inputs that must be one clear line, and prepare's dtypes and splits."""

from __future__ import annotations

import codecs
import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepflow import config
from deepflow.kinds.table import read as table_read
from deepflow.kinds.table.config import TableConfig
from deepflow.kinds.table.infer import infer
from deepflow.kinds.table.prepare import prepare
from deepflow.kinds.table.read import TableError, read_table
from tests.tables import customers, write_csv

ROLES = {"Unnamed: 0": "id", "customer_id": "id", "tenure_months": "numeric", "monthly_charges": "numeric",
         "region": "categorical", "contract": "categorical", "paperless": "categorical", "senior": "boolean",
         "signup_date": "datetime", "comment": "text", "country": "constant", "plan_next": "categorical",
         "spend_next": "numeric"}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return customers()


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory, table) -> Path:
    return write_csv(table, tmp_path_factory.mktemp("csv") / "customers.csv")


# --- inference -----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["csv", "frame"])
def test_customers_roles_task_metric_and_bounds(source, csv_path, table) -> None:
    frame = read_table(csv_path)[0] if source == "csv" else table
    inf = infer(frame, target="churned")
    assert {c: s.role for c, s in inf.columns.items()} == ROLES
    assert (inf.task, inf.classes, inf.metric, inf.time_column) == ("binary", ["no", "yes"], "roc_auc", "signup_date")
    share = (table["churned"] == "yes").mean()
    lo, hi = inf.class_share["yes"]
    assert lo < share < hi <= 1 and lo >= share / 3 - 1e-3
    monthly = inf.columns["monthly_charges"]
    assert monthly.null_share_max > table["monthly_charges"].isna().mean() and monthly.min == 0.0
    assert monthly.max > table["monthly_charges"].max()
    assert inf.columns["region"].categories == ["north", "south", "east", "west"]  # most frequent first
    assert "leading row index" in inf.columns["Unnamed: 0"].note and "not a feature" in inf.columns["comment"].note
    assert inf.leak_scores and max(inf.leak_scores.values()) < 0.99
    text = "\n".join(inf.lines())
    for word in ("target    churned", "binary", "roc_auc", "signup_date", *ROLES):
        assert word in text


def test_target_inferred_from_names(table) -> None:
    inf = infer(table.drop(columns=["plan_next", "spend_next"]))
    assert inf.target == "churned" and "confidence high" in inf.target_reason
    frame = table[["tenure_months", "region"]].assign(label=table["plan_next"])
    inf = infer(frame)
    assert (inf.target, inf.task) == ("label", "multiclass") and "confidence high" in inf.target_reason
    frame = table[["tenure_months", "region", "monthly_charges"]].assign(is_active=table["churned"] == "no")
    inf = infer(frame)
    assert (inf.target, inf.task, inf.classes[1]) == ("is_active", "binary", "True")
    assert "confidence medium" in inf.target_reason
    inf = infer(frame.assign(is_flagged=0))  # a later is_* column, but with one value: not the target
    assert inf.target == "is_active" and "other candidates: is_flagged" in inf.target_reason


def test_no_target_like_name_asks_for_target(table) -> None:
    with pytest.raises(TableError, match=r"pass --target, one of: tenure_months, region"):
        infer(table[["tenure_months", "region", "monthly_charges"]])


def test_misspelled_target_says_did_you_mean(table) -> None:
    with pytest.raises(TableError, match=r"'churnd' is not a column; did you mean 'churned'\?.*columns: Unnamed: 0"):
        infer(table, target="churnd")


@pytest.mark.parametrize("values", [[0, 1], [0.0, 1.0], ["0", "1"]])
def test_zero_one_target_is_binary_never_regression(table, values) -> None:
    frame = table[["tenure_months", "region"]].assign(y=np.resize(values, len(table)))
    inf = infer(frame, target="y")
    assert (inf.task, inf.classes) == ("binary", ["0", "1"])


def test_regression_or_multiclass_from_values(table) -> None:
    base = table[["tenure_months", "monthly_charges", "region"]]
    rng = np.random.default_rng(0)
    assert infer(base.assign(q=rng.integers(3, 10, len(base))), target="q").task == "multiclass"
    inf = infer(base.assign(q=rng.integers(3, 10, len(base))), target="q")
    assert inf.classes == [str(i) for i in range(3, 10)] and inf.metric == "f1_macro"
    assert infer(base.assign(q=rng.integers(25, 347, len(base))), target="q").task == "regression"
    inf = infer(base.assign(q=table["spend_next"]), target="q")
    assert (inf.task, inf.metric) == ("regression", "r2") and inf.target_min == 0 and inf.target_max > 260
    assert infer(base.assign(q=rng.integers(3, 10, len(base))), target="q", task="regression").task == "regression"
    with pytest.raises(TableError, match="--task regression needs a numeric target"):
        infer(table, target="churned", task="regression")


def test_rare_positive_is_scored_by_auprc(table) -> None:
    frame = table[["tenure_months", "region"]].assign(flag=np.where(np.arange(len(table)) % 10 == 0, "b", "a"))
    inf = infer(frame, target="flag")
    assert inf.classes == ["a", "b"] and inf.metric == "auprc"


def test_leak_is_found_and_excluded(table) -> None:
    rng = np.random.default_rng(0)
    frame = table.assign(churn_score=(table["churned"] == "yes") + rng.normal(0, 0.05, len(table)),
                         spend_copy=table["spend_next"] + rng.normal(0, 0.5, len(table)))
    inf = infer(frame, target="churned")
    assert inf.columns["churn_score"].role == "leak" and "ROC-AUC 1.000" in inf.columns["churn_score"].note
    assert "churn_score" not in inf.features() and inf.columns["spend_copy"].role == "numeric"
    inf = infer(frame, target="spend_next")
    assert inf.columns["spend_copy"].role == "leak" and "R²" in inf.columns["spend_copy"].note
    assert inf.columns["monthly_charges"].role == "numeric"  # related, but no leak
    assert "LEAK spend_copy" in "\n".join(inf.lines())


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.assign(churned="yes"), "one value ('yes') in every row"),
    (lambda f: f.assign(churned=f["churned"].where(f.index % 50 != 0)), "missing in 24 of 1,200 rows"),
    (lambda f: f.assign(churned=np.where(f.index < 3, "maybe", f["churned"])), "fewer than 5 rows"),
    (lambda f: f.assign(churned=f["customer_id"]), "too many classes"),
    (lambda f: f[["country", "churned"]].assign(other=1.0), "no usable feature"),
])
def test_targets_that_cannot_be_learned(table, change, message) -> None:
    with pytest.raises(TableError, match=message.replace("(", r"\(").replace(")", r"\)")):
        infer(change(table), target="churned")


def test_missing_target_rows_can_be_left_out(table) -> None:
    frame = table.assign(churned=table["churned"].where(table.index % 50 != 0))
    inf = infer(frame, target="churned", drop_missing_target=True)
    assert inf.rows == 1176 and any("24 rows without a target" in n for n in inf.notes)


def test_time_column_option(table) -> None:
    with pytest.raises(TableError, match="holds no dates or numbers"):
        infer(table, target="churned", time_column="region")
    assert infer(table, target="churned", time_column="tenure_months").time_column == "tenure_months"
    inf = infer(table.assign(last_seen=table["signup_date"]), target="churned")
    assert inf.time_column == "signup_date" and "named like an event time" in inf.time_reason
    inf = infer(table.assign(renewal_date=table["signup_date"]), target="churned")
    assert inf.time_column is None and "--time-column picks one" in inf.time_reason


# --- reading -------------------------------------------------------------------------------------


def _same(frame: pd.DataFrame, table: pd.DataFrame) -> None:
    assert list(frame.columns) == list(table.columns) and len(frame) == len(table)
    assert frame["customer_id"].tolist() == table["customer_id"].tolist()
    np.testing.assert_allclose(frame["monthly_charges"].to_numpy(float), table["monthly_charges"], equal_nan=True)
    assert frame["senior"].astype(bool).tolist() == table["senior"].tolist()


@pytest.mark.parametrize(("name", "write", "expect"), [
    ("t.tsv", lambda f, p: f.to_csv(p, sep="\t", index=False), {"delimiter": "\t"}),
    ("s.csv", lambda f, p: f.to_csv(p, sep=";", decimal=",", index=False), {"delimiter": ";"}),
    ("p.txt", lambda f, p: f.to_csv(p, sep="|", index=False), {"delimiter": "|"}),
    ("u16.csv", lambda f, p: f.to_csv(p, index=False, encoding="utf-16"), {"encoding": "utf-16"}),
    ("bom.csv", lambda f, p: f.to_csv(p, index=False, encoding="utf-8-sig"), {"encoding": "utf-8-sig"}),
    ("crlf.csv", lambda f, p: f.to_csv(p, index=False, lineterminator="\r\n", quoting=1), {"delimiter": ","}),
    ("t.parquet", lambda f, p: f.to_parquet(p), {"format": "parquet"}),
    ("t.jsonl", lambda f, p: f.to_json(p, orient="records", lines=True), {"format": "jsonl"}),
])
def test_formats_read_alike(tmp_path, table, name, write, expect) -> None:
    write(table, tmp_path / name)
    frame, cfg, notes = read_table(tmp_path / name)
    assert {k: getattr(cfg, k) for k in expect} == expect and not notes
    _same(frame, table)
    assert infer(frame, target="churned").columns["signup_date"].role == "datetime"


def test_latin1_is_read_with_a_warning(tmp_path) -> None:
    lines = ["name,city,amount,label"] + [f"Jörg {i},Köln,{i}.5,{'ja' if i % 3 else 'nee'}" for i in range(30)]
    (tmp_path / "l.csv").write_bytes("\n".join(lines).encode("latin-1"))
    frame, cfg, notes = read_table(tmp_path / "l.csv")
    assert cfg.encoding == "cp1252" and frame["city"].iloc[0] == "Köln"
    assert any("not UTF-8" in n for n in notes)


def test_quoted_fields_with_delimiters_and_newlines(tmp_path) -> None:
    rows = ["a,b,label"] + [f'"x, {i}","line\r\nbreak",{i % 2}' for i in range(20)]
    (tmp_path / "q.csv").write_bytes("\r\n".join(rows).encode())
    frame = read_table(tmp_path / "q.csv")[0]
    assert frame.shape == (20, 3) and frame["a"].iloc[3] == "x, 3"


@pytest.mark.parametrize(("content", "message"), [
    (b"", "the file is empty"),
    (b"\n \n", "the file is empty"),
    (bytes(range(256)) * 40, "not a table (binary content)"),
    (b"PK\x03\x04" + b"\x00" * 100, "export the sheet as CSV"),
    (b"a:b:c\n" + b"1:2:3\n" * 20, "found a single column (first line: 'a:b:c'); is the delimiter"),
    (b"a,b,label\n1,2,yes\n", "only 1 row"),
    (b"a,b,label\n", "no rows"),
    (b"a,b,c\n" + b"1,2,3\n" * 20 + b"1,2,3,4\n", "not a well-formed table"),
])
def test_bad_files_are_one_line(tmp_path, content, message) -> None:
    (tmp_path / "bad.csv").write_bytes(content)
    with pytest.raises(TableError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        read_table(tmp_path / "bad.csv")
    assert "\n" not in str(info.value)


def test_no_header_gets_column_names(tmp_path) -> None:
    (tmp_path / "n.csv").write_text("".join(f"{i},{i * 2.5},{'a' if i % 2 else 'b'}\n" for i in range(20)))
    frame, cfg, _ = read_table(tmp_path / "n.csv")
    assert not cfg.header and list(frame.columns) == ["column_1", "column_2", "column_3"] and len(frame) == 20


def test_large_files_are_sampled_in_chunks(tmp_path, csv_path, table, monkeypatch) -> None:
    frame, cfg, notes = read_table(csv_path, max_rows=100)
    assert len(frame) == 100 and cfg.max_rows == 100 and "sampled 100 of 1,200 rows" in notes[0]
    assert frame["Unnamed: 0"].is_monotonic_increasing  # file order kept
    monkeypatch.setattr(table_read, "CHUNK_ROWS", 70)  # many chunks, pruned while streaming
    again = read_table(csv_path, max_rows=100)[0]
    pd.testing.assert_frame_equal(frame, again)
    extra = customers(600, seed=9).assign(customer_id=lambda f: "N" + f["customer_id"])
    grown = write_csv(pd.concat([table, extra]), tmp_path / "grown.csv")
    kept = read_table(grown, max_rows=150)[0]["customer_id"]
    assert frame["customer_id"].isin(kept).mean() >= 0.8  # a content-hash sample keeps its rows as the file grows


# --- prepare -------------------------------------------------------------------------------------


def _config(path: Path, table: pd.DataFrame, target: str = "churned", **changes) -> TableConfig:
    frame, read_cfg, _ = read_table(path)
    mapping = infer(frame, target=target, read=read_cfg).to_entry("t", str(path), str(path.parent / "out"), 300)
    mapping["config"].update(changes)
    return config.load_mapping(TableConfig, mapping["config"])


def _splits(out: Path) -> dict[str, pd.DataFrame]:
    return {s: pd.read_parquet(out / f"{s}.parquet") for s in ("train", "val", "test")}


def test_prepare_dtypes_and_time_split(tmp_path, csv_path, table) -> None:
    cfg = _config(csv_path, table)
    counts = prepare(cfg, tmp_path / "out")
    assert counts == {"rows": 1200, "train": 840, "val": 180, "test": 180}
    parts = _splits(tmp_path / "out")
    train = parts["train"]
    kept = [c for c, r in ROLES.items() if r in ("id", "numeric", "boolean", "categorical", "datetime")]
    assert list(train.columns) == [*kept, "churned", "_row_hash"]
    assert train["monthly_charges"].dtype == "float64" and train["monthly_charges"].isna().any()
    assert set(train["senior"].unique()) <= {0.0, 1.0} and train["senior"].dtype == "float64"
    assert str(train["signup_date"].dtype) == "datetime64[ns]"
    assert train["Unnamed: 0"].iloc[0].isdigit() and train["region"].map(type).eq(str).all()
    assert set(train["churned"]) == {"no", "yes"} and train["_row_hash"].str.len().eq(16).all()
    assert parts["train"]["signup_date"].max() <= parts["val"]["signup_date"].min()
    assert parts["val"]["signup_date"].max() <= parts["test"]["signup_date"].min()
    assert parts["test"]["signup_date"].is_monotonic_increasing


def test_hash_split_is_stratified_and_stable_as_rows_are_added(tmp_path, table) -> None:
    table = table.assign(churned=np.where(table.index < 6, "maybe", table["churned"]))
    first = write_csv(table, tmp_path / "a" / "t.csv")
    cfg = _config(first, table, time_column=None)
    prepare(cfg, tmp_path / "a" / "out")
    before = _splits(tmp_path / "a" / "out")
    for part in before.values():
        assert set(part["churned"]) == {"no", "yes", "maybe"}  # every class in every split, even 6 rows
    extra = customers(300, seed=11).assign(customer_id=lambda f: "N" + f["customer_id"])
    grown = write_csv(pd.concat([table, extra], ignore_index=True).assign(**{"Unnamed: 0": range(1500)}),
                      tmp_path / "b" / "t.csv")
    prepare(dataclasses.replace(cfg, source=str(grown)), tmp_path / "b" / "out")  # the same entry, more rows
    after = _splits(tmp_path / "b" / "out")
    where = {h: s for s, part in after.items() for h in part["_row_hash"]}
    moved = [h for s, part in before.items() for h in part["_row_hash"] if where[h] != s]
    assert len(moved) < 0.05 * len(table)
    hashes = pd.concat([p["_row_hash"] for p in after.values()])
    assert len(hashes) == 1500


def test_prepare_missing_target_and_duplicates(tmp_path, table) -> None:
    dup = pd.concat([table, table.iloc[:40]], ignore_index=True).assign(**{"Unnamed: 0": range(1240)})
    dup = dup.drop(columns=["customer_id"])
    dup["churned"] = dup["churned"].where(dup.index != 7)
    path = write_csv(dup, tmp_path / "d.csv")
    frame, read_cfg, _ = read_table(path)
    mapping = infer(frame, target="churned", read=read_cfg, drop_missing_target=True).to_entry(
        "t", str(path), str(tmp_path / "out"), 300)
    mapping["config"]["time_column"] = None
    cfg = config.load_mapping(TableConfig, mapping["config"])
    assert prepare(cfg, tmp_path / "out")["rows"] == 1240
    parts = _splits(tmp_path / "out")
    assert sum(len(p) for p in parts.values()) == 1239
    seen = [set(p["_row_hash"]) for p in parts.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])  # duplicates share a split
    cfg.drop_missing_target = False
    with pytest.raises(TableError, match="missing in 1 of 1,240 rows"):
        prepare(cfg, tmp_path / "out2")


def test_encodings_and_bom_detection() -> None:
    notes: list[str] = []
    head = codecs.BOM_UTF16_LE + "a,b\n".encode("utf-16-le")
    assert table_read.detect_encoding(Path("x"), head, notes) == "utf-16"
    assert table_read.detect_encoding(Path("x"), "a,b\n1,2\n".encode("utf-16-le"), notes) == "utf-16-le"
    assert table_read.detect_encoding(Path("x"), "é".encode(), notes) == "utf-8" and not notes


# --- the reviewer's front-door defects ------------------------------------------------------------


def _frame(n: int = 60, seed: int = 0, **columns) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n), "label": np.resize(["a", "b"], n), **columns})


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_dates_out_of_the_datetime64_range_are_missing_with_a_note(tmp_path, table, suffix) -> None:
    table = table.assign(signup_date=table["signup_date"].where(~table.index.isin([4, 9])))
    table.loc[4, "signup_date"], table.loc[9, "signup_date"] = "9999-12-31", "0001-01-01"
    path = tmp_path / f"far.{suffix}"
    if suffix == "csv":
        write_csv(table, path)
    else:  # a typed datetime column of microseconds holds years 1 to 9999
        table.assign(signup_date=pd.to_datetime(table["signup_date"]).astype("datetime64[us]")).to_parquet(path)
    frame, read_cfg, _ = read_table(path)
    inf = infer(frame, target="churned", read=read_cfg)
    spec = inf.columns["signup_date"]
    assert spec.role == "datetime" and "2 outside 1677-09-21 .. 2262-04-11" in spec.note
    assert any(n.startswith("signup_date: 2 dates outside") for n in inf.notes)
    cfg = _config(path, table, time_column=None)
    notes: list[str] = []
    prepare(cfg, tmp_path / "out", notes)
    dates = pd.concat(_splits(tmp_path / "out").values())["signup_date"]
    assert dates.isna().sum() == 2 and str(dates.dtype) == "datetime64[ns]"
    assert any(n.startswith("signup_date: 2 dates outside") for n in notes)
    notes = []
    parsed = table_read.parse_datetime(pd.Series(["2021-01-02", "9999-12-31", None], name="d"), notes=notes)
    assert parsed.isna().tolist() == [False, True, True] and notes[0].startswith("d: 1 date outside")


def test_day_first_dates_record_their_format_and_prepare_reads_it(tmp_path, table) -> None:
    day_first = pd.to_datetime(table["signup_date"]).dt.strftime("%d/%m/%Y")
    path = write_csv(table.assign(signup_date=day_first), tmp_path / "eu.csv")
    frame, read_cfg, _ = read_table(path)
    inf = infer(frame, target="churned", read=read_cfg)
    spec = inf.columns["signup_date"]
    assert (spec.role, spec.format) == ("datetime", "%d/%m/%Y") and "day first" in spec.note
    entry = inf.to_entry("t", str(path), str(tmp_path / "out"), 300)["config"]
    assert entry["columns"]["signup_date"]["format"] == "%d/%m/%Y"
    cfg = config.load_mapping(TableConfig, entry)
    assert cfg.columns["signup_date"].format == "%d/%m/%Y"
    # the same entry on rows whose every date also reads month first: still 1 February
    write_csv(table.assign(signup_date=np.resize(["01/02/2021", "03/04/2021", "12/11/2020"], len(table))), path)
    prepare(dataclasses.replace(cfg, time_column=None), tmp_path / "out")
    dates = pd.concat(_splits(tmp_path / "out").values())["signup_date"]
    assert set(dates) == {pd.Timestamp("2021-02-01"), pd.Timestamp("2021-04-03"), pd.Timestamp("2020-11-12")}
    assert infer(read_table(path)[0], target="churned").columns["signup_date"].format == "%m/%d/%Y"
    assert "order is a guess" in infer(read_table(path)[0], target="churned").columns["signup_date"].note
    assert infer(table, target="churned").columns["signup_date"].format == ""  # ISO 8601


def test_missing_value_tokens_are_recorded_and_prepare_uses_them(tmp_path, table) -> None:
    table = table.assign(region=np.where(table["region"] == "west", "NA", table["region"]))  # North America
    path = write_csv(table, tmp_path / "na.csv")
    frame, read_cfg, _ = read_table(path)
    assert read_cfg.na_values == table_read.NA_VALUES
    assert frame["region"].isna().sum() == (table["region"] == "NA").sum()
    entry = infer(frame, target="churned", read=read_cfg).to_entry("t", str(path), str(tmp_path / "out"), 300)
    assert entry["config"]["read"]["na_values"] == table_read.NA_VALUES
    cfg = config.load_mapping(TableConfig, entry["config"])
    cfg.read.na_values = [""]  # the user says "NA" is a region here
    cfg.time_column = None
    prepare(cfg, tmp_path / "out")
    assert "NA" in set(pd.concat(_splits(tmp_path / "out").values())["region"])
    table.to_parquet(tmp_path / "t.parquet")
    table.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    assert read_table(tmp_path / "t.parquet")[1].na_values == [] == read_table(tmp_path / "t.jsonl")[1].na_values


@pytest.mark.parametrize("index", [True, False])
def test_integer_column_names_are_a_header(tmp_path, index) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 13))).assign(target=rng.integers(0, 2, 40))
    frame.to_csv(tmp_path / "ints.csv", index=index)
    read, cfg, _ = read_table(tmp_path / "ints.csv")
    assert cfg.header and list(read.columns)[-3:] == ["11", "12", "target"] and len(read) == 40
    frame.assign(target=np.resize(["yes", "no"], 40)).to_csv(tmp_path / "text.csv", index=index)
    assert read_table(tmp_path / "text.csv")[1].header  # 0, 1, ..., 12 over numbers: positions, a header
    headerless, cfg, _ = read_table(tmp_path / "ints.csv", header=False)
    assert not cfg.header and len(headerless) == 41 and headerless.columns[0] == "column_1"


def test_duplicate_column_names(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table([pa.array(np.arange(20.0))] * 2 + [pa.array(np.resize([0, 1], 20))],
                            names=["a", "a", "label"]), tmp_path / "dup.parquet")
    with pytest.raises(TableError, match="columns named more than once: 'a'; give each column its own name"):
        read_table(tmp_path / "dup.parquet")
    (tmp_path / "dup.csv").write_text("a,a,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(20)))
    frame, _, notes = read_table(tmp_path / "dup.csv")
    assert list(frame.columns) == ["a", "a.1", "label"] and any("'a' (the second is read as 'a.1'" in n for n in notes)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_leading_zero_codes_stay_categorical_text(tmp_path, table, suffix) -> None:
    codes = np.resize(["02134", "02139", "10001", "00501"], len(table))
    path = tmp_path / f"zip.{suffix}"
    write_csv(table.assign(zip=codes), path) if suffix == "csv" else table.assign(zip=codes).to_parquet(path)
    inf = infer(read_table(path)[0], target="churned")
    assert inf.columns["zip"].role == "categorical" and set(inf.columns["zip"].categories) == set(codes)
    cfg = _config(path, table, time_column=None)
    prepare(cfg, tmp_path / "out")
    assert set(_splits(tmp_path / "out")["train"]["zip"]) == set(codes)


def test_target_spelled_in_several_cases_is_folded(tmp_path, table) -> None:
    spelled = np.where(table.index % 2, table["churned"].str.capitalize(), " " + table["churned"] + " ")
    path = write_csv(table.assign(churned=spelled), tmp_path / "cases.csv")
    frame, read_cfg, _ = read_table(path)
    inf = infer(frame, target="churned", read=read_cfg)
    assert (inf.task, inf.classes) == ("binary", ["no", "yes"])
    assert any("4 spellings fold to 2 classes" in n and "'Yes', 'yes' -> 'yes'" in n for n in inf.notes)
    assert "4 spellings fold to 2 classes" in "\n".join(inf.lines())
    prepare(_config(path, table, time_column=None), tmp_path / "out")
    assert set(pd.concat(_splits(tmp_path / "out").values())["churned"]) == {"no", "yes"}


def test_several_target_candidates_are_never_high_confidence(table) -> None:
    rng = np.random.default_rng(0)
    titanic = pd.DataFrame({"survived": rng.integers(0, 2, 200), "pclass": rng.integers(1, 4, 200),
                            "age": rng.uniform(1, 80, 200), "class": rng.choice(["First", "Second", "Third"], 200),
                            "alone": rng.uniform(size=200) < 0.5})
    inf = infer(titanic)
    assert inf.target == "survived" and "confidence medium" in inf.target_reason
    assert "other candidates: class (3 values)" in inf.target_reason
    both = table[["tenure_months", "region"]].assign(label=table["churned"], target=table["churned"])
    assert infer(both).target == "target"  # a tie: the last column
    house = table[["tenure_months", "region"]].assign(is_renovated=table["senior"], price=table["spend_next"])
    assert infer(house).target == "price"  # a medium name before an is_* one, whatever their values


@pytest.mark.parametrize(("values", "task", "message"), [
    (["a", "b"], "multiclass", "--task multiclass needs three or more classes; the target 'label' has two ('a', 'b')"),
    (["a", "b", "c"], "binary", "--task binary needs two values; the target 'label' has 3"),
])
def test_task_that_does_not_fit_the_values(values, task, message) -> None:
    frame = _frame(label=np.resize(values, 60))
    with pytest.raises(TableError, match=re.escape(message)):
        infer(frame, task=task)
