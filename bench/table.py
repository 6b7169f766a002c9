"""Bring your own table: from a CSV to ``@champion`` with no code, timed, next to a default
HistGradientBoosting on the same split.

For each dataset (all available offline): write it as a CSV, run the user's command
``deepflow new NAME --data FILE --target T --run`` in a fresh project state (its own MLflow
store, entries, data and reports folders), and record the wall clock from the command to
``@champion``, the inferences, the champion's member and test metric, what the budget skipped,
and a scikit-learn ``HistGradientBoosting*`` with default settings fitted on the same prepared
train + validation rows and scored on the same test rows with the same metric.

    .venv/bin/python bench/table.py [--only breast_cancer,wine] [--synthetic-rows 100000]

Datasets: scikit-learn's bundled breast cancer (binary), wine and digits (multiclass), diabetes
(regression); the shipped PaySim sample; the fraud simulator's transactions (``dvc repro
fraud_simulate`` first; sampled by the reader's row cap); a seeded synthetic 100,000 x 30 table
(the issue's five-minute goal). Results: docs/benchmarks.md. Run it on a quiet machine.
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

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "reports" / "bench" / "table-logs"  # each command's output, kept for reading
sys.path.insert(0, str(ROOT / "src"))


# --- the datasets ------------------------------------------------------------------------------


def sklearn_frame(loader, target: str, names: list[str] | None = None) -> pd.DataFrame:
    data = loader(as_frame=True)
    frame = data.frame.rename(columns={"target": target})
    if names is not None:  # class ids -> the dataset's own class names
        frame[target] = [names[i] for i in frame[target]]
    return frame


def synthetic(rows: int, seed: int = 0) -> pd.DataFrame:
    """30 columns: 21 numeric (some with missing values), 6 categorical, 2 boolean-like, a date,
    and a binary target (~12 % positives) from a non-linear function of a third of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 20))
    frame = pd.DataFrame(x, columns=[f"num_{i:02d}" for i in range(20)])
    frame.loc[rng.uniform(size=rows) < 0.05, "num_03"] = np.nan
    cats = {f"cat_{i}": rng.choice([f"v{j}" for j in range(k)], rows) for i, k in enumerate([3, 5, 8, 12, 30, 60])}
    frame = frame.assign(**cats)
    frame["flag_a"] = rng.choice(["yes", "no"], rows)
    frame["flag_b"] = rng.uniform(size=rows) < 0.3
    frame["opened"] = (pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 900, rows), unit="D")).strftime(
        "%Y-%m-%d")
    effect = {f"v{j}": e for j, e in enumerate(rng.normal(0, 0.8, 60))}
    logit = (-2.6 + 1.1 * x[:, 0] - 0.9 * x[:, 1] * x[:, 2] + 0.8 * np.sin(2 * x[:, 3]) + 0.6 * np.abs(x[:, 4])
             + frame["cat_4"].map(effect) + 0.7 * (frame["flag_a"] == "yes") + 0.5 * frame["flag_b"])
    frame["region_code"] = rng.integers(1, 60, rows)  # a numeric code: 30 columns with the target
    frame["converted"] = np.where(rng.uniform(size=rows) < 1 / (1 + np.exp(-logit.fillna(0))), "yes", "no")
    return frame


def datasets(args) -> dict[str, tuple[pd.DataFrame, str]]:
    from sklearn import datasets as sk

    out = {
        "breast_cancer": (sklearn_frame(sk.load_breast_cancer, "diagnosis", ["malignant", "benign"]), "diagnosis"),
        "wine": (sklearn_frame(sk.load_wine, "cultivar", ["class_0", "class_1", "class_2"]), "cultivar"),
        "digits": (sklearn_frame(sk.load_digits, "digit"), "digit"),
        "diabetes": (sklearn_frame(sk.load_diabetes, "progression"), "progression"),
        "paysim": (pd.read_csv(ROOT / "data/external/paysim/paysim_sample.csv"), "isFraud"),
        f"synthetic_{args.synthetic_rows // 1000}k": (synthetic(args.synthetic_rows), "converted"),
    }
    transactions = ROOT / "data/interim/fraud/transactions.parquet"
    if transactions.exists():
        out["fraud_transactions"] = (pd.read_parquet(transactions), "TX_FRAUD")
    else:
        print(f"skipping fraud_transactions: {transactions} is missing (run `dvc repro fraud_simulate`)")
    return out


# --- one dataset --------------------------------------------------------------------------------


def hgb_reference(uc) -> float:
    """A default HistGradientBoosting on the prepared train + val rows, scored on test."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from deepflow.kinds.table import metrics

    cfg = uc.cfg
    splits = uc.load_splits()
    features = cfg.features()

    def x(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[features].copy()
        for col in features:
            role = cfg.columns[col].role
            if role == "categorical":
                out[col] = pd.Categorical(out[col], categories=cfg.columns[col].categories)
            elif role == "datetime":
                out[col] = out[col].astype("int64").where(out[col].notna()).astype(float)
        return out

    fit = pd.concat([splits["train"], splits["val"]], ignore_index=True)
    if cfg.task == "regression":
        model = HistGradientBoostingRegressor(categorical_features="from_dtype", random_state=0)
        model.fit(x(fit), fit[cfg.target])
        scores = model.predict(x(splits["test"]))
    else:
        model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)
        model.fit(x(fit), fit[cfg.target])
        proba = model.predict_proba(x(splits["test"]))
        order = [list(model.classes_).index(c) for c in cfg.classes]
        proba = proba[:, order]
        scores = proba[:, 1] if cfg.task == "binary" else proba
    return float(metrics.evaluate(cfg.task, uc.y(splits["test"]), scores)[uc.primary_metric])


def run_one(name: str, frame: pd.DataFrame, target: str, work: Path, budget: str) -> dict:
    env = {**os.environ,
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "DEEPFLOW_ARTIFACT_ROOT": str(work / "artifacts"),
           "DEEPFLOW_DATASETS_DIR": str(work / "datasets"),
           "DEEPFLOW_DATA_DIR": str(work / "data"),
           "DEEPFLOW_REPORTS_DIR": str(work / "reports"),
           "PREFECT_HOME": str(work / "prefect")}
    csv = work / "upload" / f"{name}.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv, index=False)
    deepflow = str(ROOT / ".venv/bin/deepflow")
    steps = {"new": [deepflow, "new", name, "--data", str(csv), "--target", target, "--budget", budget, "--no-dvc"],
             "run": [deepflow, "run", name]}  # what `new ... --run` chains, timed apart
    seconds: dict[str, float] = {}
    for step, command in steps.items():
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
        seconds[step] = time.perf_counter() - started
        log = done.stdout + done.stderr
        (LOGS / f"{name}-{step}.log").write_text(log)
        if done.returncode != 0:
            tail = log.strip().splitlines()[-3:]
            return {"dataset": name, "error": f"{step}: " + " | ".join(tail), "seconds": sum(seconds.values())}

    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI", "DEEPFLOW_DATASETS_DIR", "DEEPFLOW_DATA_DIR")})
    from mlflow import MlflowClient

    from deepflow import usecase

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias(name, "champion")
    run = client.get_run(champion.run_id)
    uc = usecase.get(name)
    primary = uc.primary_metric
    return {
        "dataset": name, "rows": len(frame), "columns": frame.shape[1] - 1, "task": uc.cfg.task,
        "metric": primary, "seconds": sum(seconds.values()), "new_s": seconds["new"], "run_s": seconds["run"],
        "budget_s": uc.cfg.budget_s, "champion": run.data.tags.get("deepflow.member"),
        "champion_test": run.data.metrics[f"test/{primary}"],
        "hgb_default_test": hgb_reference(uc),
        "features": len(uc.cfg.features()),
        "dropped": {c: s.role for c, s in uc.cfg.columns.items() if s.role not in ("numeric", "boolean",
                                                                                     "categorical", "datetime")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated dataset names")
    parser.add_argument("--synthetic-rows", type=int, default=100_000)
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "table.json"))
    args = parser.parse_args()
    chosen = [n for n in args.only.split(",") if n]
    LOGS.mkdir(parents=True, exist_ok=True)
    results = []
    for name, (frame, target) in datasets(args).items():
        if chosen and name not in chosen:
            continue
        with tempfile.TemporaryDirectory(prefix=f"table-bench-{name}-") as tmp:
            result = run_one(name.replace("_", "-"), frame, target, Path(tmp), args.budget)
        results.append(result)
        print(json.dumps(result), flush=True)
    print(f"\n{platform.node()} {os.cpu_count()} cores, python {platform.python_version()}, budget {args.budget}")
    print("| dataset | rows x cols | task | metric | champion | champion test | HGB default test | diff | "
          "`new` | `run` (budget) | command to @champion |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['dataset']} | | | | error: {r['error']} | | | | | | {r['seconds']:.0f} s |")
            continue
        diff = r["champion_test"] - r["hgb_default_test"]
        print(f"| {r['dataset']} | {r['rows']:,} x {r['columns']} | {r['task']} | {r['metric']} | {r['champion']} | "
              f"{r['champion_test']:.4f} | {r['hgb_default_test']:.4f} | {diff:+.4f} | {r['new_s']:.0f} s | "
              f"{r['run_s']:.0f} s ({r['budget_s']:.0f} s) | {r['seconds']:.0f} s |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
