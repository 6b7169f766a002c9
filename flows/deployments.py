"""Prefect deployments: one per scheduled entry's pipeline plus one for monitoring, with the
schedules of the entries (``datasets/<name>.yaml``: ``schedule:``) as ``operations.load`` resolves
them with ``src/deepflow/operations.yaml``.

Two ways to run them:

- ``serve_all``  (``deepflow schedule``): this process polls the API and runs due flow runs as
  subprocesses. Needs nothing but a Prefect API; the local default.
- ``deploy_to_pool`` (``deepflow deploy --pool P``): registers the same deployments with a work
  pool; ``prefect worker start --pool P`` on any machine that has this checkout runs them.

Deployments are addressed as ``train-pipeline/<entry>``, ``monitor/incoming`` and
``self-check/reproduce`` (the nightly ``deepflow reproduce --quick``); each allows one
run in flight (a second is cancelled by the server: no pile-up of retrainings).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import (
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
    StateType,
)
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.client.schemas.sorting import FlowRunSort
from prefect.states import Cancelled

from deepflow import operations, settings
from deepflow.operations import OpsConfig, Schedule

ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
IN_FLIGHT = [StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]


def _schedules(s: Schedule, timezone: str) -> list:
    if s.cron:
        return [CronSchedule(cron=s.cron, timezone=timezone)]
    if s.interval_seconds:
        return [IntervalSchedule(interval=timedelta(seconds=s.interval_seconds), timezone=timezone)]
    return []


def _when(s: Schedule) -> str:
    if s.cron:
        return f" (cron {s.cron})"
    return f" (every {s.interval_seconds} s)" if s.interval_seconds else " (on request: API, UI, drift)"


def _specs(ops: OpsConfig) -> list[dict]:
    """What each deployment is: flow entrypoint, name, schedule, default parameters."""
    specs = [
        {"entrypoint": "flows/pipeline.py:train_pipeline", "name": uc,
         "schedules": _schedules(s, ops.timezone), "active": s.enabled,
         "parameters": {"use_case": uc, "overrides": list(s.overrides), "promote_challenger": True},
         "tags": ["deepflow", uc], "description": f"Validate, train, register and promote {uc}{_when(s)}."}
        for uc, s in ops.pipelines.items()
    ]
    m = ops.monitor.schedule
    specs.append({"entrypoint": "flows/monitor.py:monitor", "name": operations.MONITOR_DEPLOYMENT,
                  "schedules": _schedules(m, ops.timezone), "active": m.enabled, "parameters": {},
                  "tags": ["deepflow", "monitor"],
                  "description": "Drift report for each new batch in data/incoming/<entry>/; "
                                 "retrains on drift (one in flight, cooldown, min rows)."})
    c = ops.self_check.schedule
    specs.append({"entrypoint": "flows/self_check.py:self_check", "name": operations.SELF_CHECK_DEPLOYMENT,
                  "schedules": _schedules(c, ops.timezone), "active": c.enabled,
                  "parameters": {"use_cases": list(ops.self_check.use_cases or [])},
                  "tags": ["deepflow", "self-check"],
                  "description": "deepflow reproduce <entry>@champion --quick for each entry: the registered "
                                 "model re-scored, training twice on a sample; fails when one does not reproduce."})
    return specs


def _flow(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(settings.PROJECT_ROOT / entrypoint))


def runner_deployments(ops: OpsConfig) -> list:
    """The deployments as ``serve`` wants them (this process runs the flows)."""
    out = []
    for spec in _specs(ops):
        flow = _flow(spec["entrypoint"])
        out.append(flow.to_deployment(
            name=spec["name"], schedules=spec["schedules"] or None, parameters=spec["parameters"],
            tags=spec["tags"], description=spec["description"], concurrency_limit=ONE_AT_A_TIME,
            paused=not spec["active"]))
    return out


def deploy_to_pool(ops: OpsConfig, pool: str) -> list[str]:
    """Register the deployments with work pool ``pool``; its workers run them from this checkout."""
    from prefect.flows import Flow

    ids = []
    for spec in _specs(ops):
        flow = Flow.from_source(source=str(settings.PROJECT_ROOT), entrypoint=spec["entrypoint"])
        ids.append(str(flow.deploy(
            name=spec["name"], work_pool_name=pool, schedules=spec["schedules"] or None,
            parameters=spec["parameters"], tags=spec["tags"], description=spec["description"],
            concurrency_limit=ONE_AT_A_TIME, paused=not spec["active"], build=False, push=False,
            print_next_steps=False, ignore_warnings=True)))
    return ids


def _runs_of(client, dep_id: str, *, states: list[StateType] | None = None, tag: str | None = None,
             **query) -> list:
    """Flow runs of one deployment, optionally only those in ``states`` or carrying ``tag``."""
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep_id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)) if states else None,
            tags=FlowRunFilterTags(all_=[tag]) if tag else None),
        **{"limit": 200, **query})


# --- catch-up ----------------------------------------------------------------------------------


def catch_up(deployment_ids: list[str], policy: str, now: datetime | None = None) -> list[str]:
    """Apply the catch-up policy: cancel missed (late) runs that a later missed run supersedes.

    Returns the ids of the runs cancelled. Runs in the future are left alone, and so is anything a
    runner or worker has already picked up (only runs still *Scheduled* are touched).
    """
    now = now or datetime.now(UTC)
    skipped: list[str] = []
    with get_client(sync_client=True) as client:
        for dep_id in deployment_ids:
            runs = _runs_of(client, dep_id, states=[StateType.SCHEDULED])
            due = [(str(r.id), r.expected_start_time) for r in runs if r.expected_start_time]
            superseded = operations.superseded(due, now, policy)
            latest = max((t for _, t in due if t <= now), default=None)
            for run_id in superseded:
                client.set_flow_run_state(run_id, Cancelled(
                    message=f"skipped by catch-up policy {policy!r}: superseded by the run due at "
                            f"{latest:%Y-%m-%d %H:%M:%S %Z}"))
                skipped.append(run_id)
    return skipped


def _catch_up_forever(deployment_ids: list[str], policy: str, stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        try:
            catch_up(deployment_ids, policy)
        except Exception as exc:  # the API restarting must not kill the runner: report and retry
            print(f"catch-up: {type(exc).__name__}: {exc}", flush=True)


def serve_all(ops: OpsConfig, catch_up_every: float = 15.0) -> None:
    """Serve every deployment until interrupted, applying the catch-up policy on start and then
    every ``catch_up_every`` seconds (before the runner picks up the missed runs)."""
    deployments = runner_deployments(ops)
    ids = [str(d.apply()) for d in deployments]
    skipped = catch_up(ids, ops.catch_up)
    if skipped:
        print(f"catch-up ({ops.catch_up}): skipped {len(skipped)} missed run(s)", flush=True)
    stop = threading.Event()
    threading.Thread(target=_catch_up_forever, args=(ids, ops.catch_up, stop, catch_up_every),
                     daemon=True, name="catch-up").start()
    try:
        serve(*deployments, print_starting_message=True)
    finally:
        stop.set()


# --- queries the monitor's retraining rules need --------------------------------------------------


def deployment_id(name: str) -> str | None:
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return str(client.read_deployment_by_name(name).id)
        except ObjectNotFound:
            return None


def in_flight(dep_id: str) -> list[str]:
    """Runs of the deployment that are running or about to (incl. triggered ones not started yet)."""
    now = datetime.now(UTC)
    with get_client(sync_client=True) as client:
        runs = _runs_of(client, dep_id, states=[*IN_FLIGHT, StateType.SCHEDULED])
    return [f"{r.name} ({r.state_name})" for r in runs
            if r.state_type in IN_FLIGHT or operations.DRIFT_TAG in r.tags
            or (r.expected_start_time and r.expected_start_time <= now)]


def last_drift_trigger(dep_id: str) -> datetime | None:
    with get_client(sync_client=True) as client:
        runs = _runs_of(client, dep_id, tag=operations.DRIFT_TAG, sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                        limit=1)
    return runs[0].created if runs else None
