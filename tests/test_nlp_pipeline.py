"""The NLP use case through the Prefect flow: a made-up three-class dataset by config alone
(fast), and the SMS spam bake-off with every candidate (slow)."""

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from deepflow import settings, tracking
from deepflow.kinds.text.prepare import PrepareParams, prepare
from deepflow.validation import ValidationFailed
from flows.pipeline import train_pipeline
from tests.nlp_toy import TOY_OVERRIDES, write_toy_csv


def test_any_text_label_csv_goes_through_by_config_alone(store, tmp_path) -> None:
    out = tmp_path / "toy"
    prepare(write_toy_csv(tmp_path / "toy.csv"), out,
            PrepareParams(sep=",", header=True, text_column="text", label_column="label"))
    overrides = [f"prepared_dir={out}", "dvc_stage=none", *TOY_OVERRIDES, "candidates=[shallow]",
                 "train.epochs=4"]

    summary = train_pipeline("nlp", overrides)
    assert {m["member"] for m in summary["members"]} == {"shallow", "tfidf_lr"}
    assert summary["primary"] == "f1" and summary["promotion"]["promoted"]
    best = max(summary["members"], key=lambda m: m["test"]["f1"])
    assert best["test"]["f1"] > 0.8, best  # macro F1 over three classes: the topics are learnable
    assert "behaviour_pass_rate" not in best["test"]  # spam-specific tests are off for this data

    # The champion takes raw strings and returns one probability per class, with its vocabulary.
    texts = pd.DataFrame({"text": ["Storm and rain in the forecast today", "Big league match, what a goal"]})
    proba = mlflow.pyfunc.load_model("models:/nlp@champion").predict(texts)
    assert proba.shape == (2, 3) and list(proba.argmax(1)) == [0, 1]
    run = summary["registered"]["run_id"]
    assert "reports/misclassified.md" in {a.path for a in MlflowClient().list_artifacts(run, "reports")}

    # A label outside the configured set stops the run before training; nothing is registered.
    with pytest.raises(ValidationFailed, match="expect_column_values_to_be_in_set"):
        train_pipeline("nlp", [*overrides, "labels=[weather,sport,finance]"])
    assert [str(v.version) for v in MlflowClient().search_model_versions("name='nlp'")] == ["1"]


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
