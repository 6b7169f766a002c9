"""The text kind through the Prefect flow: a made-up three-class dataset as its own entry, one
YAML file and no code, and the SMS spam bake-off with every candidate (both slow)."""

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from deepflow import settings, tracking
from deepflow.kinds.text.prepare import PrepareParams, prepare
from deepflow.validation import ValidationFailed
from flows.pipeline import train_pipeline
from tests.entries import TOPICS_CONFIG, write_entry
from tests.nlp_toy import write_toy_csv


@pytest.mark.slow  # a full pipeline (~20 s quiet); tests/test_text_e2e.py covers `deepflow new` for text
def test_any_text_label_csv_is_one_entry_file(store, datasets, tmp_path) -> None:
    out = tmp_path / "toy"
    prepare(write_toy_csv(tmp_path / "toy.csv"), out,
            PrepareParams(sep=",", header=True, text_column="text", label_column="label"))
    write_entry(datasets, "topics", "text", {**TOPICS_CONFIG, "prepared_dir": str(out)})

    summary = train_pipeline("topics")
    assert {m["member"] for m in summary["members"]} == {"shallow", "tfidf_lr"}
    assert summary["primary"] == "f1" and summary["promotion"]["promoted"]
    best = max(summary["members"], key=lambda m: m["test"]["f1"])
    assert best["test"]["f1"] > 0.8, best  # macro F1 over three classes: the topics are learnable
    assert "behaviour_pass_rate" not in best["test"]  # spam-specific tests are off for this data

    # The champion takes raw strings and returns one probability per class, with its vocabulary.
    texts = pd.DataFrame({"text": ["Storm and rain in the forecast today", "Big league match, what a goal"]})
    proba = mlflow.pyfunc.load_model("models:/topics@champion").predict(texts)
    assert proba.shape == (2, 3) and list(proba.argmax(1)) == [0, 1]
    run = summary["registered"]["run_id"]
    assert "reports/misclassified.md" in {a.path for a in MlflowClient().list_artifacts(run, "reports")}

    assert MlflowClient().search_model_versions("name='nlp'") == []  # nothing landed in another entry
    version = tracking.version_by_alias("topics", "champion")
    assert version.tags["deepflow.data_version"].startswith("files:")  # not in dvc.lock: its own files
    assert version.tags["deepflow.dvc_stage"] == "none" and version.tags["deepflow.entry_kind"] == "text"

    # A label outside the entry's set stops the run before training; nothing is registered.
    write_entry(datasets, "topics", "text", {**TOPICS_CONFIG, "prepared_dir": str(out),
                                             "labels": ["weather", "sport", "finance"]})
    with pytest.raises(ValidationFailed, match="expect_column_values_to_be_in_set"):
        train_pipeline("topics")
    assert [str(v.version) for v in MlflowClient().search_model_versions("name='topics'")] == ["1"]


@pytest.mark.slow
def test_sms_spam_bakeoff_with_every_candidate(store, tmp_path) -> None:
    out = tmp_path / "sms"  # the DVC stage's own code and parameters, into a temporary folder
    prepare(settings.PROJECT_ROOT / "data/external/sms_spam/SMSSpamCollection", out,
            PrepareParams(**settings.stage_params("nlp.prepare")))
    summary = train_pipeline("nlp", [f"prepared_dir={out}"])
    by_member = {m["member"]: m for m in summary["members"]}
    assert set(by_member) == {"shallow", "deep", "transfer", "tfidf_lr"}
    for m in by_member.values():  # all on the same deduplicated split
        assert m["test"]["f1"] > 0.85 and 0.9 <= m["test"]["behaviour_pass_rate"] <= 1.0, m
    champion = tracking.version_by_alias("nlp", "champion")
    assert champion is not None and float(champion.tags["test/f1"]) > 0.9
    report = (settings.reports_dir() / "nlp" / "bakeoff" / "report.md").read_text()
    assert "frozen pretrained encoder" in report and "classical reference" in report
