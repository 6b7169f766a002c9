"""Training on a busy machine: traffic's ``deep`` detector and nlp's ``deep`` BiGRU, each member's own
fit (``uc.fit``, as the pipeline calls it) timed in four conditions side by side in one run:

* quiet + ``train.threads=2`` (torch's old default on a 2-core machine),
* busy  + ``train.threads=2``: one competing process spinning on a core (started by this bench
  ~1 s before the fit, killed by PID after it; it also stops by itself after an hour),
* quiet + ``train.threads=0`` (auto: one thread per free CPU, chosen at the fit's start,
  ``deepflow/threads.py``),
* busy  + auto.

Prints per member the fit seconds, the threads used and the CPUs busy elsewhere when the fit
started (sampled by the bench in every condition), and the ratios busy/quiet (goal: <= 2x with one
competitor on 2 cores). Writes ``bench/results/busy_training.json``.

Short fits: ``--traffic-epochs`` (default 2) and ``--nlp-epochs`` (default 5) replace the entries'
epochs, and early stopping is off (``train.patience=1000``) so every condition runs the same epochs.
``--quick``: 1 epoch on the first 64 images / 400 messages (a smoke run of the bench itself; its
numbers mean nothing and go to ``busy_training_quick.json``).

    .venv/bin/python bench/busy_training.py [--repeats 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from deepflow import settings, threads, usecase

SPIN = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass"
CONDITIONS = (("quiet", 2), ("busy", 2), ("quiet", 0), ("busy", 0))  # (machine, train.threads)
MEMBERS = (("traffic", "deep"), ("nlp", "deep"))


def fit_once(entry: str, member: str, overrides: list[str], quick: bool) -> dict:
    """One fit of ``member`` as the pipeline does it; its wall seconds, the trainer's and the threads."""
    uc = usecase.get(entry, overrides)
    splits = uc.load_splits()
    if quick:
        rows = 64 if entry == "traffic" else 400
        splits = {s: f.head(rows if s == "train" else rows // 2) for s, f in splits.items()}
    busy = threads.busy_elsewhere()  # the machine as the fit found it (the bench's own sample)
    started = time.perf_counter()
    _, info = uc.fit(member, "candidate", splits)
    seconds = time.perf_counter() - started
    choice = threads.in_use()
    return {"fit_s": round(seconds, 2), "trainer_s": round(float(info.get("fit_seconds", 0.0)), 2),
            "epochs": info.get("epochs_run"), "threads": choice.threads, "source": choice.source,
            "busy_elsewhere_at_start": busy}


def condition(entry: str, member: str, machine: str, configured: int, overrides: list[str], quick: bool,
              repeats: int) -> dict:
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if machine == "busy" else None
    try:
        if spinner:
            time.sleep(1.0)  # running before the fit starts, as a competitor already there would be
        runs = [fit_once(entry, member, [*overrides, f"train.threads={configured}"], quick) for _ in range(repeats)]
    finally:
        if spinner:
            spinner.kill()
            spinner.wait(timeout=10)
    row = {"entry": entry, "member": member, "machine": machine,
           "threads_setting": "auto" if configured == 0 else str(configured),
           "fit_s": statistics.median(r["fit_s"] for r in runs), "runs": runs}
    print(f"{entry:8} {member:5} {machine:5} threads={row['threads_setting']:4} fit {row['fit_s']:8.1f} s  "
          f"(used {runs[-1]['threads']} thread(s), busy elsewhere at start {runs[-1]['busy_elsewhere_at_start']:.2f})",
          flush=True)
    return row


def ratios(rows: list[dict]) -> dict[str, dict[str, float]]:
    """busy/quiet per setting, and busy+auto over quiet+2 (the old default on a quiet machine)."""
    out = {}
    for entry, member in MEMBERS:
        t = {(r["machine"], r["threads_setting"]): r["fit_s"] for r in rows
             if (r["entry"], r["member"]) == (entry, member)}
        if len(t) == len(CONDITIONS):
            quiet2, busy2, quiet_auto, busy_auto = (t[m, s] for m, s in (("quiet", "2"), ("busy", "2"),
                                                                         ("quiet", "auto"), ("busy", "auto")))
            out[f"{entry}/{member}"] = {"busy/quiet threads=2": round(busy2 / quiet2, 2),
                                        "busy/quiet auto": round(busy_auto / quiet_auto, 2),
                                        "busy auto / quiet threads=2": round(busy_auto / quiet2, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traffic-epochs", type=int, default=2)
    parser.add_argument("--nlp-epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="fits per condition (the median is reported)")
    parser.add_argument("--quick", action="store_true", help="1 epoch on a few rows: checks the bench runs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    settings.apply_env_defaults()
    os.environ.pop(threads.ENV, None)  # an override in this shell would replace the auto choice
    epochs = {"traffic": 1 if args.quick else args.traffic_epochs, "nlp": 1 if args.quick else args.nlp_epochs}
    rows = []
    for entry, member in MEMBERS:
        overrides = [f"train.epochs={epochs[entry]}", "train.patience=1000"]
        for machine, configured in CONDITIONS:
            rows.append(condition(entry, member, machine, configured, overrides, args.quick, args.repeats))
    found = ratios(rows)
    print(f"\n# {platform.processor() or platform.machine()}, {threads.available()} CPUs available, "
          f"torch {torch.__version__}; goal: busy/quiet <= 2x with one competitor")
    for name, r in found.items():
        print(f"{name:14} " + "   ".join(f"{k} x{v:.2f}" for k, v in r.items()))
    out = args.out or settings.PROJECT_ROOT / "bench" / "results" / (
        "busy_training_quick.json" if args.quick else "busy_training.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                               "cpus_available": threads.available(), "torch": torch.__version__,
                               "quick": args.quick, "epochs": epochs, "repeats": args.repeats,
                               "rows": rows, "ratios": found}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
