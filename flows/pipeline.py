"""Prefect flows: sequencing only. The work lives in ``deepflow.steps``.

``train_pipeline(use_case)``: validate -> train every member -> register best -> promote.
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run

from deepflow import report, settings, steps, tracking, usecase

# Typed parameters: the Prefect UI's "Run" form shows a drop-down of use cases, a list of
# key=value overrides and a promote switch, and the API rejects anything else.
UseCaseName = Literal[tuple(usecase.entries(usecase.warn_broken)) or ("none",)]  # type: ignore[valid-type]


@task(name="start-run")
def start(use_case: str, overrides: list[str], flow_run_id: str | None) -> dict:
    return steps.start_pipeline(use_case, overrides, flow_run_id)


@task(name="validate")
def validate(use_case: str, overrides: list[str], run_id: str) -> dict:
    return steps.validate_data(use_case, overrides, run_id)


@task(name="train")
def train(use_case: str, overrides: list[str], member: str, kind: str, parent_run_id: str,
          data_version: str) -> dict:
    return steps.train_member(use_case, overrides, member, kind, parent_run_id, data_version)


@task(name="register")
def register(use_case: str, overrides: list[str], results: list[dict], validation: dict,
             run_id: str, orchestration: dict) -> dict:
    return steps.register_best(use_case, overrides, results, validation, run_id, orchestration)


@task(name="promote")
def promote(use_case: str, overrides: list[str], actor: str) -> dict:
    return steps.promote_challenger(use_case, overrides, actor=actor)


@task(name="bake-off-report")
def bakeoff(use_case: str, overrides: list[str], summary: dict) -> dict:
    return steps.bakeoff_report(use_case, overrides, summary)


# The entry names are an enum for the UI's Run form and the API (checked by the server when a
# deployment run is created); in-process calls are not re-validated against that import-time list,
# so an entry file added after import still runs (usecase.get() rejects unknown names itself).
@flow(name="train-pipeline", validate_parameters=False)
def train_pipeline(use_case: UseCaseName, overrides: list[str] | None = None,
                   promote_challenger: bool = True) -> dict:
    """Validate the data version, train all members, register the best, maybe promote it."""
    settings.apply_env_defaults()  # first thing: see flows/__init__.py
    t0 = time.perf_counter()
    overrides = list(overrides or [])
    uc = usecase.get(use_case, overrides)  # fails fast on unknown use case or config key
    if getattr(uc.cfg, "protocol", "single") == "prequential":  # fraud's benchmark flow: registers nothing
        from flows.prequential import prequential_benchmark

        return prequential_benchmark(use_case, overrides)
    fr_id = str(flow_run.id) if flow_run.id else None
    orchestration = {"flow_run_id": fr_id, "flow_run_name": flow_run.name,
                     "deployment_id": str(deployment.id) if deployment.id else None}
    begun = start(use_case, overrides, fr_id)
    run_id = begun["run_id"]
    try:
        checked = validate(use_case, overrides, run_id)
        results = [
            train.with_options(task_run_name=f"train-{member}")(
                use_case, overrides, member, kind, run_id, checked["data_version"])
            for member, kind in uc.members()
        ]
        registered = register(use_case, overrides, results, checked, run_id, orchestration)
        promoted = promote(use_case, overrides, f"pipeline:{fr_id}") if promote_challenger else None
    except BaseException:
        tracking.end_run(run_id, ok=False)
        raise
    summary = {
        "use_case": use_case,
        "primary": uc.primary_metric,
        "run_id": run_id,
        "flow_run_id": fr_id,
        "data_version": checked["data_version"],
        "members": results,
        "registered": registered,
        "promotion": promoted,
    }
    made = bakeoff(use_case, overrides, summary)
    summary["bakeoff"] = made["paths"]
    parts = [begun, checked, *results, registered, *([promoted] if promoted else []), made]
    summary["timings"] = report.merge_timings([p["timings"] for p in parts],
                                              time.perf_counter() - t0)
    text = report.markdown(summary)
    tracking.log_metrics(run_id, {f"time/{k}_s": v for k, v in summary["timings"].items()})
    tracking.log_text(run_id, text, "summary.md")
    tracking.end_run(run_id, ok=True)
    create_markdown_artifact(text, key=f"{use_case}-summary", description=report.champion_line(summary))
    return summary
