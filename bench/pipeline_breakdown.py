"""Where a default ``deepflow run fraud`` spends its wall time, per way of running Prefect.

Runs the real command as a user does (``python -m deepflow.cli run fraud``, a subprocess, whole
wall time timed) on the DVC-prepared data, each run into its own copy of a fresh MLflow SQLite store
(schema made beforehand, outside the clock) and one Prefect home initialised beforehand, in these
modes, side by side in one invocation:

- ``serial``: a server of the command's own, waited for before the flows are imported (the order
  before the overlap; a wrapper restores it, and times that wait);
- ``command``: a server of the command's own, booting while the command imports its flows
  (``DEEPFLOW_PREFECT_SERVER=command``);
- ``shared-start``: no server running; the command starts the shared background server
  (``DEEPFLOW_PREFECT_SERVER=shared``, the default), what the first command after an idle stop pays;
- ``shared``: the shared server already running (started by ``shared-start``, else here), reused;
- ``prefect``: Prefect's own temporary server (no ``deepflow`` server management at all).

For each it prints the process wall time and the flow's own breakdown (``deepflow run`` prints it:
``report.TIMING_CATEGORIES``; a server wait outside the flow, ``serial`` only, counts as
orchestration), and the share of orchestration + tracking (goal <= 15 %).

    .venv/bin/python bench/pipeline_breakdown.py [--use-case fraud] [--modes serial,command,...]
        [--repeats 1] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deepflow import report, settings

MODES = ("serial", "command", "shared-start", "shared", "prefect")
# Prefect's own temporary server: the CLI's app without main()'s server management.
PREFECT_OWN = "from deepflow import cli, settings; settings.apply_env_defaults(); cli.app()"
# The order before the overlap: ensure() and wait at once, then import the flows; the wait is timed.
SERIAL = """
import sys, time
from deepflow import cli, prefect_api
ensure = prefect_api.ensure
def serial(log_dir):
    url = ensure(log_dir)
    t = time.perf_counter()
    prefect_api.ready()
    print(f"bench: server wait {time.perf_counter() - t:.3f}", file=sys.stderr, flush=True)
    return url
prefect_api.ensure = serial
cli.main()
"""
TIMES = re.compile(r"^\s*time \(s\): (.*)$", re.MULTILINE)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--use-case", default="fraud")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown mode(s) {sorted(unknown)}")
    work = Path(tempfile.mkdtemp(prefix="deepflow-bench-pipeline-"))
    settings.apply_env_defaults()
    os.environ.update(PREFECT_HOME=str(work / "prefect"), DEEPFLOW_PREFECT_PORT="0",  # never take 4200
                      DEEPFLOW_LOCK_DIR=str(work / "locks"))
    os.environ.pop("PREFECT_API_URL", None)
    store = fresh_store(work, args.use_case)
    from deepflow import prefect_server

    t = time.perf_counter()
    start_shared()  # migrates the fresh Prefect home, outside the clock
    print(f"(Prefect home initialised, shared server up, in {time.perf_counter() - t:.1f} s, not counted)")
    results: dict[str, list[dict]] = {m: [] for m in modes}
    try:
        for r in range(args.repeats):
            for mode in modes:
                if mode == "shared" and prefect_server.status()["state"] != "running":
                    start_shared()
                elif mode != "shared":
                    prefect_server.stop(force=True)
                result = run(mode, args, work, store, f"{mode}-{r}")
                results[mode].append(result)
                print(line(mode, result), flush=True)
    finally:
        print(prefect_server.stop(force=True))
    summarise(args.use_case, results)


def fresh_store(work: Path, use_case: str) -> Path:
    """An MLflow SQLite store with its schema and the entry's experiment made (copied for each run)."""
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'store.db'}"
    from deepflow import tracking

    t = time.perf_counter()
    tracking.experiment_id(use_case)
    print(f"(new MLflow SQLite store created in {time.perf_counter() - t:.1f} s, not counted)")
    return work / "store.db"


def start_shared() -> None:
    done = subprocess.run([sys.executable, "-m", "deepflow.cli", "prefect", "start", "--idle", "0"],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"could not start the shared Prefect server: {done.stderr}")


def run(mode: str, args: argparse.Namespace, work: Path, store: Path, name: str) -> dict:
    db = work / f"{name}.db"
    shutil.copy(store, db)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "DEEPFLOW_REPORTS_DIR": str(work / name),
           "DEEPFLOW_PREFECT_SERVER": "command" if mode in ("serial", "command") else "shared"}
    command = ["run", args.use_case, *[a for o in args.overrides for a in ("--set", o)]]
    code = {"serial": ["-c", SERIAL, *command], "prefect": ["-c", PREFECT_OWN, *command]}.get(
        mode, ["-m", "deepflow.cli", *command])
    t = time.perf_counter()
    done = subprocess.run([sys.executable, *code], env=env, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - t
    if done.returncode:
        sys.exit(f"{mode}: deepflow run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    found = TIMES.findall(done.stdout)
    if not found:
        sys.exit(f"{mode}: no 'time (s):' line in the output:\n{done.stdout[-3000:]}")
    flow = {k: float(v) for k, v in (part.rsplit(" ", 1) for part in found[-1].split(", "))}
    wait = sum(float(w) for w in re.findall(r"^bench: server wait ([\d.]+)$", done.stderr, re.MULTILINE))
    flow["orchestration"] += wait  # serial: the wait for the server, before the flow's clock started
    flow["wall"] += wait
    share = (flow["orchestration"] + flow["tracking"]) / flow["wall"]
    return {"process_wall_s": wall, "outside_flow_s": wall - flow["wall"], "server_wait_outside_flow_s": wait,
            "timings": flow, "overhead_share": share, "overhead_share_of_process": (
                flow["orchestration"] + flow["tracking"]) / wall}


def line(mode: str, r: dict) -> str:
    t = r["timings"]
    parts = ", ".join(f"{k} {t[k]:.1f}" for k in report.TIMING_CATEGORIES)
    return (f"{mode:<13} process {r['process_wall_s']:6.1f} s = flow {t['wall']:.1f} s ({parts}) + start-up, "
            f"imports, exit {r['outside_flow_s']:.1f} s; orchestration + tracking {100 * r['overhead_share']:.1f} % "
            f"of the flow, {100 * r['overhead_share_of_process']:.1f} % of the process")


def summarise(use_case: str, results: dict[str, list[dict]]) -> None:
    import statistics

    print(f"\n{use_case}, median of {max(len(v) for v in results.values())} run(s) per mode (goal <= 15 %):")
    print("| mode | process wall | flow wall | " + " | ".join(report.TIMING_CATEGORIES) + " | orch. + tracking |")
    print("|---|---|---|" + "---|" * len(report.TIMING_CATEGORIES) + "---|")
    for mode, runs in results.items():
        med = {k: statistics.median(r["timings"][k] for r in runs) for k in (*report.TIMING_CATEGORIES, "wall")}
        share = statistics.median(r["overhead_share"] for r in runs)
        print(f"| {mode} | {statistics.median(r['process_wall_s'] for r in runs):.1f} s | {med['wall']:.1f} s | "
              + " | ".join(f"{med[k]:.1f} s" for k in report.TIMING_CATEGORIES) + f" | **{100 * share:.1f} %** |")
    out = settings.PROJECT_ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"pipeline_{use_case}_modes.json").write_text(json.dumps(
        {"cpus": os.cpu_count(), "load_before": os.getloadavg(), "runs": results}, indent=2))


if __name__ == "__main__":
    main()
