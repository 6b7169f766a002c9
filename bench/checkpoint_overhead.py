"""What per-epoch checkpoints cost a member fit: the same fit with checkpoints (as the pipeline runs it,
inside ``checkpoints.member``) and without (``DEEPFLOW_CHECKPOINT_DIR=off``), alternating, in one process.

    .venv/bin/python bench/checkpoint_overhead.py [--entry traffic] [--member deep] [--epochs 3] [--repeats 2]

Each fit uses the entry's prepared data (``dvc repro`` first), a pinned ``train.threads`` (so the load
of the moment does not pick the thread count), no early stopping (``train.patience`` = epochs) and
the same seed. Prints the fit seconds per mode (min/median over the repeats), the overhead as a
ratio, and the size of one checkpoint file. Run it on a quiet machine. Writes
bench/results/checkpoint_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def fit_once(entry: str, member: str, overrides: list[str], folder: str | None) -> tuple[float, int]:
    """Seconds of one fit, and the largest checkpoint file seen (bytes; 0 without checkpoints)."""
    from deepflow import checkpoints, usecase

    os.environ["DEEPFLOW_CHECKPOINT_DIR"] = folder or "off"
    uc = usecase.get(entry, overrides)
    splits = uc.load_splits()
    kind = dict(uc.members())[member]
    largest = 0

    def watch(_metrics: dict, _epoch: int) -> None:  # after each epoch's checkpoint of the one before
        nonlocal largest
        if folder:
            largest = max([largest, *(p.stat().st_size for p in Path(folder).rglob("fit-*.ckpt"))])

    parts = checkpoints.key_parts(entry=entry, member=member, kind=kind, data_version="bench",
                                  fingerprint=f"bench-{time.time_ns()}", cfg=uc.cfg)
    start = time.perf_counter()
    with checkpoints.member(parts):
        uc.fit(member, kind, splits, log=watch)
    return time.perf_counter() - start, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entry", default="traffic")
    parser.add_argument("--member", default="deep")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    overrides = [f"train.epochs={args.epochs}", f"train.patience={args.epochs}", f"train.threads={args.threads}"]
    times: dict[str, list[float]] = {"off": [], "on": []}
    size = 0
    with tempfile.TemporaryDirectory(prefix="deepflow-ckpt-bench-") as folder:
        for _ in range(args.repeats):
            for mode in ("off", "on"):
                seconds, largest = fit_once(args.entry, args.member, overrides, folder if mode == "on" else None)
                times[mode].append(seconds)
                size = max(size, largest)
                print(f"{mode:>3}: {seconds:6.2f} s", flush=True)
    import torch

    result = {"entry": args.entry, "member": args.member, "epochs": args.epochs, "threads": args.threads,
              "repeats": args.repeats, "off_s": times["off"], "on_s": times["on"],
              "ratio_median": statistics.median(times["on"]) / statistics.median(times["off"]),
              "checkpoint_mb": round(size / 2**20, 1), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs", "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    print(f"\n{args.entry}/{args.member}, {args.epochs} epochs, {args.threads} threads, {args.repeats} repeats")
    for mode in ("off", "on"):
        print(f"checkpoints {mode:>3}: min {min(times[mode]):.2f} s, median {statistics.median(times[mode]):.2f} s")
    print(f"on/off (median): x{result['ratio_median']:.3f}; one checkpoint file: {result['checkpoint_mb']} MiB")
    out = ROOT / "bench" / "results" / "checkpoint_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
