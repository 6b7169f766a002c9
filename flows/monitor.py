"""Prefect flow: watch ``data/incoming/<entry>/`` and retrain on drift. Sequencing only: the
drift report is ``deepflow.monitoring.check``, the retraining rules ``operations.decide_retraining``.

``monitor(use_case=None)``: for each entry with new batches -> drift report (MLflow run +
Prefect artifact) -> maybe trigger deployment ``train-pipeline/<entry>`` -> mark batches done.
A retraining is triggered only if the drift is above the thresholds, the new batches hold at
least the entry's ``min_rows`` rows (its ``monitor.min_rows``, or the operations config's), no
run of that deployment is in flight, and the last drift-triggered one is older than the cooldown.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.deployments import run_deployment

from deepflow import monitoring, operations, settings


@task(name="drift-report")
def drift_report(use_case: str, paths: list[str], overrides: list[str]) -> dict:
    return monitoring.check(use_case, [Path(p) for p in paths], operations.load(overrides=overrides))


@task(name="retraining-decision")
def decide(use_case: str, report: dict, min_rows: int, cooldown_minutes: float) -> dict:
    from flows import deployments

    name = f"{operations.PIPELINE_FLOW}/{use_case}"
    dep_id = deployments.deployment_id(name)
    decision = operations.decide_retraining(
        drifted=report["drifted"], rows=report["rows"], min_rows=min_rows,
        in_flight=deployments.in_flight(dep_id) if dep_id else [],
        last_triggered=deployments.last_drift_trigger(dep_id) if dep_id else None,
        now=datetime.now(UTC), cooldown=timedelta(minutes=cooldown_minutes),
        deployment_exists=dep_id is not None)
    out = {"trigger": decision.trigger, "reason": decision.reason, "final": decision.final,
           "deployment": name, "flow_run_id": None}
    if decision.trigger:
        run = run_deployment(name, timeout=0, as_subflow=False, tags=[operations.DRIFT_TAG],
                             flow_run_name=f"{use_case}-drift-retrain-{datetime.now(UTC):%Y%m%d-%H%M%S}",
                             idempotency_key=f"drift:{use_case}:{report['run_id']}")
        out["flow_run_id"] = str(run.id)
    return out


@flow(name="monitor")
def monitor(use_case: str | None = None, batch: str | None = None, overrides: list[str] | None = None) -> list[dict]:
    """Drift-check new batches of entry ``use_case`` (default: every monitored one); retrain on drift.

    ``batch``: check this file/folder instead of the inbox (it is not marked as processed).
    ``overrides``: ``key=value`` overrides of the operations config (e.g. monitor.cooldown_minutes=0).
    """
    settings.apply_env_defaults()  # first thing: see flows/__init__.py
    log = get_run_logger()
    overrides = list(overrides or [])
    ops = operations.load(overrides=overrides)
    names = [use_case] if use_case else list(ops.monitor.use_cases)
    results = []
    for name in names:
        inbox = operations.inbox(ops, name)
        paths = [Path(batch)] if batch else operations.pending_batches(inbox)
        if not paths:
            log.info(f"{name}: no new batches in {inbox}")
            results.append({"use_case": name, "batches": [], "decision": {"reason": "no new batches"}})
            continue
        if use_case is None:  # every entry: one that cannot be checked must not stop the others
            try:
                report = drift_report(name, [str(p) for p in paths], overrides)
            except Exception as exc:
                log.error(f"{name}: drift check failed: {type(exc).__name__}: {exc}")
                results.append({"use_case": name, "batches": [p.name for p in paths], "error": str(exc),
                                "decision": {"reason": f"not checked: {type(exc).__name__}: {exc}"}})
                continue
        else:
            report = drift_report(name, [str(p) for p in paths], overrides)
        decision = decide(name, report, ops.monitor.min_rows.get(name, 0), ops.monitor.cooldown_minutes)
        if decision["final"] and not batch:
            operations.mark_processed(inbox, paths, {"drifted": report["drifted"], "decision": decision["reason"],
                                                     "report": report["report_path"]})
        verdict = "DRIFT" if report["drifted"] else "no drift"
        log.info(f"{name}: {verdict} (score {report['score']:.3f}, {report['rows']} rows); {decision['reason']}")
        text = report["markdown"] + f"\n\n## Retraining\n\n{decision['reason']}" + (
            f" (flow run {decision['flow_run_id']})" if decision["flow_run_id"] else "")
        create_markdown_artifact(text, key=re.sub(r"[^a-z0-9-]+", "-", f"{name}-drift".lower()),
                                 description=f"{name}: {verdict}; {decision['reason']}")
        results.append({"use_case": name, "batches": [p.name for p in paths], "report": report["report_path"],
                        "drifted": report["drifted"], "score": report["score"], "rows": report["rows"],
                        "run_id": report["run_id"], "decision": decision})
    return results
