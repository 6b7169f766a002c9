"""Bad input for the ``table`` kind, as users bring it: each case is refused (or, where the data is
still honest, read with a note) in one line that names the file and what is wrong, values quoted
short, and nothing is written, prepared or registered.

Most cases call the reader, ``deepflow new``'s front door and the prepare stage on tiny files; the
data-contract cases (an infinite value, a file appended to itself in a new data version) go
through the prepare stage and ``deepflow validate``; one case goes through ``deepflow run``
(slow) to show that a refused version registers nothing and moves no alias.
"""

from __future__ import annotations

import codecs
import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from deepflow import batch, tracking, usecase
from deepflow.cli import app
from deepflow.kinds.table.prepare import main as prepare_main
from deepflow.kinds.table.prepare import prepare
from deepflow.kinds.table.read import TableError, read_table
from deepflow.problems import clip, listing, quote
from tests.faults import crashed_not, csv_text, make_entry, new, next_version, nothing_written, runner, write
from tests.tables import customers

COLUMNS = ["customer_id", "tenure_months", "monthly_charges", "region", "senior", "churned"]
HUGE = 5_000_000  # characters of the one huge cell (a 5 MB message pasted into a field)
SHORT = 1_000  # an error line quoting it stays under this


def table(n: int = 300) -> pd.DataFrame:
    return customers(n)[COLUMNS]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The entry file of ``churn``, made once by ``deepflow new`` from good data (the cases point
    its ``source`` at a new version of the data)."""
    from deepflow.kinds.table.new import create

    return make_entry(tmp_path_factory, "churn", create, csv_text(table()), target="churned")


@pytest.fixture
def entry(made: Path):
    cfg = usecase.resolve_config(usecase.read_entry(made))
    assert cfg.columns["monthly_charges"].role == "numeric" and cfg.columns["senior"].role == "boolean"
    return cfg


# --- the quoting helpers every message uses ----------------------------------------------------


def test_quoting_helpers_cut_values_and_lists() -> None:
    assert quote("churn") == "'churn'" and clip("short") == "short"
    long = quote("y" * HUGE)
    assert long.startswith("'yyyy") and long.endswith(f"... (+{HUGE - 60:,} characters)") and len(long) < 120
    assert listing([f"c{i}" for i in range(25)]) == "c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 (+15 more)"
    assert listing(["a", "b"], quoted=True) == "'a', 'b'"


# --- reading the file --------------------------------------------------------------------------


def test_encodings_utf8_bom_and_utf16_are_read_latin1_with_a_warning(tmp_path: Path) -> None:
    good = table(40).assign(region="séville")
    expected, _, _ = read_table(write(tmp_path / "utf8.csv", csv_text(good)))
    bom, _, _ = read_table(write(tmp_path / "bom.csv", codecs.BOM_UTF8 + csv_text(good).encode()))
    utf16, cfg16, _ = read_table(write(tmp_path / "utf16.csv", csv_text(good).encode("utf-16")))  # with a BOM
    assert list(bom.columns) == COLUMNS and bom.equals(expected)
    assert cfg16.encoding == "utf-16" and utf16.equals(expected)
    latin, cfg, notes = read_table(write(tmp_path / "latin.csv", csv_text(good).encode("latin-1")))
    assert cfg.encoding == "cp1252" and set(latin["region"]) == {"séville"}
    assert any(n.startswith("warning: latin.csv is not UTF-8") for n in notes), notes


@pytest.mark.parametrize(("content", "said"), [
    ("", "the file is empty"),
    ("\n\n  \n", "the file is empty (only blank lines)"),
    (",".join(COLUMNS) + "\n", "no rows (only a header?)"),
    (bytes(range(256)) * 50, "not a table (binary content)"),
    (b"PK\x03\x04" + bytes(200), "not a table: a zip archive (an Excel .xlsx workbook?)"),
], ids=["empty", "blank-lines", "header-only", "binary", "xlsx"])
def test_a_file_that_is_no_table_is_refused_naming_it(tmp_path: Path, content, said: str) -> None:
    path = write(tmp_path / "data.csv", content)
    with pytest.raises(TableError) as info:
        read_table(path)
    assert str(info.value) == f"{path}: {said}" or str(info.value).startswith(f"{path}: {said}")


def test_a_folder_is_refused_as_a_folder(tmp_path: Path) -> None:
    with pytest.raises(TableError, match=re.escape(f"{tmp_path}: a folder; expected a file")):
        read_table(tmp_path)


def test_a_file_cut_mid_line_is_refused_naming_its_last_line(tmp_path: Path) -> None:
    text = csv_text(table(60))
    path = write(tmp_path / "data.csv", text[:-12])  # a copy that stopped in the last record
    last = text[:-12].rsplit("\n", 1)[1]
    with pytest.raises(TableError) as info:
        read_table(path)
    message = str(info.value)
    assert message.startswith(f"{path}: looks cut off mid-record: its last line ({last!r}) has ")
    assert "of the 6 fields and no line break after it" in message


def test_json_lines_cut_mid_record_are_refused_naming_the_last_line(tmp_path: Path) -> None:
    text = table(30).to_json(orient="records", lines=True)
    path = write(tmp_path / "data.jsonl", text.rstrip("\n")[:-25])
    with pytest.raises(TableError, match=re.escape(f"{path}: looks cut off mid-record: its last line ('{{")):
        read_table(path)
    broken = write(tmp_path / "broken.jsonl", text.replace("\n", "\n{oops\n", 1))  # ends well: not a cut
    with pytest.raises(TableError, match=re.escape(f"{broken}: not JSON lines (one object per line): ")):
        read_table(broken)


def test_a_file_cut_inside_quotes_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", csv_text(table(60)) + 'C1,3,20.5,"north')
    with pytest.raises(TableError, match=re.escape(f"{path}: ends inside a quoted field (opened in record 62 ")):
        read_table(path)


def test_complete_files_without_a_final_line_break_are_read(tmp_path: Path) -> None:
    frame, _, _ = read_table(write(tmp_path / "plain.csv", csv_text(table(30)).rstrip("\n")))
    assert len(frame) == 30
    quoted = csv_text(table(30)) + 'C9,1,2.5,"south\nwest",False,no'  # a quoted line break in the last record
    frame, _, _ = read_table(write(tmp_path / "quoted.csv", quoted))
    assert len(frame) == 31 and frame["region"].iloc[-1] == "south\nwest"


@pytest.mark.parametrize("cut", [0.5, 0.99], ids=["half", "last-byte"])
def test_a_truncated_parquet_file_is_refused_naming_it(tmp_path: Path, cut: float) -> None:
    whole = tmp_path / "whole.parquet"
    table(100).to_parquet(whole)
    data = whole.read_bytes()
    path = write(tmp_path / "data.parquet", data[: int(len(data) * cut)])
    with pytest.raises(TableError, match=re.escape(f"{path}: not a readable Parquet file: ")):
        read_table(path)


# --- deepflow new: the data cannot be learned from ------------------------------------------------


def test_missing_target_column_names_the_file_and_lists_columns_shortly(places) -> None:
    wide = table(60)
    for i in range(40):
        wide[f"extra_{i}"] = i
    path = write(places["in"] / "data.csv", csv_text(wide))
    out = new("churn", path, "--target", "churn")
    assert out.startswith(f"error: {path}: --target 'churn' is not a column; did you mean 'churned'? (columns: ")
    assert "... (16 more)" in out and nothing_written(places, "churn")


@pytest.mark.parametrize(("mutate", "said"), [
    (lambda f: f.assign(churned="no"), "the target 'churned' has one value ('no') in every row"),
    (lambda f: f.assign(churned=np.where(np.arange(len(f)) == 3, "maybe", f["churned"])),
     "the target 'churned' has classes with fewer than 5 rows ('maybe': 1)"),
    (lambda f: f.assign(churned=np.where(np.arange(len(f)) % 50 == 4, "", f["churned"])),
     "the target 'churned' is missing in 6 of 300 rows: fill it in, or pass --drop-missing-target"),
], ids=["one-class", "class-of-one", "empty-labels"])
def test_targets_that_cannot_be_learned_are_refused_naming_the_file(places, mutate, said: str) -> None:
    path = write(places["in"] / "data.csv", csv_text(mutate(table())))
    assert new("churn", path, "--target", "churned").startswith(f"error: {path}: {said}")
    assert nothing_written(places, "churn")


def test_a_huge_cell_is_quoted_short(places) -> None:
    frame = table()
    frame.loc[3, "churned"] = "y" * HUGE  # a class of one row, 5 MB long
    path = write(places["in"] / "data.csv", csv_text(frame))
    out = new("churn", path, "--target", "churned")
    assert len(out) < SHORT and "'yyyy" in out and f"(+{HUGE - 60:,} characters)" in out, out[:SHORT]
    assert out.startswith(f"error: {path}: the target 'churned' has classes with fewer than 5 rows")
    huge_name = table().rename(columns={"region": "r" * HUGE})
    path = write(places["in"] / "names.csv", csv_text(huge_name))
    out = new("churn", path, "--target", "churned")
    assert len(out) < SHORT and out.startswith(f"error: {path}: column 4's name has {HUGE:,} characters"), out[:SHORT]
    assert "Pass --no-header" in out and nothing_written(places, "churn")


@pytest.mark.slow  # a 5 MB category goes through the whole inference
def test_a_huge_cell_in_a_feature_is_data_not_an_error(places) -> None:
    frame = table()
    frame.loc[3, "region"] = "x" * HUGE
    path = write(places["in"] / "data.csv", csv_text(frame))
    out = new("churn", path, "--target", "churned", code=0)
    assert len(out) < 20_000 and "next deepflow run churn" in out


# --- the prepare stage: a new version of the data against the entry's schema ---------------------


def _drift(frame: pd.DataFrame, case: str) -> pd.DataFrame:
    frame = frame.copy()
    if case == "missing-column":
        return frame.drop(columns=["region"])
    if case == "missing-target":
        return frame.drop(columns=["churned"])
    if case == "renamed-and-wide":
        frame = frame.rename(columns={"monthly_charges": "charges"})
        return frame.assign(**{f"new_{i}": i for i in range(20)})
    column, row, value = {"text-in-numeric": ("monthly_charges", 5, "abc"),
                          "huge-in-numeric": ("monthly_charges", 7, "9" * 10 + "x" * HUGE),
                          "not-a-boolean": ("senior", 2, "maybe")}[case]
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


@pytest.mark.parametrize(("case", "said"), [
    ("missing-column", "no column 'region' in the data, which the entry lists (did its columns change?); the "
                       "columns are: customer_id, tenure_months, monthly_charges, senior, churned"),
    ("missing-target", "no column 'churned' (the target) in the data, which the entry lists"),
    ("renamed-and-wide", "no column 'monthly_charges' in the data, which the entry lists (did its columns change?); "
                         "the columns are: customer_id, tenure_months, charges, region, senior, churned, new_0, "
                         "new_1, new_2, new_3 (+16 more)"),
    ("text-in-numeric", "column 'monthly_charges' (numeric in the entry) has 1 value that does not read as a number "
                        "(row 6: 'abc'; data rows counted from 1): did the data's type change?"),
    ("huge-in-numeric", "column 'monthly_charges' (numeric in the entry) has 1 value that does not read as a number "
                        f"(row 8: {quote('9' * 10 + 'x' * HUGE)}; data rows counted from 1)"),
    ("not-a-boolean", "column 'senior' (boolean in the entry) has 1 value that does not read as true or false "
                      "(yes/no, 1/0) (row 3: 'maybe'"),
])
def test_schema_drift_fails_the_prepare_stage_naming_file_column_and_rows(entry, tmp_path: Path, case: str,
                                                                         said: str) -> None:
    source = write(tmp_path / "churn-v2.csv", csv_text(_drift(table(), case)))
    out = tmp_path / "prepared"
    with pytest.raises(TableError) as info:
        prepare(dataclasses.replace(entry, source=str(source)), out)
    message = str(info.value)
    assert message.startswith(f"{source}: {said}"), message[:SHORT]
    assert len(message) < SHORT and not out.exists()


def test_a_new_version_cut_mid_line_fails_the_prepare_stage(entry, tmp_path: Path) -> None:
    source = write(tmp_path / "churn-v2.csv", csv_text(table())[:-5])
    with pytest.raises(TableError, match=re.escape(f"{source}: looks cut off mid-record: its last line")):
        prepare(dataclasses.replace(entry, source=str(source)), tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()


def test_the_prepare_stage_command_says_it_in_one_line(made, places, capsys) -> None:
    source = next_version(made, places, table().drop(columns=["senior"]))
    with pytest.raises(SystemExit) as info:
        prepare_main(["churn"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {source}: no column 'senior' in the data") and err.count("\n") == 1
    assert not places["data"].exists()


# --- the data contract on a new version (deepflow validate) --------------------------------------


def _validate(made: Path, places: dict[str, Path], bad: pd.DataFrame) -> tuple[str, str]:
    """``bad`` as the next version of ``churn``, prepared as the stage does, then ``deepflow
    validate``: (its output as one line, the report it wrote)."""
    next_version(made, places, bad)
    uc = usecase.get("churn")
    prepare(uc.cfg, uc.prepared_dir)
    result = runner.invoke(app, ["validate", "churn"])
    assert result.exit_code == 1, result.output
    assert crashed_not(result)
    return " ".join(result.output.split()), (places["reports"] / "churn" / "validation.md").read_text()


@pytest.mark.slow  # Great Expectations: seconds to import
def test_an_infinite_value_fails_validation_naming_column_and_rows(store, made, places) -> None:
    bad = table()
    bad.loc[[4, 9], "monthly_charges"] = [np.inf, -np.inf]
    out, report = _validate(made, places, bad)
    assert "validation of 'churn.data' failed" in out and "'monthly_charges'" in out, out
    assert re.search(r"column 'monthly_charges'.*(train|val|test):\d+", report), report
    assert tracking.version_by_alias("churn", tracking.CHAMPION) is None


@pytest.mark.slow  # Great Expectations: seconds to import
def test_a_file_appended_to_itself_fails_validation_naming_copied_rows(store, made, places) -> None:
    out, report = _validate(made, places, pd.concat([table(), table()], ignore_index=True))
    assert "validation of 'churn.data' failed" in out, out
    copies = [line for line in report.splitlines() if re.search(r"cop(y|ies)|duplicat", line, re.IGNORECASE)]
    assert any(re.search(r"(train|val|test):\d+ = (train|val|test):\d+", line) for line in copies), report


# --- batch scoring input ----------------------------------------------------------------------


def _model(kind: str, **scorer) -> batch.Model:
    return batch.Model(name="no-such-entry", kind=kind, version="1", alias=None, scorer=SimpleNamespace(**scorer),
                       threshold=None)


def test_batch_refuses_a_folder_unless_the_kind_reads_images(tmp_path: Path) -> None:
    folder = tmp_path / "inputs"
    folder.mkdir()
    table(20).to_parquet(folder / "old-output.parquet")  # what a folder read as a dataset picked up
    for kind, scorer in (("table", {"features": ["tenure_months"]}), ("tabular", {"features": ["amount"]})):
        with pytest.raises(batch.BatchError, match=re.escape(f"{folder}: a folder; no-such-entry (a {kind} entry) "
                                                             "scores a file, not a folder")):
            batch.open_input(_model(kind, **scorer), folder, 100)
    columns, total, _ = batch.open_input(_model("detection", classes=["car"]), folder, 100)
    assert columns == [batch.FILE, batch.IMAGE] and total == 1  # a detector's folder of images stays legitimate


def test_batch_names_a_truncated_or_broken_input_file(tmp_path: Path) -> None:
    whole = tmp_path / "whole.parquet"
    table(50).to_parquet(whole)
    cut = write(tmp_path / "cut.parquet", whole.read_bytes()[:-20])
    with pytest.raises(batch.BatchError, match=re.escape(f"{cut}: not a readable Parquet file: ")):
        batch.default_input(cut, 10)
    broken = write(tmp_path / "broken.csv", csv_text(table(50)) + 'C1,2,"open\n')
    columns, _, frames = batch.default_input(broken, 10)
    assert columns == COLUMNS
    with pytest.raises(batch.BatchError, match=re.escape(f"{broken}: not a readable CSV file")):
        list(frames)


def test_a_file_to_score_cut_mid_line_is_refused_as_the_source_would_be(tmp_path: Path) -> None:
    from deepflow.kinds.table.config import ReadConfig
    from deepflow.kinds.table.inputs import InputError, read_chunks

    cut = write(tmp_path / "new-rows.csv", csv_text(table(30))[:-10])
    with pytest.raises(InputError, match=re.escape(f"{cut}: looks cut off mid-record: its last line")):
        read_chunks(cut, ReadConfig(), 100)
    columns, _, frames = read_chunks(write(tmp_path / "whole.csv", csv_text(table(30)).rstrip("\n")), ReadConfig(), 7)
    assert columns == COLUMNS and sum(len(f) for f in frames) == 30


# --- the whole pipeline: nothing registered, no alias moved -------------------------------------


@pytest.mark.slow
def test_deepflow_run_on_bad_data_registers_nothing(store, places) -> None:
    from mlflow import MlflowClient

    bad = table()
    bad.loc[7, "monthly_charges"] = np.inf
    new("churn", write(places["in"] / "churn.csv", csv_text(bad)), "--target", "churned", code=0)
    result = runner.invoke(app, ["run", "churn", "--set", "train.epochs=2"])
    assert result.exit_code == 1, result.output
    assert "monthly_charges" in result.output and crashed_not(result)
    assert MlflowClient().search_model_versions("name='churn'") == []
    assert tracking.version_by_alias("churn", tracking.CHAMPION) is None
