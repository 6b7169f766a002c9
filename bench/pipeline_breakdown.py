"""Where a default fraud pipeline run spends its wall time.

Runs the real Prefect flow (temporary local API server included) on the DVC-prepared data into
a temporary MLflow store, and splits the wall time into orchestration, validation, training,
evaluation and tracking. Also prints wall time / pure training compute.

    .venv/bin/python bench/pipeline_breakdown.py [--use-case fraud] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from deepflow import settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--use-case", default="fraud")
    parser.add_argument("--server", action="store_true",
                        help="run against a long-lived local Prefect server instead of the "
                             "temporary one Prefect starts per process")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["DEEPFLOW_REPORTS_DIR"] = str(tmp / "reports")
    settings.apply_env_defaults()  # PREFECT_HOME: the project's .prefect/, as `make run` uses
    server = start_prefect_server() if args.server else None
    try:
        run(args)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


def start_prefect_server() -> subprocess.Popen:
    """`prefect server start` on a free 127.0.0.1 port; returns once /api/health answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        raise RuntimeError("prefect server did not start within 120 s")
    os.environ["PREFECT_API_URL"] = url
    print(f"using a long-lived Prefect server at {url}")
    return proc


def run(args: argparse.Namespace) -> None:
    from deepflow import tracking

    t = time.perf_counter()
    tracking.experiment_id(args.use_case)  # create the store's schema outside the clock
    print(f"(new MLflow SQLite store created in {time.perf_counter() - t:.1f} s, not counted)")
    start = time.perf_counter()
    sys.path.insert(0, str(settings.PROJECT_ROOT))
    import lightning  # noqa: F401  (the heavy imports any training process pays)
    import mlflow  # noqa: F401

    from deepflow import report
    from flows.pipeline import train_pipeline

    imports = time.perf_counter() - start
    start = time.perf_counter()
    summary = train_pipeline(args.use_case, args.overrides)
    t = report.add_outer_wall(summary["timings"], time.perf_counter() - start)
    wall = t["wall"]
    print(f"imports (torch, lightning, mlflow, prefect, deepflow): {imports:.1f} s, not counted below")
    note = "" if args.server else " (Prefect's temporary API server start-up included)"
    print(f"{args.use_case} pipeline: wall {wall:.1f} s{note}")
    for k in report.TIMING_CATEGORIES:
        print(f"  {k:<14} {t[k]:6.1f} s  {100 * t[k] / wall:5.1f} %")
    overhead = (t["orchestration"] + t["tracking"]) / wall
    print(f"orchestration + tracking = {100 * overhead:.1f} % of wall (goal <= 15 %)")
    print(f"wall / pure training compute = {wall / t['training']:.2f}x")
    fit = {m["member"]: round(m["timings"].get("training", 0), 2) for m in summary["members"]}
    print("training seconds per member:", fit)
    out = settings.PROJECT_ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = f"pipeline_{args.use_case}{'_server' if args.server else ''}.json"
    (out / name).write_text(json.dumps(
        {"prefect": "server" if args.server else "temporary", "imports_s": imports, "timings": t,
         "overhead_share": overhead, "training_per_member": fit,
         "test": {m["member"]: m["test"] for m in summary["members"]}}, indent=2))


if __name__ == "__main__":
    main()
