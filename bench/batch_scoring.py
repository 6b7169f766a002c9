"""Batch scoring throughput: N seeded fraud-like rows (the fraud FEATURES plus an id) scored with
``fraud@champion`` of the project store through ``deepflow.batch.score_file`` (no Prefect).

    .venv/bin/python bench/batch_scoring.py [--rows 1000000] [--chunk-size 100000] [--format parquet|csv]
    .venv/bin/python bench/batch_scoring.py --stand-in   # no fraud champion in the project store

``--stand-in`` registers an *untrained* DeepNet of the default fraud config (width 128, 4 residual
blocks: the largest fraud candidate) as ``fraud@champion`` in a temporary store and scores with it;
inference cost does not depend on the weights, but say so when quoting the number.
Prints rows/s and total seconds (input generation not included) and writes bench/results/batch_scoring.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from deepflow import batch, settings, tracking
from deepflow.usecases.fraud.prepare import FEATURES


def fraud_like_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """Plausible magnitudes per feature family (not a simulation: throughput only)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {"TRANSACTION_ID": np.arange(n, dtype=np.int64)}
    for name in FEATURES:
        if name == "TX_AMOUNT" or "AVG_AMOUNT" in name:
            cols[name] = rng.lognormal(3.5, 1.0, n)
        elif name.startswith("TX_DURING"):
            cols[name] = rng.integers(0, 2, n).astype(np.float64)
        elif "_NB_TX_" in name:
            cols[name] = rng.poisson(5, n).astype(np.float64)
        else:  # terminal risk: a share of fraudulent transactions
            cols[name] = rng.beta(0.5, 20, n)
    return pd.DataFrame(cols)


def register_stand_in(root: Path) -> None:
    import torch

    from deepflow.kinds.tabular.models import DeepNet, Standardize
    from deepflow.scoring import TorchScorer

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ.pop("DEEPFLOW_ARTIFACT_ROOT", None)
    torch.manual_seed(0)
    sample = fraud_like_rows(10_000, seed=1)[FEATURES].to_numpy()
    net = DeepNet(Standardize(sample.mean(0), sample.std(0) + 1e-6), width=128, blocks=4)
    scorer = TorchScorer(net, FEATURES)
    run_id = tracking.start_run("fraud", "stand-in")
    uri = tracking.log_scorer(run_id, scorer, fraud_like_rows(5)[FEATURES])
    version = tracking.register("fraud", uri, run_id, {"deepflow.threshold": 0.5,
                                                       "deepflow.member": "deep (untrained stand-in)"})
    tracking.set_alias("fraud", tracking.CHAMPION, version)
    tracking.end_run(run_id)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=batch.DEFAULT_CHUNK_SIZE)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--stand-in", action="store_true", help="untrained DeepNet in a temporary store")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.stand_in:
            register_stand_in(work)
        mv = tracking.version_by_alias("fraud", tracking.CHAMPION)
        if mv is None:
            raise SystemExit(f"no fraud@champion in {settings.tracking_uri()}: train one "
                             "(`deepflow train fraud`) or pass --stand-in")
        member = mv.tags.get("deepflow.member", "?")
        t0 = time.perf_counter()
        rows = fraud_like_rows(args.rows)
        src = work / f"input.{args.format}"
        rows.to_parquet(src, index=False) if args.format == "parquet" else rows.to_csv(src, index=False)
        del rows
        gen_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        model = batch.load_model("fraud")
        load_s = time.perf_counter() - t0
        result = batch.score_file("fraud", src, work / f"scores.{args.format}", chunk_size=args.chunk_size,
                                  progress=False, model=model)
        total = load_s + result.seconds
        record = {
            "rows": result.rows, "scored": result.scored, "rejected": result.rejected,
            "format": args.format, "chunk_size": args.chunk_size, "chunks": result.chunks,
            "model": f"fraud v{result.version} ({member})", "store": settings.tracking_uri() if not args.stand_in
            else "temporary (stand-in)",
            "load_model_s": round(load_s, 2), "score_s": round(result.seconds, 2), "total_s": round(total, 2),
            "rows_per_s": round(result.rows / result.seconds), "input_generation_s": round(gen_s, 2),
            "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        }
    print(f"{record['model']}: {record['rows']:,} rows ({args.format}, chunks of {args.chunk_size:,}) "
          f"scored in {record['score_s']:.1f} s = {record['rows_per_s']:,} rows/s; "
          f"model load {record['load_model_s']:.1f} s; total {record['total_s']:.1f} s")
    out = settings.PROJECT_ROOT / "bench" / "results" / f"batch_scoring_{args.format}.json"
    out.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
