"""``deepflow new`` picks the kind of entry from the data (a folder, a text file, a table), says so
with the inferences, and refuses options of another kind in one line, writing nothing."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from deepflow import newentry
from deepflow.cli import app
from deepflow.kinds import guess

WORDS = ("the quick brown fox jumps over a lazy dog while my friend reads an old book about rivers "
         "and mountains near the small town where we met last summer during the long festival").split()


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(6, 20))).capitalize() + "." for _ in range(n)]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var, sub in (("DEEPFLOW_DATASETS_DIR", "datasets"), ("DEEPFLOW_DATA_DIR", "data"),
                     ("DEEPFLOW_REPORTS_DIR", "reports")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


def test_a_folder_or_its_data_yaml_is_a_detection_dataset(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    assert guess.guess_kind(tmp_path)[:2] == ("detection", tmp_path)
    assert guess.guess_kind(tmp_path / "data.yaml")[:2] == ("detection", tmp_path)


def test_a_labelled_text_file_is_text_and_a_table_is_a_table(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.csv"
    pd.DataFrame({"review": texts(300), "sentiment": ["pos", "neg", "neu"] * 100}).to_csv(reviews, index=False)
    kind, path, why = guess.guess_kind(reviews)
    assert (kind, path) == ("text", reviews) and "review" in why

    table = tmp_path / "table.csv"
    pd.DataFrame({"age": [20 + i % 50 for i in range(300)], "income": [i * 1.5 for i in range(300)],
                  "city": ["a", "b", "c"] * 100, "note": texts(300), "churned": ["yes", "no"] * 150}
                 ).to_csv(table, index=False)
    kind, _, why = guess.guess_kind(table)
    assert kind == "table", why  # free text and three informative columns: a table with a text column


def test_a_large_text_file_is_guessed_from_its_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guess, "GUESS_BYTES", 4096)
    big = tmp_path / "big.tsv"
    big.write_text("".join(f"{label}\t{text}\n" for label, text in zip(["ham", "junk"] * 200, texts(400),
                                                                         strict=True)))
    assert big.stat().st_size > 4096
    assert guess.guess_kind(big)[0] == "text"


@pytest.mark.parametrize("name", ["nothing.csv", "archive.zip"])
def test_a_missing_path_or_an_archive_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".zip"):
        path.write_bytes(b"PK\x03\x04")
    with pytest.raises(newentry.EntryError, match="no such file" if name == "nothing.csv" else "unpack it first"):
        guess.guess_kind(path)


@pytest.mark.parametrize(("args", "message"), [
    (["--kind", "image"], "--kind 'image': one of table, text, detection"),
    (["--kind", "detection", "--time-column", "day"], "--time-column: not an option of a detection entry"),
    (["--img-size", "128"], "--img-size: not an option of a text entry; the kind was guessed: pass --kind"),
    (["--duplicates", "keep"], "--duplicates 'keep': drop or fail"),
])
def test_options_of_another_kind_are_one_line_and_write_nothing(project: Path, args: list[str],
                                                                message: str) -> None:
    reviews = project / "reviews.csv"
    pd.DataFrame({"review": texts(300), "sentiment": ["pos", "neg", "neu"] * 100}).to_csv(reviews, index=False)
    result = CliRunner().invoke(app, ["new", "reviews", "--data", str(reviews), "--no-dvc", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert len(result.output.strip().splitlines()) == 1
    assert not (project / "datasets").exists() and not (project / "data").exists()


def test_a_large_file_is_guessed_from_its_head_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the first MiB is read (a multi-GB file must not be loaded to guess its kind)."""
    body = "text,label\n" + "".join(f"{t},{'ab'[i % 2]}\n" for i, t in enumerate(texts(40_000, seed=3)))
    path = tmp_path / "big.csv"
    path.write_text(body)
    assert path.stat().st_size > guess.GUESS_BYTES
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the whole file was read"))
    assert guess.guess_kind(path)[0] == "text"
