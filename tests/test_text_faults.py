"""Bad input for the ``text`` kind, as users bring it: each case is refused (or, where the data is
still honest, read with a note) in one line that names the file and what is wrong, values quoted
short, and nothing is written or prepared.

Most cases call ``deepflow new`` (``--no-dvc``), the entry's prepare stage and the ``nlp``-style
prepare stage (``--src FILE --out DIR``) on tiny files; the data-contract cases (an unknown label,
a huge text in a new data version) go through the prepare stage and ``deepflow validate`` (slow).
"""

from __future__ import annotations

import codecs
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from deepflow import batch, tracking, usecase
from deepflow.cli import app
from deepflow.kinds.table.read import TableError
from deepflow.kinds.text import prepare as stage
from deepflow.kinds.text.new import read_source
from deepflow.kinds.text.prepare import PrepareParams, prepare, prepare_entry
from deepflow.problems import quote
from tests import faults
from tests.faults import crashed_not, csv_text, make_entry, next_version, nothing_written, runner, write
from tests.nlp_toy import toy_frame

HUGE = 5_000_000  # characters of the one huge cell (a 5 MB message)
SHORT = 1_000  # an error line quoting it stays under this
TSV = PrepareParams()  # the nlp entry's layout: label<TAB>text, no header
CSV = PrepareParams(sep=",", header=True, text_column="text", label_column="label")


def texts(n_per_class: int = 40) -> pd.DataFrame:
    return toy_frame(n_per_class=n_per_class)


def new(name: str, path: Path, *args: str, code: int = 2) -> str:
    """``deepflow new --kind text`` as a user types it; its output as one line."""
    return faults.new(name, path, "--kind", "text", *args, code=code)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The entry file of ``topics``, made once by ``deepflow new`` from good texts (the cases point
    its ``source`` at a new version of the data)."""
    from deepflow.kinds.text.new import create

    return make_entry(tmp_path_factory, "topics", create, csv_text(texts()))


# --- reading the file --------------------------------------------------------------------------


def test_encodings_utf8_bom_and_utf16_are_read_latin1_with_a_warning(tmp_path: Path) -> None:
    frame = texts(10).assign(text=lambda f: f["text"] + " café")
    expected, _, _, _ = read_source(write(tmp_path / "utf8.csv", csv_text(frame)))
    bom, _, _, _ = read_source(write(tmp_path / "bom.csv", codecs.BOM_UTF8 + csv_text(frame).encode()))
    utf16, read16, _, _ = read_source(write(tmp_path / "utf16.csv", csv_text(frame).encode("utf-16")))
    assert list(bom.columns) == ["text", "label"] and bom.equals(expected)
    assert read16.encoding == "utf-16" and utf16.equals(expected)
    latin, read, notes, _ = read_source(write(tmp_path / "latin.csv", csv_text(frame).encode("latin-1")))
    assert read.encoding == "cp1252" and latin["text"].str.endswith(" café").all()
    assert any(n.startswith("warning: latin.csv is not UTF-8") for n in notes), notes


@pytest.mark.parametrize(("content", "said"), [
    ("", "the file is empty"),
    ("text,label\n", "no rows (only a header?)"),
    (bytes(range(256)) * 50, "not a table (binary content)"),
], ids=["empty", "header-only", "binary"])
def test_a_file_that_is_no_table_is_refused_naming_it(places, content, said: str) -> None:
    path = write(places["in"] / "texts.csv", content)
    assert new("topics", path).startswith(f"error: {path}: {said}")
    assert nothing_written(places, "topics")


def test_a_file_cut_mid_line_is_refused_naming_its_last_line(places) -> None:
    text = csv_text(texts())
    path = write(places["in"] / "texts.csv", text[:-12])  # the label and the text's end are lost
    last = text[:-12].rsplit("\n", 1)[1]
    out = new("topics", path)
    assert out.startswith(f"error: {path}: looks cut off mid-record: its last line ({quote(last)}) has 1 of the 2 "
                          "fields and no line break after it"), out
    assert nothing_written(places, "topics")


def test_a_file_cut_inside_quotes_is_refused(places) -> None:
    path = write(places["in"] / "texts.csv", csv_text(texts()) + '"Rain again today, the forecast sa')
    assert new("topics", path).startswith(f"error: {path}: ends inside a quoted field (opened in record 122 ")


# --- deepflow new: the labels cannot be learned from ----------------------------------------------


def test_a_missing_label_column_names_the_file_and_the_columns(places) -> None:
    path = write(places["in"] / "texts.csv", csv_text(texts()))
    out = new("topics", path, "--target", "sentiment")
    assert out.startswith(f"error: {path}: --target 'sentiment': no such column; the columns are 'text', 'label'")


@pytest.mark.parametrize(("mutate", "said"), [
    (lambda f: f.assign(label="sport"), "one label only ('sport' in column 'label', 120 rows)"),
    (lambda f: f.assign(label=["gossip" if i == 3 else v for i, v in enumerate(f["label"])]),
     "class 'gossip' (1 distinct texts of 1 rows) is too small to appear in train, validation and test"),
], ids=["one-class", "class-of-one"])
def test_labels_that_cannot_be_learned_are_refused_naming_the_file(places, mutate, said: str) -> None:
    path = write(places["in"] / "texts.csv", csv_text(mutate(texts())))
    assert new("topics", path).startswith(f"error: {path}: {said}")
    assert nothing_written(places, "topics")


def test_empty_labels_are_left_out_with_a_note(places) -> None:
    frame = texts()
    frame.loc[[2, 7, 11], "label"] = ""
    out = new("topics", write(places["in"] / "texts.csv", csv_text(frame)), code=0)
    assert "note left out 3 rows without a label" in out
    cfg = usecase.get("topics").cfg
    splits = [pd.read_parquet(usecase.project_path(cfg.prepared_dir) / f"{s}.parquet") for s in stage.SPLITS]
    assert sum(map(len, splits)) == 117 and all(set(s["label"]) == {"weather", "sport", "money"} for s in splits)


def test_duplicates_are_dropped_before_the_split(places) -> None:
    frame = texts()
    doubled = pd.concat([frame, frame, frame.assign(text=frame["text"].str.upper())], ignore_index=True)
    out = new("topics", write(places["in"] / "texts.csv", csv_text(doubled)), code=0)
    assert "texts 360 labelled; 0 empty dropped, 240 exact or near duplicates dropped" in out, out
    cfg = usecase.get("topics").cfg
    splits = {s: pd.read_parquet(usecase.project_path(cfg.prepared_dir) / f"{s}.parquet") for s in stage.SPLITS}
    keys = [set(part["text"].map(stage.dedup_key)) for part in splits.values()]
    assert sum(map(len, keys)) == 120 and not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


def test_a_huge_text_or_label_is_refused_and_quoted_short(places) -> None:
    frame = texts()
    frame.loc[5, "text"] = "word " * (HUGE // 5)
    path = write(places["in"] / "texts.csv", csv_text(frame))
    assert new("topics", path).startswith(f"error: {path}: the text in row 6 (line 7) has {HUGE:,} characters; "
                                          "the limit is 100,000")
    frame = texts()
    frame.loc[5, "label"] = "z" * HUGE
    path = write(places["in"] / "labels.csv", csv_text(frame))
    out = new("topics", path)
    assert out.startswith(f"error: {path}: class {quote('z' * HUGE)} (1 distinct texts"), out[:SHORT]
    assert len(out) < SHORT
    assert nothing_written(places, "topics")


# --- the nlp-style prepare stage (--src FILE --out DIR) -----------------------------------------


def test_swapped_columns_fail_naming_the_file_and_the_likely_swap(tmp_path: Path) -> None:
    src = write(tmp_path / "messages.tsv", texts()[["text", "label"]].to_csv(sep="\t", header=False, index=False))
    with pytest.raises(ValueError) as info:  # a label<TAB>text layout, given text<TAB>label
        prepare(src, tmp_path / "out", TSV)
    message = str(info.value)
    assert message.startswith(f"{src}: the label column '0' has 120 distinct values in 120 rows (e.g. ")
    assert "far too many classes (a label column has 2 to 50); the text column '1' has only 3 distinct" in message
    assert "are the two columns swapped? (text_column, label_column)" in message
    assert len(message) < SHORT and not (tmp_path / "out").exists()


def test_the_prepare_command_says_it_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    src = write(tmp_path / "messages.tsv", texts()[["text", "label"]].to_csv(sep="\t", header=False, index=False))
    monkeypatch.setattr(sys, "argv", ["prepare", "--src", str(src), "--out", str(tmp_path / "out"), "--params", ""])
    with pytest.raises(SystemExit) as info:
        stage.main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(f"error: {src}: the label column '0' has 120 distinct values")
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("frame", "params", "said"), [
    (pd.DataFrame({"text": [f"message number {w}" for w in "abcdef"], "label": ["a", "b"] * 3}), CSV,
     "the val and test splits would be empty (train 6, val 0, test 0 texts, from 6 labelled rows, 6 left after"),
    (texts().assign(label="sport"), CSV, "one label only ('sport' in column 'label', 120 rows)"),
    (texts(), PrepareParams(sep=",", header=True, text_column="text", label_column="topic"),
     "no column 'topic' (text_column 'text', label_column 'topic'); the columns are: 'text', 'label'"),
], ids=["empty-split", "one-label", "missing-column"])
def test_the_prepare_stage_refuses_splits_it_cannot_make(tmp_path: Path, frame, params, said: str) -> None:
    src = write(tmp_path / "texts.csv", csv_text(frame))
    with pytest.raises(ValueError) as info:
        prepare(src, tmp_path / "out", params)
    assert str(info.value).startswith(f"{src}: {said}"), info.value
    assert not (tmp_path / "out").exists()


def test_the_prepare_stage_refuses_a_cut_file_and_latin1(tmp_path: Path) -> None:
    cut = write(tmp_path / "cut.csv", csv_text(texts())[:-9])
    with pytest.raises(ValueError, match=re.escape(f"{cut}: looks cut off mid-record: its last line")):
        prepare(cut, tmp_path / "out", CSV)
    accented = texts().assign(text=lambda f: f["text"] + " café")
    latin = write(tmp_path / "latin.csv", csv_text(accented).encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(f"{latin}: not valid UTF-8 at byte ")):
        prepare(latin, tmp_path / "out", CSV)
    assert not (tmp_path / "out").exists()


# --- the entry's prepare stage: a new version of the data ------------------------------------------


def test_a_new_version_without_the_label_column_fails_naming_file_and_column(made, places, capsys) -> None:
    source = next_version(made, places, texts().rename(columns={"label": "topic"}))
    with pytest.raises(ValueError) as info:
        prepare_entry(usecase.get("topics").cfg, places["data"] / "prepared" / "topics")
    assert str(info.value) == (f"{source}: no column 'label' (the entry's label column) in the data (did its columns "
                               "change?); the columns are: text, topic")
    sys_argv = ["prepare", "topics"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", sys_argv)
        with pytest.raises(SystemExit) as code:
            stage.main()
    assert code.value.code == 2 and capsys.readouterr().err == f"error: {info.value}\n"
    assert not places["data"].exists()


def test_a_new_version_cut_mid_line_fails_the_prepare_stage(made, places) -> None:
    source = next_version(made, places, csv_text(texts())[:-9])
    with pytest.raises(TableError, match=re.escape(f"{source}: looks cut off mid-record")):
        prepare_entry(usecase.get("topics").cfg, places["data"] / "prepared" / "topics")
    assert not places["data"].exists()


# --- the data contract on a new version (deepflow validate) --------------------------------------


@pytest.mark.slow  # Great Expectations: seconds to import
@pytest.mark.parametrize(("mutate", "column", "shown"), [
    (lambda f: f.assign(label=["gossip" if i % 7 == 0 else v for i, v in enumerate(f["label"])]), "label", "gossip"),
    (lambda f: f.assign(text=["word " * 200_000 if i == 4 else v for i, v in enumerate(f["text"])]), "text", "word"),
], ids=["unknown-label", "huge-text"])
def test_a_new_version_breaking_the_contract_fails_validation(store, made, places, mutate, column: str,
                                                              shown: str) -> None:
    next_version(made, places, mutate(texts()))
    uc = usecase.get("topics")
    prepare_entry(uc.cfg, uc.prepared_dir)
    result = runner.invoke(app, ["validate", "topics"])
    out = " ".join(result.output.split())
    assert result.exit_code == 1 and crashed_not(result), out
    error = [line for line in result.output.splitlines() if line.startswith("error: ")][-1]
    assert error.startswith("error: validation of 'topics.data' failed") and len(error) < 2 * SHORT, error[:2 * SHORT]
    report = (places["reports"] / "topics" / "validation.md").read_text()
    assert any(f"column {column!r}" in line and shown in line and re.search(r"(train|val|test):\d+", line)
               for line in report.splitlines()), report[:4000]
    assert len(report) < 50_000 and tracking.version_by_alias("topics", tracking.CHAMPION) is None


# --- batch scoring input ----------------------------------------------------------------------


def _model() -> batch.Model:
    return batch.Model(name="no-such-entry", kind="text", version="1", alias=None, scorer=None, threshold=None)


def test_batch_refuses_a_folder_for_a_text_model(tmp_path: Path) -> None:
    folder = tmp_path / "inputs"
    folder.mkdir()
    texts(5).to_parquet(folder / "scored.parquet")  # an old output: never read as input
    with pytest.raises(batch.BatchError, match=re.escape(f"{folder}: a folder; no-such-entry (a text entry) scores "
                                                         "a file, not a folder")):
        batch.open_input(_model(), folder, 100)


def test_batch_names_a_truncated_parquet_file(tmp_path: Path) -> None:
    whole = tmp_path / "whole.parquet"
    texts(20).to_parquet(whole)
    cut = write(tmp_path / "cut.parquet", whole.read_bytes()[: len(whole.read_bytes()) // 2])
    with pytest.raises(batch.BatchError, match=re.escape(f"{cut}: not a readable Parquet file: ")):
        batch.open_input(_model(), cut, 100)


# --- the whole pipeline: nothing registered, no alias moved -------------------------------------


@pytest.mark.slow
def test_deepflow_run_on_a_bad_new_version_registers_nothing(store, made, places) -> None:
    from mlflow import MlflowClient

    next_version(made, places, texts().assign(label=lambda f: f["label"].str.upper()))  # labels respelled
    uc = usecase.get("topics")
    prepare_entry(uc.cfg, uc.prepared_dir)
    result = runner.invoke(app, ["run", "topics", "--set", "train.epochs=1"])
    out = " ".join(result.output.split())
    assert result.exit_code == 1 and crashed_not(result), out
    assert "column 'label'" in out and "WEATHER" in out, out
    assert MlflowClient().search_model_versions("name='topics'") == []
    assert tracking.version_by_alias("topics", tracking.CHAMPION) is None
