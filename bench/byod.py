"""Bring your own texts and images: from a raw file or folder to ``@champion`` with no code, timed.

For each dataset: run the user's commands ``deepflow new NAME --data PATH --no-dvc`` and
``deepflow run NAME`` in a fresh project state (its own MLflow store, entries, data and reports
folders), and record the wall clock of each, what ``new`` inferred (kind, columns or classes,
image size), the champion's member and test metric and, for text, the TF-IDF + logistic
regression baseline's test metric from the same run (same split, same metric).

    .venv/bin/python bench/byod.py [--only sms,coco] [--budget 5m]

Datasets (shipped): the UCI SMS Spam Collection file as it is distributed (TSV, no header), and
the 20-image COCO road-user sample as a detection folder (tiny: for the path, not for quality).
Results: docs/benchmarks.md ("Your own texts and images"). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "reports" / "bench" / "byod-logs"  # each command's output, kept for reading
sys.path.insert(0, str(ROOT / "src"))

DATASETS = {
    "sms": ROOT / "data/external/sms_spam/SMSSpamCollection",
    "coco": ROOT / "data/external/coco_traffic_sample",
}


def run_one(name: str, data: Path, work: Path, budget: str) -> dict:
    env = {**os.environ,
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "DEEPFLOW_ARTIFACT_ROOT": str(work / "artifacts"),
           "DEEPFLOW_DATASETS_DIR": str(work / "datasets"),
           "DEEPFLOW_DATA_DIR": str(work / "data"),
           "DEEPFLOW_REPORTS_DIR": str(work / "reports"),
           "PREFECT_HOME": str(work / "prefect")}
    deepflow = str(ROOT / ".venv/bin/deepflow")
    steps = {"new": [deepflow, "new", name, "--data", str(data), "--budget", budget, "--no-dvc"],
             "run": [deepflow, "run", name]}
    seconds: dict[str, float] = {}
    logs: dict[str, str] = {}
    for step, command in steps.items():
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
        seconds[step] = time.perf_counter() - started
        logs[step] = done.stdout + done.stderr
        (LOGS / f"{name}-{step}.log").write_text(logs[step])
        if done.returncode != 0:
            tail = logs[step].strip().splitlines()[-3:]
            return {"dataset": name, "error": f"{step}: " + " | ".join(tail), "seconds": sum(seconds.values())}

    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI", "DEEPFLOW_DATASETS_DIR", "DEEPFLOW_DATA_DIR")})
    from mlflow import MlflowClient

    from deepflow import newentry, usecase

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    uc = usecase.get(name)
    primary = uc.primary_metric
    champion = client.get_model_version_by_alias(name, "champion")
    run = client.get_run(champion.run_id)
    members = {}
    experiment = client.get_experiment_by_name(name)
    for r in client.search_runs([experiment.experiment_id], max_results=50):
        member = r.data.tags.get("deepflow.member")
        if member and f"test/{primary}" in r.data.metrics and member not in members:
            members[member] = r.data.metrics[f"test/{primary}"]
    counts = newentry.split_counts(uc.prepared_dir)
    result = {"dataset": name, "kind": uc.kind, "metric": primary, "splits": counts,
              "seconds": sum(seconds.values()), "new_s": seconds["new"], "run_s": seconds["run"],
              "budget_s": getattr(uc.cfg, "budget_s", None), "champion": run.data.tags.get("deepflow.member"),
              "champion_test": run.data.metrics[f"test/{primary}"], "members_test": members,
              "kind_line": next((line for line in logs["new"].splitlines() if line.startswith("kind")), "")}
    if uc.kind == "text":
        result["labels"] = list(uc.cfg.labels)
    if uc.kind == "detection":
        result["classes"] = list(uc.cfg.classes)
        result["img_size"] = uc.cfg.model.img_size
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated dataset names: " + ",".join(DATASETS))
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "byod.json"))
    args = parser.parse_args()
    chosen = [n for n in args.only.split(",") if n]
    LOGS.mkdir(parents=True, exist_ok=True)
    results = []
    for name, data in DATASETS.items():
        if chosen and name not in chosen:
            continue
        with tempfile.TemporaryDirectory(prefix=f"byod-bench-{name}-") as tmp:
            result = run_one(name, data, Path(tmp), args.budget)
        results.append(result)
        print(json.dumps(result), flush=True)
    print(f"\n{platform.node()} {os.cpu_count()} cores, python {platform.python_version()}, budget {args.budget}")
    print("| dataset | kind | splits (train/val/test) | metric | champion | champion test | every member's test | "
          "`new` | `run` (budget) | command to @champion |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['dataset']} | | | | error: {r['error']} | | | | | {r['seconds']:.0f} s |")
            continue
        splits = "/".join(str(r["splits"].get(s, 0)) for s in ("train", "val", "test"))
        members = ", ".join(f"{m} {v:.4f}" for m, v in sorted(r["members_test"].items()))
        print(f"| {r['dataset']} | {r['kind']} | {splits} | {r['metric']} | {r['champion']} | "
              f"{r['champion_test']:.4f} | {members} | {r['new_s']:.0f} s | {r['run_s']:.0f} s "
              f"({r['budget_s']:.0f} s) | {r['seconds']:.0f} s |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
