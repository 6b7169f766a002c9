"""Bring your own texts, as a user would, with no Python: a raw labelled CSV (CRLF, a stray quote)
-> `deepflow new` -> `deepflow run` (validated, trained, gated, promoted) -> a served prediction
from raw strings, with the file's own labels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from deepflow import tracking, usecase
from deepflow.cli import app
from tests.test_text_new import reviews

runner = CliRunner()
# Small members: the fastText-style network, the frozen MiniLM + head and the TF-IDF baseline.
SMALL = ["--set", "candidates=[shallow, transfer]", "--set", "train.epochs=8", "--set", "behaviour.sample=20"]


def deepflow(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, f"deepflow {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.output


@pytest.fixture
def project(store, datasets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEEPFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEEPFLOW_CACHE_DIR", str(tmp_path / "cache"))  # the encoder embeds, as on a first run
    return tmp_path


@pytest.mark.slow
def test_raw_text_file_to_served_prediction(project: Path) -> None:
    frame = reviews({"pos": 160, "neg": 80}, seed=11)
    texts = frame["text"].tolist()
    texts[4] = '"Loved the hero and the music'  # a stray quote: standard CSV quoting would swallow lines
    upload = project / "upload" / "opinions.csv"
    upload.parent.mkdir()
    upload.write_bytes(("review,verdict\r\n" + "".join(f"{t},{v}\r\n" for t, v in zip(texts, frame["label"],
                                                                                       strict=True))).encode())
    printed = deepflow("new", "opinions", "--data", str(upload), "--no-dvc", "--budget", "3m")
    assert "kind      text" in printed and "quoting off" in printed and "label     verdict" in printed
    cfg = usecase.get("opinions").cfg
    assert cfg.labels == ["pos", "neg"] and cfg.positive == "neg" and cfg.budget_s == 180

    ran = deepflow("run", "opinions", *SMALL)
    champion = tracking.version_by_alias("opinions", tracking.CHAMPION)
    assert champion is not None and str(champion.version) == "1", ran
    assert champion.tags["deepflow.entry"] == "opinions.yaml"
    assert "transfer" in ran and "tfidf_lr" in ran  # the frozen encoder and the reference both ran
    assert float(champion.tags["test/f1"]) > cfg.promotion.floor

    from deepflow.serving import ServeConfig, create_app

    with TestClient(create_app(ServeConfig(reload_interval=0))) as client:
        reply = client.post("/v1/opinions/predict", json={"texts": ["A wonderful film, I loved the superb cast",
                                                                    "Awful and boring, a terrible waste"]})
        assert reply.status_code == 200, reply.text
        predictions = reply.json()["predictions"]
        assert [p["label"] for p in predictions] == ["pos", "neg"], predictions
        assert all(set(p["probabilities"]) == {"pos", "neg"} for p in predictions)
        explained = client.post("/v1/opinions/predict?explain=true&top=3",
                                json={"texts": ["A wonderful film, I loved the superb cast"]})
        assert explained.status_code == 200, explained.text
        why = explained.json()["predictions"][0]["explanation"]
        assert why["target"] == "pos" and len(why["contributions"]) == 3

    # New texts in a file like the one brought (its `review` column): scored in batch.
    new_rows = reviews({"pos": 10, "neg": 10}, seed=12).rename(columns={"text": "review"}).drop(columns="label")
    new_rows.to_csv(project / "new.csv", index=False)
    deepflow("score", "opinions", str(project / "new.csv"), str(project / "scored.parquet"))
    scored = pd.read_parquet(project / "scored.parquet")
    assert len(scored) == 20 and set(scored["label"]) <= {"pos", "neg"}
