"""Explanations (``deepflow.explain``): sanity checks that can fail, per kind, and ``?explain=true``.

* a model trained where the label is a known function of one input puts that input first, per
  row and overall, for every rung of the table ladder (linear, trees, network);
* contributions add up to score - baseline (tabular network, table with categories, dates and
  missing values, multiclass);
* a text model's top words for an obvious spam message include the planted spam phrase;
* serving: explained answers for every kind, plain answers unchanged, limits and old versions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from deepflow import explain, importance
from deepflow.scoring import TorchScorer
from deepflow.serving import ServeConfig, create_app
from tests.test_serving import FEATURES, png_bytes, register, row
from tests.test_table_models import FAST, make

# --- columns: additivity and the known-function check ---------------------------------------------


def fast(task: str, n: int):
    uc, splits = make(task, n=n)
    uc.cfg.train.epochs, uc.cfg.train.patience = FAST["epochs"] * 3, FAST["patience"]
    return uc, splits


def tenure_only(task: str = "binary"):
    """The customers table with the label a function of ``tenure_months`` alone."""
    uc, splits = fast(task, 900)
    for frame in splits.values():
        frame["churned"] = np.where(frame["tenure_months"] < 30, "yes", "no").astype(object)
    return uc, splits


@pytest.mark.parametrize("member", ["linear", "hgb", "shallow"])
def test_the_one_informative_column_comes_first(member: str) -> None:
    uc, splits = tenure_only()
    scorer, _ = uc.fit(member, dict(uc.members())[member], splits)
    background = uc.explanation_background(scorer, splits["train"])
    ranking = importance.global_columns(scorer.predict, splits["test"], background, rows=60)
    assert ranking.index[0] == "tenure_months", ranking
    assert ranking.iloc[0] > 3 * ranking.iloc[1], ranking
    rows = splits["test"].head(10)
    per_row = explain.explain_rows(scorer.predict, rows, background, target="yes", top=1)
    firsts = [r["contributions"][0]["feature"] for r in per_row]
    assert firsts.count("tenure_months") >= 9, firsts


def test_table_contributions_add_up_with_categories_dates_and_missing_values() -> None:
    uc, splits = fast("binary", 600)
    scorer, _ = uc.fit("hgb", "baseline", splits)
    rows = splits["test"].head(6).copy()
    rows.loc[rows.index[0], "monthly_charges"] = np.nan  # missing: explained as missing, not as a number
    rows.loc[rows.index[1], "region"] = None
    rows.loc[rows.index[2], "signup_date"] = pd.NaT
    background = uc.explanation_background(scorer, splits["train"])
    sh = explain.columns(scorer.predict, rows, background)
    assert sh.columns == scorer.features
    assert np.allclose(sh.scores, scorer.predict(rows), atol=1e-9)
    assert np.allclose(sh.values.sum(axis=1), scorer.predict(rows) - sh.baseline, atol=1e-9)
    assert sh.baseline == pytest.approx(scorer.predict(background).mean(), abs=1e-9)
    out = explain.explain_rows(scorer.predict, rows, background, target="yes", top=len(scorer.features))
    first = {c["feature"]: c["value"] for c in out[0]["contributions"]}
    assert first["monthly_charges"] is None and isinstance(first["signup_date"], str)
    assert out[1]["contributions"] and {c["feature"]: c["value"] for c in out[1]["contributions"]}["region"] is None
    for o, p in zip(out, scorer.predict(rows), strict=True):
        total = o["baseline"] + sum(c["contribution"] for c in o["contributions"]) + o["rest"]
        assert total == pytest.approx(p, abs=1e-9) and o["score"] == pytest.approx(p, abs=1e-9)


def test_multiclass_rows_are_explained_for_their_most_probable_class() -> None:
    uc, splits = fast("multiclass", 600)
    scorer, _ = uc.fit("linear", "baseline", splits)
    rows = splits["test"].head(4)
    out = explain.explain_rows(scorer.predict, rows, uc.explanation_background(scorer, splits["train"]),
                               classes=scorer.classes, top=3)
    proba = scorer.predict(rows)
    for o, p in zip(out, proba, strict=True):
        assert o["target"] == scorer.classes[int(p.argmax())]
        assert o["score"] == pytest.approx(p.max(), abs=1e-9)
        assert len(o["contributions"]) == 3
        assert o["baseline"] + sum(c["contribution"] for c in o["contributions"]) + o["rest"] == pytest.approx(
            p.max(), abs=1e-9)


def test_tabular_network_contributions_add_up() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=FEATURES)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1), torch.nn.Flatten(0))
    scorer = TorchScorer(net, FEATURES)
    sh = explain.columns(scorer.predict, frame.head(5), explain.background_sample(frame, FEATURES))
    assert np.allclose(sh.values.sum(axis=1) + sh.baseline, scorer.predict(frame.head(5)), atol=1e-6)


def test_permutation_importance_finds_the_informative_column_and_the_card_says_so() -> None:
    uc, splits = tenure_only()
    scorer, _ = uc.fit("hgb", "baseline", splits)
    explain.attach_background(scorer, uc.explanation_background(scorer, splits["train"]))
    out = uc.reports("hgb", scorer, scorer.predict(splits["test"]), splits["test"])
    card, sentence = out["card/importance.md"], out[importance.RELIES_ON]
    assert "tenure_months" in sentence.split(",")[0] and "relies mostly on" in sentence
    table = [line for line in card.splitlines() if line.startswith("| tenure_months")]
    assert table and float(table[0].split("|")[4]) > 0.1  # its permutation importance (accuracy drop)
    assert out["plots/importance.png"] is not None


def test_an_old_version_without_background_is_not_explainable() -> None:
    with pytest.raises(explain.NotExplainable, match="train a new version"):
        explain.background_of(object(), "v3")


# --- tokens ---------------------------------------------------------------------------------------


def spam_frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = ["meeting", "lunch", "tomorrow", "call", "home", "later", "thanks", "see", "you", "ok", "now", "today"]
    texts, labels = [], []
    for i in range(n):
        body = " ".join(rng.choice(words, 6))
        spam = i % 2 == 0
        texts.append(f"{body} claim your free prize" if spam else body)
        labels.append("spam" if spam else "ham")
    return pd.DataFrame({"text": texts, "label": labels})


def test_the_planted_spam_phrase_is_among_the_top_words() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from deepflow.kinds.text.usecase import TfidfScorer

    data = spam_frame()
    labels = ["ham", "spam"]
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=500, C=10))
    pipe.fit(data["text"], data["label"].map(labels.index))
    scorer = TfidfScorer(pipe, labels)
    text = "see you at home later, claim your free prize now"
    [why] = explain.tokens(lambda t: scorer.predict(pd.DataFrame({"text": t})), [text], labels, top=4)
    assert why["target"] == "spam"
    top = {c["token"].lower() for c in why["contributions"]}
    assert top & {"claim", "free", "prize"}, why
    p = scorer.predict(pd.DataFrame({"text": [text]}))[0, 1]
    assert why["baseline"] + sum(c["contribution"] for c in why["contributions"]) + why["rest"] == pytest.approx(
        p, abs=1e-6)
    for c in why["contributions"]:  # offsets point at the word in the text sent
        assert text[c["start"]: c["start"] + len(c["token"])] == c["token"]


def test_a_text_network_explains_too() -> None:
    """The fastText member (a real network of the text kind) trained on the planted phrase."""
    from deepflow.kinds.text.usecase import TextUseCase
    from deepflow.usecase import Entry

    data = spam_frame(200)
    splits = {"train": data.iloc[:140], "val": data.iloc[140:170], "test": data.iloc[170:]}
    from deepflow.kinds.text.config import TextConfig

    cfg = TextConfig(prepared_dir="unused", labels=["ham", "spam"], positive="spam")
    cfg.train.epochs, cfg.train.patience = 8, 8
    cfg.behaviour.enabled = False
    uc = TextUseCase(Entry(name="toy", kind="text", path=__import__("pathlib").Path("toy.yaml")), cfg)
    scorer, _ = uc.fit("shallow", "candidate", splits)
    text = "thanks see you tomorrow claim your free prize"
    [why] = explain.tokens(lambda t: scorer.predict(pd.DataFrame({"text": t})), [text], ["ham", "spam"], top=3)
    assert why["target"] == "spam" and {c["token"] for c in why["contributions"]} & {"claim", "free", "prize"}


# --- serving --------------------------------------------------------------------------------------


@pytest.fixture()
def explained_fraud(store, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", str(tmp_path / "locks"))
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(300, 3)) * [100, 5, 3] + [50, 12, 4], columns=FEATURES)
    torch.manual_seed(0)
    scorer = TorchScorer(torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0)), FEATURES)
    with torch.no_grad():
        scorer.net[0].weight[:] = torch.tensor([[0.02, 0.0, -0.3]])
    explain.attach_background(scorer, explain.background_sample(frame, FEATURES))
    version = register("fraud", scorer, frame.head(1), 0.5)
    with TestClient(create_app(ServeConfig(reload_interval=0, use_cases=("fraud",), max_explain_rows=3))) as client:
        yield client, version, scorer


def test_fraud_explained_over_http(explained_fraud) -> None:
    client, version, scorer = explained_fraud
    plain = client.post("/v1/fraud/predict", json={"rows": [row(amount=400.0)]})
    assert plain.status_code == 200 and "explanation" not in plain.json()["predictions"][0]
    r = client.post("/v1/fraud/predict?explain=true&top=2", json={"rows": [row(amount=400.0), row()]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["version"] == version
    first = body["predictions"][0]
    why = first["explanation"]
    assert why["target"] == "fraud" and why["score"] == pytest.approx(first["probability"], abs=1e-6)
    assert [c["feature"] for c in why["contributions"]] == ["amount", "tx_count_7d"]
    assert why["contributions"][0]["value"] == 400.0 and why["contributions"][0]["contribution"] > 0
    assert why["baseline"] + sum(c["contribution"] for c in why["contributions"]) + why["rest"] == pytest.approx(
        first["probability"], abs=1e-6)
    too_many = client.post("/v1/fraud/predict?explain=true", json={"rows": [row()] * 4})
    assert too_many.status_code == 422 and "explain at most 3 rows" in too_many.text
    assert client.post("/v1/fraud/predict?explain=true&top=0", json={"rows": [row()]}).status_code == 422
    spec = client.get("/openapi.json").json()
    params = {p["name"] for p in spec["paths"]["/v1/fraud/predict"]["post"]["parameters"]}
    assert {"explain", "top"} <= params and "ColumnExplanation" in spec["components"]["schemas"]


def test_a_version_without_background_answers_409(store, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", str(tmp_path / "locks"))
    scorer = TorchScorer(torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0)), FEATURES)
    version = register("fraud", scorer, pd.DataFrame([[1.0, 2.0, 3.0]], columns=FEATURES), 0.5)
    with TestClient(create_app(ServeConfig(reload_interval=0, use_cases=("fraud",)))) as client:
        assert client.post("/v1/fraud/predict", json={"rows": [row()]}).status_code == 200
        r = client.post("/v1/fraud/predict?explain=true", json={"rows": [row()]})
        assert r.status_code == 409 and f"v{version}" in r.json()["detail"] and "train a new version" in r.text


def test_text_and_detection_explained_over_http(store, tmp_path, monkeypatch) -> None:
    from deepflow.kinds.detection.models import ShallowNet
    from deepflow.kinds.detection.scorer import DetectorScorer
    from deepflow.usecases.traffic.generate import CLASSES
    from tests.test_serving import register_nlp

    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", str(tmp_path / "locks"))
    register_nlp()
    torch.manual_seed(0)
    register("traffic", DetectorScorer(ShallowNet(len(CLASSES), width=8), 64, CLASSES, min_score=0.0, max_det=5),
             pd.DataFrame({"image": [png_bytes()]}), 0.0)
    with TestClient(create_app(ServeConfig(reload_interval=0, use_cases=("nlp", "traffic")))) as client:
        r = client.post("/v1/nlp/predict?explain=true&top=3", json={"texts": ["Storm and rain in the forecast"]})
        assert r.status_code == 200, r.text
        p = r.json()["predictions"][0]
        why = p["explanation"]
        assert why["target"] == p["label"] == "weather" and why["score"] == pytest.approx(p["probability"], abs=1e-6)
        assert len(why["contributions"]) == 3 and {c["token"].lower() for c in why["contributions"]} & {
            "storm", "rain", "forecast"}
        image = {"image": ("x.png", png_bytes((80, 50)), "image/png")}
        plain = client.post("/v1/traffic/predict", files=image)
        assert plain.status_code == 200 and "objectness" not in plain.json()["detections"][0]
        r = client.post("/v1/traffic/predict?explain=true", files=image)
        assert r.status_code == 200, r.text
        assert [d["score"] for d in r.json()["detections"]] == [d["score"] for d in plain.json()["detections"]]
        for d in r.json()["detections"]:
            assert set(d["class_scores"]) == set(CLASSES)
            assert max(d["class_scores"].values()) == pytest.approx(d["score"], abs=1e-6)
            assert d["class_scores"][d["class"]] == pytest.approx(d["score"], abs=1e-6)
            assert 0 <= d["objectness"] <= 1 and d["score"] <= d["objectness"] + 1e-6


# --- batch scoring --------------------------------------------------------------------------------


def test_batch_scoring_explains_rows_and_texts_and_refuses_what_it_cannot(explained_fraud, tmp_path) -> None:
    import json

    from deepflow import batch
    from tests.test_serving import register_nlp

    _, version, scorer = explained_fraud
    rows = pd.DataFrame([row(amount=400.0), row(), row(hour="x")]).assign(id=["a", "b", "c"])
    rows.to_csv(tmp_path / "in.csv", index=False)
    result = batch.score_file("fraud", tmp_path / "in.csv", tmp_path / "out.parquet", explain_top=2)
    assert (result.scored, result.rejected) == (2, 1)
    out = pd.read_parquet(tmp_path / "out.parquet")
    for (_, r), probability in zip(out.iterrows(), scorer.predict(rows.head(2)), strict=True):
        why = json.loads(r["explanation"])
        assert why["target"] == "fraud" and len(why["contributions"]) == 2
        assert why["baseline"] + sum(c["contribution"] for c in why["contributions"]) + why["rest"] == pytest.approx(
            probability, abs=1e-6)
    plain = batch.score_file("fraud", tmp_path / "in.csv", tmp_path / "plain.parquet")
    assert plain.scored == 2 and "explanation" not in pd.read_parquet(tmp_path / "plain.parquet")

    register_nlp()
    texts = ["Storm and rain in the forecast", "league match goal"]
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "t.csv", index=False)
    batch.score_file("nlp", tmp_path / "t.csv", tmp_path / "t.parquet", explain_top=3)
    texts = pd.read_parquet(tmp_path / "t.parquet")
    assert [json.loads(e)["target"] for e in texts["explanation"]] == list(texts["label"])

    old = TorchScorer(torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0)), FEATURES)  # no background
    register("fraud", old, rows[FEATURES].head(1).astype(float), 0.5)
    with pytest.raises(batch.BatchError, match="train a new version"):
        batch.score_file("fraud", tmp_path / "in.csv", tmp_path / "old.parquet", explain_top=2)
    assert not (tmp_path / "old.parquet").exists()
