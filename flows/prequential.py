"""Prefect flow: the fraud use case's prequential benchmark (issue 8). Sequencing only; the work
lives in ``deepflow.usecases.fraud.prequential``.

``prequential_benchmark(use_case)``: start the MLflow parent run -> build and validate the fold table
-> per model: search on the validation folds, then the test folds -> the handbook-style sequence
model (history from inside the split) -> unsupervised detectors -> the report. Registers nothing.
Run it with ``deepflow run fraud -s protocol=prequential``.
"""

from __future__ import annotations

import time

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from deepflow import report as timing
from deepflow import settings, tracking, usecase
from deepflow.usecases.fraud import prequential as pq


@task(name="prequential-start")
def start(use_case: str, overrides: list[str], flow_run_id: str | None) -> dict:
    return pq.start(use_case, overrides, flow_run_id)


@task(name="prequential-prepare")
def prepare(use_case: str, overrides: list[str], run_id: str) -> dict:
    return pq.prepare(use_case, overrides, run_id)


@task(name="prequential-model")
def benchmark(use_case: str, overrides: list[str], model: str, run_id: str, table: str,
              params: dict | None = None, scope: str = "full", name: str | None = None) -> dict:
    return pq.benchmark(use_case, overrides, model, run_id, table, params=params, scope=scope, name=name)


@task(name="prequential-unsupervised")
def unsupervised(use_case: str, overrides: list[str], run_id: str, table: str, supervised: dict) -> dict:
    return pq.unsupervised(use_case, overrides, run_id, table, supervised)


@task(name="prequential-report")
def write_report(use_case: str, summary: dict) -> dict:
    return pq.report(use_case, summary)


@flow(name="fraud-prequential")
def prequential_benchmark(use_case: str = "fraud", overrides: list[str] | None = None) -> dict:
    """The handbook's prequential protocol over every configured model; returns the summary."""
    settings.apply_env_defaults()  # first thing: see flows/__init__.py
    t0 = time.perf_counter()
    overrides = list(overrides or [])
    p = usecase.get(use_case, overrides).cfg.prequential  # fails fast on unknown keys
    fr_id = str(flow_run.id) if flow_run.id else None
    begun = start(use_case, overrides, fr_id)
    run_id = begun["run_id"]
    try:
        prepared = prepare(use_case, overrides, run_id)
        table = prepared["table"]
        results = [benchmark.with_options(task_run_name=f"prequential-{m}")(use_case, overrides, m, run_id, table)
                   for m in p.models]
        chosen = {r["model"]: r["params"] for r in results}
        if p.book_sequence and "sequence" in chosen:  # the handbook's way: history from inside the split only
            results.append(benchmark.with_options(task_run_name="prequential-sequence-in-split")(
                use_case, overrides, "sequence", run_id, table, params=chosen["sequence"], scope="split",
                name="sequence_in_split"))
        unsup = None
        if p.unsupervised:
            unsup = unsupervised(use_case, overrides, run_id, table,
                                 {m: chosen[m] for m in ("logistic_regression", "xgboost") if m in chosen})
    except BaseException:
        tracking.end_run(run_id, ok=False)
        raise
    summary = {"use_case": use_case, "protocol": "prequential", "run_id": run_id, "flow_run_id": fr_id,
               "data_version": prepared["data_version"], "folds": prepared["folds"], "n_folds": p.n_folds,
               "results": [{k: v for k, v in r.items() if k != "timings"} for r in results],
               "unsupervised": unsup and {k: v for k, v in unsup.items() if k != "timings"}}
    parts = [begun, prepared, *results, *([unsup] if unsup else [])]
    summary["timings"] = timing.merge_timings([x["timings"] for x in parts], time.perf_counter() - t0)
    made = write_report(use_case, summary)
    summary["report"], summary["console"] = made["paths"], made["console"]
    summary["headline"] = (f"{use_case} (prequential): report {made['paths']['md']}; nothing registered, "
                           "@champion unchanged")
    tracking.log_metrics(run_id, {f"time/{k}_s": v for k, v in summary["timings"].items()})
    tracking.end_run(run_id, ok=True)
    create_markdown_artifact(made["console"], key=f"{use_case}-prequential", description=summary["headline"])
    return summary
