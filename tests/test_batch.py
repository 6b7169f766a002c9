"""Batch scoring (``deepflow.batch``) against tiny registered champions in a temporary store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from deepflow import batch, tracking
from deepflow.scoring import TorchScorer
from deepflow.usecases.fraud.prepare import FEATURES

THRESHOLD = 0.5


def register_champion(name: str, scorer, example: pd.DataFrame, tags: dict) -> str:
    run_id = tracking.start_run(name, "tiny")
    uri = tracking.log_scorer(run_id, scorer, example)
    version = tracking.register(name, uri, run_id, tags)
    tracking.set_alias(name, tracking.CHAMPION, version)
    tracking.end_run(run_id)
    return str(version)


def fraud_rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    frame.insert(0, "TRANSACTION_ID", np.arange(1000, 1000 + n))
    return frame


@pytest.fixture
def fraud_champion(store):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(len(FEATURES), 1), torch.nn.Flatten(0))
    scorer = TorchScorer(net, FEATURES)
    version = register_champion("fraud", scorer, fraud_rows(5)[FEATURES],
                                {"deepflow.threshold": THRESHOLD, "deepflow.data_version": "test"})
    return version, scorer


def test_fraud_scores_rejects_and_counts(fraud_champion, tmp_path) -> None:
    version, scorer = fraud_champion
    rows = fraud_rows(50)
    raw = rows.astype({"TX_AMOUNT": object, "TX_DURING_NIGHT": object})
    raw.loc[3, "TX_AMOUNT"] = None  # missing value
    raw.loc[7, "TX_AMOUNT"] = "lots"  # string in a numeric column
    raw.loc[11, "TX_DURING_NIGHT"] = "inf"  # parses, but infinite
    raw.loc[20, FEATURES[5]] = np.nan
    src = tmp_path / "in.csv"
    raw.to_csv(src, index=False)

    result = batch.score_file("fraud", src, tmp_path / "out.parquet", chunk_size=16, progress=True)  # no total
    assert (result.rows, result.scored, result.rejected, result.version) == (50, 46, 4, version)
    assert result.chunks == 4 and result.alias == "champion"

    out = pd.read_parquet(tmp_path / "out.parquet")
    assert len(out) == 46 and set(out["version"]) == {version} and set(out["model"]) == {"fraud"}
    good = rows.drop(index=[3, 7, 11, 20])
    assert list(out["row"]) == list(good.index)
    assert list(out["TRANSACTION_ID"]) == [str(i) for i in good["TRANSACTION_ID"]]  # CSV ids kept as text
    expected = scorer.predict(good)
    np.testing.assert_allclose(out["probability"].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (out["decision"] == (out["probability"] >= THRESHOLD)).all()

    rejects = pd.read_parquet(tmp_path / "out.rejects.parquet")
    assert list(rejects["row"]) == [3, 7, 11, 20]
    reasons = dict(zip(rejects["row"], rejects["reason"], strict=True))
    assert reasons[3] == "TX_AMOUNT: missing value"
    assert reasons[7] == "TX_AMOUNT: non-numeric value 'lots'"
    assert reasons[11] == "TX_DURING_NIGHT: infinite value"
    assert FEATURES[5] in reasons[20] and list(rejects["column"])[3] == FEATURES[5]
    assert not list(tmp_path.glob(".*tmp*"))  # temporaries renamed away


def test_parquet_chunking_gives_the_same_output_and_csv_output(fraud_champion, tmp_path) -> None:
    rows = fraud_rows(300, seed=1)
    rows.loc[5, "TX_AMOUNT"] = np.inf
    rows.loc[250, FEATURES[-1]] = np.nan
    src = tmp_path / "in.parquet"
    rows.to_parquet(src, index=False)
    whole = batch.score_file("fraud", src, tmp_path / "whole.parquet", chunk_size=10_000, progress=False)
    parts = batch.score_file("fraud", src, tmp_path / "parts.parquet", chunk_size=7, progress=False)
    assert (whole.chunks, parts.chunks) == (1, 43)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "whole.parquet"),
                                  pd.read_parquet(tmp_path / "parts.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "whole.rejects.parquet"),
                                  pd.read_parquet(tmp_path / "parts.rejects.parquet"))
    assert list(pd.read_parquet(tmp_path / "parts.parquet")["TRANSACTION_ID"]) == [
        i for i in rows["TRANSACTION_ID"] if i not in (1005, 1250)]  # parquet ids keep their type

    csv = batch.score_file("fraud", src, tmp_path / "out.csv", chunk_size=64, progress=True)  # bar forced on
    assert (csv.scored, csv.rejected) == (298, 2)
    out, rejects = pd.read_csv(tmp_path / "out.csv"), pd.read_csv(tmp_path / "out.rejects.csv")
    assert len(out) == 298 and list(rejects["row"]) == [5, 250]
    np.testing.assert_allclose(out["probability"], pd.read_parquet(tmp_path / "whole.parquet")["probability"],
                               rtol=1e-6)  # float32 matmuls differ in the last bit by batch size


def test_no_champion_or_missing_column_writes_nothing(store, tmp_path) -> None:
    src = tmp_path / "in.parquet"
    fraud_rows(10).to_parquet(src, index=False)
    with pytest.raises(batch.BatchError, match="no @champion"):
        batch.score_file("fraud", src, tmp_path / "out.parquet", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "mlflow"]


def test_missing_feature_column_and_failure_mid_file_leave_no_output(fraud_champion, tmp_path, monkeypatch) -> None:
    src = tmp_path / "in.parquet"
    fraud_rows(10).drop(columns=["TX_AMOUNT"]).to_parquet(src, index=False)
    with pytest.raises(batch.BatchError, match="missing column.*TX_AMOUNT"):
        batch.score_file("fraud", src, tmp_path / "out.parquet", progress=False)

    fraud_rows(100).to_parquet(src, index=False)
    calls = []
    real = batch.score_chunk

    def crash_on_third(model, frame, *rest):
        calls.append(len(frame))
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real(model, frame, *rest)

    monkeypatch.setattr(batch, "score_chunk", crash_on_third)
    with pytest.raises(RuntimeError, match="boom"):
        batch.score_file("fraud", src, tmp_path / "out.parquet", chunk_size=10, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "mlflow"]


@pytest.mark.slow  # Prefect start-up (~8 s)
def test_flow_returns_counts(fraud_champion, tmp_path) -> None:
    from flows.score import score_batch

    src = tmp_path / "in.csv"
    fraud_rows(20).to_csv(src, index=False)
    summary = score_batch("fraud", str(src), str(tmp_path / "out.parquet"), chunk_size=8)
    assert (summary["scored"], summary["rejected"], summary["version"]) == (20, 0, fraud_champion[0])
    assert pd.read_parquet(tmp_path / "out.rejects.parquet").empty


def test_nlp_label_and_probability(store, tmp_path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from deepflow.kinds.text.batch import validate_text
    from deepflow.kinds.text.usecase import TfidfScorer
    from tests.nlp_toy import TOPICS, toy_frame

    toy = toy_frame(n_per_class=30)
    labels = list(TOPICS)
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=200)).fit(
        toy["text"], toy["label"].map(labels.index))
    scorer = TfidfScorer(pipe, labels)
    version = register_champion("nlp", scorer, toy[["text"]].head(3), {"deepflow.data_version": "test"})

    texts = ["Storm and rain in the forecast today", "", "Big league match, what a goal", "   ",
             "Bank loan interest on my savings"]
    frame = pd.DataFrame({"doc_id": ["a", "b", "c", "d", "e"], "text": texts})
    frame.to_csv(tmp_path / "in.csv", index=False)
    result = batch.score_file("nlp", tmp_path / "in.csv", tmp_path / "out.csv", chunk_size=2, progress=False)
    assert (result.scored, result.rejected, result.version) == (3, 2, version)
    out = pd.read_csv(tmp_path / "out.csv", dtype={"version": str})
    assert list(out["doc_id"]) == ["a", "c", "e"] and list(out["label"]) == ["weather", "sport", "money"]
    proba = scorer.predict(pd.DataFrame({"text": [texts[0], texts[2], texts[4]]}))
    np.testing.assert_allclose(out["probability"], proba.max(axis=1), rtol=1e-6)
    assert set(out["version"]) == {version}
    rejects = pd.read_csv(tmp_path / "out.rejects.csv")
    assert list(rejects["row"]) == [1, 3] and set(rejects["reason"]) == {"text: missing text", "text: empty text"}

    clean, rej = validate_text(pd.DataFrame({"text": ["fine", 7, None, "  "]}))
    assert list(clean.index) == [0] and list(rej["reason"]) == [
        "text: text is not a string (int)", "text: missing text", "text: empty text"]


def test_traffic_folder_of_images_one_row_per_frame_with_counts(store, tmp_path) -> None:
    """A folder of frames through a real (untrained) detector: one row per decodable file with its
    detections and per-class counts; a file that is not an image is rejected by name."""
    import io
    import json

    from PIL import Image

    from deepflow.kinds.detection.models import ShallowNet
    from deepflow.kinds.detection.scorer import DetectorScorer
    from deepflow.usecases.traffic.generate import CLASSES

    def png(size, colour) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", size, colour).save(buf, format="PNG")
        return buf.getvalue()

    torch.manual_seed(0)
    scorer = DetectorScorer(ShallowNet(len(CLASSES), width=8), 64, CLASSES, min_score=0.0, max_det=20)
    version = register_champion("traffic", scorer, pd.DataFrame({"image": [png((32, 24), (9, 9, 9))]}),
                                {"deepflow.threshold": 0.0})
    frames = tmp_path / "frames" / "cam1"
    frames.mkdir(parents=True)
    (frames / "a.png").write_bytes(png((80, 50), (200, 10, 10)))
    (frames / "b.png").write_bytes(png((40, 60), (10, 200, 10)))
    (frames / "notes.txt").write_text("not a frame")
    (frames / "cut.png").write_bytes(png((40, 60), (1, 2, 3))[:40])  # truncated
    result = batch.score_file("traffic", tmp_path / "frames", tmp_path / "out.parquet", chunk_size=2)
    assert (result.rows, result.scored, result.rejected, result.version) == (4, 2, 2, version)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out["file"]) == ["cam1/a.png", "cam1/b.png"] and set(out["version"]) == {version}
    for _, r in out.iterrows():
        dets = json.loads(r["detections"])
        assert sum(r[f"count_{c}"] for c in CLASSES) == len(dets) > 0  # threshold 0: every kept box
        assert all(d["class"] in CLASSES and d["x1"] <= d["x2"] for d in dets)
    rejects = pd.read_parquet(tmp_path / "out.rejects.parquet")
    assert sorted(rejects["row"]) == [2, 3]  # cut.png and notes.txt (files sorted by path)
    assert all("not a decodable image" in r for r in rejects["reason"])
    assert any("notes.txt" in r for r in rejects["reason"]) and any("cut.png" in r for r in rejects["reason"])


def test_a_new_tabular_entry_scores_by_its_kind(store, datasets, tmp_path) -> None:
    """The kind comes from the entry file, not from the scorer: a new tabular entry batch-scores
    with no code; an unknown entry and a version without a threshold fail before writing."""
    from tests.entries import write_entry

    write_entry(datasets, "churn", "tabular", {"label": "churned", "features": ["tenure", "spend"]})
    torch.manual_seed(0)
    scorer = TorchScorer(torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Flatten(0)), ["tenure", "spend"])
    example = pd.DataFrame({"tenure": [1.0, 2.0], "spend": [3.0, 4.0]})
    version = register_champion("churn", scorer, example, {"deepflow.threshold": 0.4})
    src = tmp_path / "in.csv"
    example.assign(customer=["a", "b"]).to_csv(src, index=False)
    model = batch.load_model("churn")
    assert (model.kind, model.version, model.threshold) == ("tabular", version, 0.4)
    result = batch.score_file("churn", src, tmp_path / "out.parquet", progress=False)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert result.scored == 2 and list(out.columns) == [
        "row", "customer", "model", "version", "probability", "decision", "threshold"]

    with pytest.raises(batch.BatchError, match="unknown dataset entry 'nosuch'"):
        batch.load_model("nosuch")
    register_champion("churn", scorer, example, {})
    with pytest.raises(batch.BatchError, match="no deepflow.threshold tag"):
        batch.load_model("churn")
    assert batch.load_model("churn", threshold=0.7).threshold == 0.7

    example.assign(decision=[1, 0]).to_csv(src, index=False)  # named like an output column of the kind
    with pytest.raises(batch.BatchError, match="decision clash"):
        batch.score_file("churn", src, tmp_path / "clash.parquet", model=model, progress=False)


def test_a_kind_that_loses_rows_fails_the_batch(fraud_champion, tmp_path, monkeypatch) -> None:
    """Every row is scored or rejected: a kind that drops one is an error, not a short output."""
    from deepflow.kinds.tabular import batch as tabular_batch

    src = tmp_path / "in.parquet"
    fraud_rows(20).to_parquet(src, index=False)
    real = tabular_batch.score

    def drop_first(model, frame):
        scores, rejects = real(model, frame)
        return scores.iloc[1:], rejects

    monkeypatch.setattr(tabular_batch, "score", drop_first)
    with pytest.raises(batch.BatchError, match="scored 9 and rejected 0 of 10 rows"):
        batch.score_file("fraud", src, tmp_path / "out.parquet", chunk_size=10, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "mlflow"]
