"""Prefect flows: sequencing only. The work lives in ``deepflow.steps``.

``train_pipeline(use_case)``: validate -> train every member -> register best -> promote. An
entry with ``budget_s`` runs within it (``deepflow.budget``): members that cannot fit are skipped
and listed in the summary (``skipped``), the others train within the time left.

First, the tracking server must answer (``tracking.preflight``), and runs a killed process left
RUNNING are marked FAILED (``tracking.fail_stale_runs``), their Prefect flow runs Crashed.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.runtime import deployment, flow_run
from prefect.states import Crashed

from deepflow import budget, report, settings, steps, tracking, usecase

log = logging.getLogger(__name__)

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
          data_version: str, time_limit_s: float | None = None) -> dict:
    return steps.train_member(use_case, overrides, member, kind, parent_run_id, data_version, time_limit_s)


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


def train_members(uc: usecase.UseCase, overrides: list[str], run_id: str, data_version: str,
                  clock: budget.Budget) -> list[dict]:
    """Train the members in order; with a budget, skip those it cannot fit and give the others
    what is left (see deepflow/budget.py). Raises when the budget left room for none."""
    results = []
    for member, kind in uc.members():
        plan = clock.plan(member)
        if plan.skipped:
            continue
        result = train.with_options(task_run_name=f"train-{member}")(
            uc.name, overrides, member, kind, run_id, data_version, plan.time_limit_s)
        clock.record(member, plan.time_limit_s, result["timings"])
        results.append(result)
    if not results:
        raise RuntimeError(f"{uc.name}: the budget of {clock.budget_s:.0f} s left no time to train any member "
                           f"({clock.skipped[0]['reason']}); raise budget_s in {uc.entry.path}")
    return results


def crash_flow_runs(swept: list[dict]) -> None:
    """The Prefect flow runs of runs a killed process left RUNNING (``tracking.fail_stale_runs``):
    Crashed with the same reason, when this Prefect server has them and they are not final yet."""
    reasons = {s["flow_run_id"]: s["reason"] for s in swept if s["flow_run_id"] not in ("", "none")}
    if not reasons:
        return
    with get_client(sync_client=True) as client:
        for flow_run_id, reason in reasons.items():
            try:
                state = client.read_flow_run(flow_run_id).state
                if state is not None and not state.is_final():
                    client.set_flow_run_state(flow_run_id, Crashed(message=reason), force=True)
            except Exception as exc:  # another Prefect server's run: the MLflow run is what matters
                log.warning("flow run %s left as it is: %s", flow_run_id, str(exc)[:200])


# The entry names are an enum for the UI's Run form and the API (checked by the server when a
# deployment run is created); in-process calls are not re-validated against that import-time list,
# so an entry file added after import still runs (usecase.get() rejects unknown names itself).
@flow(name="train-pipeline", validate_parameters=False)
def train_pipeline(use_case: UseCaseName, overrides: list[str] | None = None,
                   promote_challenger: bool = True, started_at: float | None = None) -> dict:
    """Validate the data version, train all members, register the best, maybe promote it.

    ``started_at``: when the user's command started (epoch seconds; the CLI passes its process's
    start), so a budget counts the CLI's and Prefect's start-up too; None: from the flow's start.
    """
    settings.apply_env_defaults()  # first thing: see flows/__init__.py
    t0 = time.perf_counter()
    since_command = 0.0 if started_at is None else min(max(time.time() - started_at, 0.0), 3600.0)
    overrides = list(overrides or [])
    uc = usecase.get(use_case, overrides)  # fails fast on unknown use case or config key
    tracking.preflight()  # an unreachable tracking server fails here, named, before any work
    crash_flow_runs(tracking.fail_stale_runs())
    if getattr(uc.cfg, "protocol", "single") == "prequential":  # fraud's benchmark flow: registers nothing
        from flows.prequential import prequential_benchmark

        return prequential_benchmark(use_case, overrides)
    fr_id = str(flow_run.id) if flow_run.id else None
    orchestration = {"flow_run_id": fr_id, "flow_run_name": flow_run.name,
                     "deployment_id": str(deployment.id) if deployment.id else None}
    clock = budget.Budget(getattr(uc.cfg, "budget_s", None), started=t0 - since_command,  # the entry's promise
                          estimate=getattr(uc, "after_fit_estimate_s", None))
    begun = start(use_case, overrides, fr_id)
    run_id = begun["run_id"]
    try:
        checked = validate(use_case, overrides, run_id)
        results = train_members(uc, overrides, run_id, checked["data_version"], clock)
        registered = register(use_case, overrides, results, checked, run_id, orchestration)
        promoted = promote(use_case, overrides, f"pipeline:{fr_id}") if promote_challenger else None
    except BaseException:
        tracking.end_failed_run(run_id)
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
        "budget_s": clock.budget_s,
        "skipped": list(clock.skipped),
    }
    summary["budget"] = clock.summary()
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
