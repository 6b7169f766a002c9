"""The traffic use case through the real pipeline (Prefect flow, GX, Lightning, MLflow registry)."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow import MlflowClient

from deepflow import settings, tracking, usecase
from deepflow.validation import ValidationFailed
from tests.test_traffic_generate import traffic_dir, traffic_splits  # noqa: F401 (fixtures)

FAST = ["model.img_size=96", "train.epochs=2", "train.batch_size=16", "promotion.floor=0.0",
        "promotion.max_latency_p95_ms=null", "promotion.resamples=200"]


def test_traffic_is_a_default_use_case() -> None:
    assert "traffic" in usecase.default_names()
    uc = usecase.get("traffic")
    assert uc.primary_metric == "map50" and [m for m, _ in uc.members()] == ["shallow", "deep"]


@pytest.mark.slow
def test_pipeline_registers_a_champion_that_takes_images(store, traffic_dir) -> None:  # noqa: F811
    from flows.pipeline import train_pipeline

    overrides = [f"prepared_dir={traffic_dir}", *FAST]
    summary = train_pipeline("traffic", overrides)
    assert {m["member"] for m in summary["members"]} == {"shallow", "deep"}
    assert summary["promotion"]["promoted"]
    for m in summary["members"]:  # side by side, with the domain gap on the real sample
        assert {"map50", "map", "ap50_car"} <= set(m["test"]) and "coco/map50" in m["extra"]
    client = MlflowClient(settings.tracking_uri())
    champion = tracking.version_by_alias("traffic", "champion")
    assert champion is not None and "test/map50" in champion.tags
    runs = client.search_runs([client.get_experiment_by_name("traffic").experiment_id],
                              f"tags.mlflow.parentRunId = '{summary['run_id']}'")
    plots = {a.path for a in client.list_artifacts(runs[0].info.run_id, "plots")}
    assert plots == {"plots/detections.png", "plots/pr_curves.png", "plots/counts_per_frame.png"}
    assert "coco/map50" in runs[0].data.metrics and "val/map50" in runs[0].data.metrics

    import mlflow

    model = mlflow.pyfunc.load_model("models:/traffic@champion")  # through the pyfunc signature
    test = pd.read_parquet(traffic_dir / "test.parquet")
    dets = model.predict(test[["image"]].head(2))
    assert list(dets.columns) == ["image", "x1", "y1", "x2", "y2", "class", "score"]

    # A truncated JPEG stops the next run before training; the registry does not move.
    bad = test.copy()
    bad.at[bad.index[0], "image"] = bad["image"].iloc[0][:300]
    bad.to_parquet(traffic_dir / "test.parquet")
    with pytest.raises(ValidationFailed, match="decodes"):
        train_pipeline("traffic", overrides)
    assert tracking.version_by_alias("traffic", "champion").version == champion.version
