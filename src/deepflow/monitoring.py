"""The monitor's work: score a new batch with the champion, compare it with the champion's
reference data, and write the drift report (files + MLflow run). ``flows/monitor.py`` sequences
it and decides about retraining; ``deepflow.drift`` holds the statistics.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from deepflow import batch, operations, tracking
from deepflow.operations import OpsConfig


def experiment(use_case: str) -> str:
    return f"{use_case}-monitoring"


def read_batches(kind: str, paths: list[Path], features: list[str] | None = None,
                 entry: str | None = None) -> pd.DataFrame:
    from deepflow import drift

    frames = [drift.load_batch(kind, p, features, entry=entry) for p in paths]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def check(use_case: str, paths: list[Path], ops: OpsConfig) -> dict[str, Any]:
    """Drift of ``paths`` (one or more incoming batches of entry ``use_case``) against the
    champion's reference, measured by the entry's kind.

    Returns a JSON-able dict: drifted, score, rows, champion version, report paths, run id.
    Raises ``batch.BatchError`` (no champion) or ``ValueError`` (unreadable batch) with a message
    naming the entry and the file.
    """
    from deepflow import drift, usecase

    t0 = time.perf_counter()
    kind = usecase.entry(use_case).kind
    model = batch.load_model(use_case)
    # The reference is the training split of the data the scheduled pipeline trains on (the same
    # overrides, e.g. another prepared_dir).
    pipeline = ops.pipelines.get(use_case)
    overrides = tuple(pipeline.overrides) if pipeline else ()
    # Entries of a kind with feature columns (tabular, table) name them; the batch must carry them.
    features = drift.entry_features(use_case, overrides)
    current = read_batches(kind, paths, features, entry=use_case)
    reference = drift.reference_frame(use_case, overrides=overrides)
    cfg = drift.DriftConfig(**ops.monitor.drift.get(use_case, {}))
    # The champion's threshold: detections are counted as it would report them (kinds without a
    # use for it ignore it).
    report = drift.detect(kind, reference, current, cfg, scorer=model.scorer, use_case=use_case, features=features,
                          threshold=model.threshold)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = operations.monitor_reports_dir(use_case) / stamp
    out.mkdir(parents=True, exist_ok=True)
    text = (f"# {use_case}: drift report {stamp}\n\n"
            f"champion v{model.version}; batches: {', '.join(p.name for p in paths)}\n\n" + report.markdown())
    (out / "drift.md").write_text(text)
    body = report.to_dict() | {"use_case": use_case, "champion_version": model.version,
                               "batches": [str(p) for p in paths]}
    (out / "drift.json").write_text(json.dumps(body, indent=2, default=str))

    run_id = tracking.start_run(experiment(use_case), f"drift-{stamp}")
    tracking.set_tags(run_id, {"deepflow.champion_version": model.version, "deepflow.drifted": report.drifted,
                               "deepflow.batches": ",".join(p.name for p in paths)})
    tracking.log_metrics(run_id, {"drift/score": report.score, "drift/drifted": float(report.drifted),
                                  "drift/rows": float(report.n_current),
                                  **{f"drift/{s.name}": float(s.value) for s in report.signals}})
    tracking.log_text(run_id, text, "drift.md")
    tracking.log_artifact(run_id, out / "drift.json")
    for path, figure in report.figures().items():
        tracking.log_figure(run_id, figure, path)
    tracking.end_run(run_id, ok=True)
    return {"use_case": use_case, "drifted": bool(report.drifted), "score": float(report.score),
            "rows": int(report.n_current), "champion_version": model.version, "run_id": run_id,
            "report_path": str(out / "drift.md"), "markdown": text,
            "seconds": round(time.perf_counter() - t0, 2)}
