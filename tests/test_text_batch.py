"""Batch scoring for a text entry made by ``deepflow new``: new files look like the one brought
(a TSV without a header, Latin-1, labels included) and are read the way the source was; texts
are cleaned for scoring as they were for training."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepflow import batch
from tests.test_batch import register_champion

GOOD = "a wonderful superb film with a great cast and a lovely story".split()
BAD = "an awful boring film with a terrible plot and a dreadful ending".split()


def reviews(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("pos", "neg")[i % 2]
        words = rng.choices(GOOD if label == "pos" else BAD, k=rng.randint(6, 12))
        rows.append((label, " ".join(words) + f" café {i}"))
    return rows


@pytest.fixture
def entry(store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A text entry from a Latin-1 TSV without a header (label first), with a TF-IDF champion."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from deepflow.kinds.text.new import create
    from deepflow.kinds.text.usecase import TfidfScorer

    for var, sub in (("DEEPFLOW_DATASETS_DIR", "datasets"), ("DEEPFLOW_DATA_DIR", "data"),
                     ("DEEPFLOW_REPORTS_DIR", "reports")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    source = tmp_path / "reviews.tsv"
    source.write_bytes("".join(f"{label}\t{text}\n" for label, text in reviews(200)).encode("latin-1"))
    create("opinions", source, dvc=False, echo=lambda line: None)
    rows = pd.DataFrame(reviews(200), columns=["label", "text"])
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=200)).fit(rows["text"], rows["label"])
    scorer = TfidfScorer(pipe, ["neg", "pos"])
    register_champion("opinions", scorer, rows[["text"]].head(3), {"deepflow.data_version": "test"})
    return scorer


def test_a_file_like_the_source_is_read_as_the_source_was(entry, tmp_path: Path) -> None:
    new = tmp_path / "new.tsv"  # same shape as the source: Latin-1, no header, the label first
    new.write_bytes("pos\tsuperb film, a great cast café\nneg\tawful plot and a terrible ending\nneg\t \n"
                    .encode("latin-1"))
    result = batch.score_file("opinions", new, tmp_path / "out.parquet", progress=False)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert (result.scored, result.rejected) == (2, 1)
    assert list(out["label"]) == ["pos", "neg"]  # the source's label column is not an input
    assert "column_1" not in out.columns


def test_texts_are_cleaned_for_scoring_as_for_training(entry) -> None:
    raw = pd.DataFrame({"text": ["superb&nbsp;film,   a great\n cast", "superb\u00a0film, a great cast"]})
    proba = entry.predict(raw)
    np.testing.assert_allclose(proba[0], proba[1])  # an HTML entity and runs of spaces change nothing


def test_a_file_without_the_text_column_is_one_line(entry, tmp_path: Path) -> None:
    other = tmp_path / "other.parquet"
    pd.DataFrame({"body": ["superb film"]}).to_parquet(other)
    with pytest.raises(batch.BatchError, match="missing column"):
        batch.score_file("opinions", other, tmp_path / "out.parquet", progress=False)


def test_the_monitor_reads_incoming_files_like_the_source(entry, tmp_path: Path) -> None:
    from deepflow.drift import batches

    incoming = tmp_path / "week.tsv"
    incoming.write_bytes("pos\tsuperb film café\nneg\t\nneg\tawful plot\n".encode("latin-1"))
    frame = batches.load_batch("text", incoming, entry="opinions")
    assert list(frame["text"]) == ["superb film café", "awful plot"] and frame.attrs["dropped"] == 1
    assert "column_1" not in frame.columns
