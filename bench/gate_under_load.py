"""Does a busy machine decide a promotion? The latency gate's figure, quiet and under load.

Side by side in one run, on real fraud scorers (`shallow`, `deep` trained for 3 epochs on the
prepared data) and each figure measured quiet, then with 1 and 2 competing processes spinning on
the cores (bounded: they stop by themselves after 120 s and are killed at the end):

* ``before``: the gate's figure until issue 19: wall-clock p95 over 200 calls, torch's default
  threads;
* ``now``: ``deepflow.latency``: the calling thread's CPU time on one pinned thread, best of 5
  interleaved rounds (``p95``), with its wall-clock twin (``wall_p95``) and the load recorded.

Prints one JSON line per (scorer, load) and the ratio loaded/quiet of each figure.

    .venv/bin/python bench/gate_under_load.py
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time

import numpy as np
import torch

from deepflow import latency, steps, usecase

SPIN = "import time\nend = time.time() + 120\nwhile time.time() < end: pass"


def before(scorer, row, repeats: int = 200) -> float:
    """The old gate figure: wall-clock p95 of 200 calls after 5 warm-up calls, default threads."""
    for _ in range(5):
        scorer.predict(row)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scorer.predict(row)
        times.append(time.perf_counter() - start)
    return float(np.percentile(times, 95) * 1000)


def main() -> None:
    uc = usecase.get("fraud", ["train.epochs=3"])
    splits = uc.load_splits()
    scorers = {m: uc.fit(m, "candidate", splits)[0] for m in ("shallow", "deep")}
    rows = {m: steps.input_example(uc, s, splits["test"]).head(1) for m, s in scorers.items()}
    results: dict[tuple[str, int], dict] = {}
    for competitors in (0, 1, 2):
        busy = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(competitors)]
        try:
            time.sleep(2.0 if competitors else 0.0)
            for member, scorer in scorers.items():
                old = before(scorer, rows[member])
                now = latency.single_row(scorer, rows[member])
                results[(member, competitors)] = {"member": member, "competitors": competitors,
                                                  "before_wall_p95_ms": round(old, 3),
                                                  "now_p95_ms": round(now["p95"], 3),
                                                  "now_wall_p95_ms": round(now["wall_p95"], 3),
                                                  "load_1m": now["load_1m"]}
                print(json.dumps(results[(member, competitors)]), flush=True)
        finally:
            for p in busy:
                p.kill()
                p.wait(timeout=10)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"default threads {torch.get_num_threads()}")
    for member in scorers:
        quiet = results[(member, 0)]
        for competitors in (1, 2):
            loaded = results[(member, competitors)]
            was = loaded["before_wall_p95_ms"] / quiet["before_wall_p95_ms"]
            print(f"{member}: {competitors} competitor(s): before x{was:.2f}, "
                  f"now x{loaded['now_p95_ms'] / quiet['now_p95_ms']:.2f}")


if __name__ == "__main__":
    main()
