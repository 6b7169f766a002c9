"""What a deployment run costs on top of the same pipeline run in-process, measured side by side.

Starts a local Prefect server and a ``deepflow schedule`` runner (schedules paused), then for the
same small fraud pipeline measures, N times each and alternating:

- in-process: ``deepflow run fraud`` against the same server (what a user at a terminal does);
- deployment: ``prefect deployment run train-pipeline/fraud`` -> the runner picks it up and runs it
  in a subprocess (what a schedule, the UI's Run button, the API and the drift monitor do).

Prints the wall time of each, the pick-up latency (created -> running) and the ratio.
Usage: .venv/bin/python bench/deployment_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepflow import dashboards, settings  # noqa: E402
from deepflow.usecases.fraud.prepare import add_features, split  # noqa: E402
from deepflow.usecases.fraud.simulate import simulate  # noqa: E402
from tests.conftest import FAST, SMALL, SMALL_SPLIT, free_port  # noqa: E402

OVERRIDES = [*FAST, "candidates=[shallow,deep]", "baselines=[logistic_regression]", "promotion.floor=0.0"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    settings.apply_env_defaults()
    work = Path(tempfile.mkdtemp(prefix="deepflow-bench-deploy-"))
    prepared = work / "prepared"
    prepared.mkdir()
    for name, frame in split(add_features(simulate(SMALL)), SMALL_SPLIT).items():
        frame.to_parquet(prepared / f"{name}.parquet", index=False)
    overrides = [f"prepared_dir={prepared}", *OVERRIDES]
    ops = work / "operations.yaml"
    ops.write_text(yaml.safe_dump({"pipelines": {"fraud": {"enabled": False, "overrides": overrides},
                                                 **{n: {"enabled": False} for n in ("nlp", "traffic")}},
                                   "monitor": {"schedule": {"enabled": False}, "use_cases": ["fraud"]}}))
    os.environ.update(PREFECT_HOME=str(work / "prefect"), DEEPFLOW_REPORTS_DIR=str(work / "reports"))
    server = dashboards.start_prefect_server(free_port(), ui=False)
    env = {**os.environ, "PREFECT_API_URL": f"{server.url}/api", "DEEPFLOW_OPS_CONFIG": str(ops),
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "DEEPFLOW_LOCK_DIR": str(work / "locks")}
    runner = subprocess.Popen([sys.executable, "-m", "deepflow.cli", "schedule"], env=env, start_new_session=True,
                              stdout=(work / "schedule.log").open("wb"), stderr=subprocess.STDOUT)
    inproc, deployed, pickup, trigger_cli = [], [], [], []
    try:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
            _wait_for_deployment(get_client)
            for i in range(args.repeats):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "deepflow.cli", "run", "fraud",
                                *[x for o in overrides for x in ("--set", o)]],
                               env=env, check=True, capture_output=True)
                inproc.append(time.perf_counter() - t0)

                t0 = time.perf_counter()
                out = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "train-pipeline/fraud"],
                                     env=env, check=True, capture_output=True, text=True).stdout
                run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
                run = _wait_done(get_client, run_id)
                deployed.append((run.end_time - run.created).total_seconds())
                trigger_cli.append(time.perf_counter() - t0 - deployed[-1])
                pickup.append((run.start_time - run.created).total_seconds())
                print(f"repeat {i + 1}: in-process {inproc[-1]:.1f} s, deployment {deployed[-1]:.1f} s "
                      f"(pick-up {pickup[-1]:.1f} s)", flush=True)
    finally:
        os.killpg(runner.pid, signal.SIGINT)
        runner.wait(timeout=60)
        server.stop()
    med = statistics.median
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}")
    print(f"fraud pipeline (small simulated data, shallow + deep + LR), median of {args.repeats}:")
    print(f"  in-process `deepflow run`           {med(inproc):6.1f} s")
    print(f"  deployment run, created -> completed {med(deployed):6.1f} s  (pick-up {med(pickup):.1f} s; "
          f"the `prefect deployment run` CLI itself adds {med(trigger_cli):.1f} s)")
    print(f"  ratio deployment / in-process        {med(deployed) / med(inproc):6.2f}x")


def _wait_for_deployment(get_client, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            try:
                client.read_deployment_by_name("train-pipeline/fraud")
                return
            except Exception:
                time.sleep(1)
    raise SystemExit("the runner did not register train-pipeline/fraud")


def _wait_done(get_client, run_id: str, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
        if run.state and run.state.is_final():
            if not run.state.is_completed():
                raise SystemExit(f"deployment run ended {run.state.name}: {run.state.message}")
            return run
        time.sleep(0.5)
    raise SystemExit("deployment run did not finish")


if __name__ == "__main__":
    main()
