"""DDP on CPU processes (gloo) against one process: the ``table`` kind's network on a made-up
customers table (tests/tables.py), trained with ``train.devices=1`` and ``train.devices=N`` on the
same split, same seed, same global batch; wall time and test metric side by side.

    .venv/bin/python bench/ddp.py [--rows 6000] [--member deep] [--epochs 10] [--devices 2] [--dropout 0.1]

``wall_s``: the member's whole fit as the pipeline sees it (for N > 1: writing the job, starting
torchrun and N interpreters that import torch and Lightning, the rendezvous, training, loading the
best weights); ``train_s``: Lightning's ``fit`` inside the job (rank 0). With ``--dropout 0`` the two
fits take the same steps (deepflow/distributed.py) and the metrics should agree to float rounding;
with dropout the ranks draw other masks, so expect a difference of the order of seed noise.
Writes bench/results/ddp.json. Run it on a quiet machine: the ranks share its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.test_table_models import make  # noqa: E402  (the hand-prepared customers splits)


def one(uc, splits: dict, member: str, devices: int) -> dict:
    uc.cfg.train.devices = devices
    epochs: list[int] = []
    start = time.perf_counter()
    scorer, info = uc.fit(member, "candidate", splits, log=lambda metrics, epoch: epochs.append(epoch))
    wall = time.perf_counter() - start
    test = splits["test"]
    return {"devices": devices, "wall_s": round(wall, 2), "train_s": round(info["train_seconds"], 2),
            f"test_{uc.primary_metric}": round(uc.evaluate(scorer.predict(test), test)[uc.primary_metric], 5),
            "best_epoch": info["best_epoch"], "epochs_run": info["epochs_run"], "steps": info["steps"],
            "epochs_logged": len(epochs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--member", default="deep", choices=["shallow", "deep"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=None, help="default: the config's")
    args = parser.parse_args()
    os.environ.setdefault("DEEPFLOW_ACCELERATOR", "cpu")
    uc, splits = make("binary", n=args.rows)
    uc.cfg.train.epochs, uc.cfg.train.patience, uc.cfg.train.batch_size = args.epochs, args.epochs, args.batch_size
    uc.cfg.model.deep_width, uc.cfg.model.deep_blocks = 64, 4
    if args.dropout is not None:
        uc.cfg.model.dropout = args.dropout
    rows = [one(uc, splits, args.member, 1), one(uc, splits, args.member, args.devices)]
    keys = list(rows[0])
    print(f"table kind, {args.member}, {args.rows} rows ({len(splits['train'])} train), {args.epochs} epochs, "
          f"global batch {args.batch_size}, dropout {uc.cfg.model.dropout}, {os.cpu_count()} CPUs")
    print("  ".join(f"{k:>14}" for k in keys))
    for row in rows:
        print("  ".join(f"{row[k]!s:>14}" for k in keys))
    out = ROOT / "bench" / "results" / "ddp.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "python": platform.python_version(),
                               "runs": rows}, indent=2))
    print(f"-> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
