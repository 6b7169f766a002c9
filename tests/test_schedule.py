"""Deployments, schedules, triggers and drift-triggered retraining against a real Prefect server.

One Prefect server (SQLite in tmp) per module; `deepflow schedule` runs as a real subprocess and
executes flow runs as its own subprocesses, like on a user's machine. Everything started here is
stopped here; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import FAST, free_port

pytestmark = pytest.mark.slow

# Pin the members: a tiny, fast fraud pipeline whatever the shipped config trains.
TINY = [*FAST, "candidates=[shallow]", "baselines=[logistic_regression]", "promotion.floor=0.0"]


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deepflow import dashboards

    home = tmp_path_factory.mktemp("prefect-home")
    server = dashboards.start_prefect_server(free_port(), ui=False, extra_env={"PREFECT_HOME": str(home)})
    api = f"{server.url}/api"
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield api
    finally:
        server.stop()


def _env(tmp_path: Path, api: str, ops_path: Path) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api, "DEEPFLOW_OPS_CONFIG": str(ops_path),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "DEEPFLOW_REPORTS_DIR": str(tmp_path / "reports"), "DEEPFLOW_LOCK_DIR": str(tmp_path / "locks"),
            "PREFECT_HOME": str(tmp_path / "client-home")}


def _ops_file(tmp_path: Path, prepared_dir: Path, interval: int) -> Path:
    from deepflow import usecase

    # The other scheduled entries keep a deployment (their schedules come from their entry files)
    # but never fire on their own here.
    paused = {name: {"enabled": False} for name, e in usecase.entries().items() if name != "fraud" and e.schedule}
    path = tmp_path / "operations.yaml"
    path.write_text(yaml.safe_dump({
        "pipelines": {"fraud": {"interval_seconds": interval,
                                "overrides": [f"prepared_dir={prepared_dir}", *TINY]}, **paused},
        "monitor": {"schedule": {"enabled": False}, "use_cases": ["fraud"],
                    "incoming_dir": str(tmp_path / "incoming"), "cooldown_minutes": 60,
                    "min_rows": {"fraud": 500}},
    }))
    return path


def _runs(deployment: str, **filters):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])), limit=100)
    return [r for r in runs if all(getattr(r, k) == v for k, v in filters.items())]


def _wait(what: str, check, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := check()):
            return found
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C: serve pauses its schedules and exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _deepflow(env: dict, *args: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, "-m", "deepflow.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"deepflow {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_schedule_fires_api_triggers_and_drift_retrains_once(prefect_api, prepared_dir, tmp_path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    from deepflow import operations

    ops_path = _ops_file(tmp_path, prepared_dir, interval=10)
    env = _env(tmp_path, prefect_api, ops_path)
    log = tmp_path / "schedule.log"
    proc = subprocess.Popen([sys.executable, "-m", "deepflow.cli", "schedule"], env=env, start_new_session=True,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        # 1. The schedule fires a pipeline run on its own, and it completes. The schedule is paused
        # once the first one starts: every 10 s, more would pile up behind it on 2 cores.
        _wait("a scheduled run to start", lambda: [r for r in _runs("fraud", auto_scheduled=True)
                                                   if r.state_type in (StateType.RUNNING, StateType.COMPLETED)],
              timeout=300, proc=proc, log=log)
        with get_client(sync_client=True) as client:  # quiet the schedule for the rest of the test
            dep = client.read_deployment_by_name("train-pipeline/fraud")
            client.pause_deployment(dep.id)
        _wait("the scheduled runs to settle", lambda: not any(
            r.state_type in (StateType.PENDING, StateType.RUNNING) for r in _runs("fraud")),
            timeout=300, proc=proc, log=log)
        assert _runs("fraud", state_type=StateType.COMPLETED, auto_scheduled=True), \
            [(r.name, r.state_type) for r in _runs("fraud")]

        # 2. A run triggered through the API (the Prefect CLI) with typed parameters completes.
        done = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "train-pipeline/fraud",
                               "--param", "promote_challenger=false"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", done.stdout).group(1)
        _wait("the API-triggered run to complete", lambda: any(
            str(r.id) == run_id and r.state_type == StateType.COMPLETED for r in _runs("fraud")),
            timeout=300, proc=proc, log=log)
        bad = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "train-pipeline/fraud",
                              "--param", "use_case=spam"], env=env, capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0  # the typed parameter rejects an unknown use case

        # 3. A drifted batch triggers exactly one retraining; a second one inside the cooldown doesn't.
        inbox = tmp_path / "incoming" / "fraud"
        inbox.mkdir(parents=True)  # more of the champion's own data: transactions from its test week
        pd.read_parquet(prepared_dir / "test.parquet").to_parquet(inbox / "same-as-before.parquet")
        calm = _deepflow(env, "monitor", "fraud")
        assert "no drift" in calm, calm
        _deepflow(env, "incoming", "fraud", "--rows", "1500", "--drift", "1", "--seed", "4")
        first = _deepflow(env, "monitor", "fraud")
        assert "DRIFT" in first and "retraining triggered" in first, first
        _deepflow(env, "incoming", "fraud", "--rows", "1500", "--drift", "1", "--seed", "5")
        second = _deepflow(env, "monitor", "fraud")
        assert "DRIFT" in second and ("cooldown" in second or "in flight" in second), second
        drift_runs = [r for r in _runs("fraud") if operations.DRIFT_TAG in r.tags]
        assert len(drift_runs) == 1
        _wait("the drift-triggered retraining to complete", lambda: all(
            r.state_type == StateType.COMPLETED for r in _runs("fraud") if operations.DRIFT_TAG in r.tags),
            timeout=300, proc=proc, log=log)
        # Retraining done, but still inside the cooldown: drift alone does not start another one.
        _deepflow(env, "incoming", "fraud", "--rows", "1500", "--drift", "1", "--seed", "6")
        third = _deepflow(env, "monitor", "fraud")
        assert "DRIFT" in third and "in cooldown" in third, third
        assert len([r for r in _runs("fraud") if operations.DRIFT_TAG in r.tags]) == 1
        assert _deepflow(env, "monitor", "fraud").strip().endswith("no new batches")
        reports = list((tmp_path / "reports" / "monitor" / "fraud").glob("*/drift.md"))
        assert len(reports) == 4
    finally:
        _stop(proc)


def test_catch_up_runs_only_the_latest_missed_run(prefect_api, tmp_path) -> None:
    """Runs missed while nothing was serving: all but the latest are cancelled, saying why."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Scheduled

    from deepflow import operations
    from flows import deployments

    ops = operations.load(overrides=["pipelines={paysim: {cron: '0 2 * * *', enabled: false}}"])
    dep = next(d for d in deployments.runner_deployments(ops) if d.name == "paysim")
    dep_id = str(dep.apply())
    now = datetime.now(UTC)
    with get_client(sync_client=True) as client:
        runs = {hours: client.create_flow_run_from_deployment(
            dep_id, state=Scheduled(scheduled_time=now + timedelta(hours=hours))).id for hours in (-3, -2, -1, 5)}
    skipped = deployments.catch_up([dep_id], "latest")
    assert sorted(skipped) == sorted(str(runs[h]) for h in (-3, -2))
    with get_client(sync_client=True) as client:
        states = {h: client.read_flow_run(i).state for h, i in runs.items()}
    assert {h: s.type for h, s in states.items()} == {
        -3: StateType.CANCELLED, -2: StateType.CANCELLED, -1: StateType.SCHEDULED, 5: StateType.SCHEDULED}
    assert "superseded" in states[-3].message
    assert deployments.catch_up([dep_id], "latest") == []  # idempotent
