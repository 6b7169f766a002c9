"""Fraud: the handbook's prequential benchmark, side by side with its published table (issue 8).

    python bench/fraud_prequential.py            # run the whole benchmark flow (~25 min on 2 cores), then print
    python bench/fraud_prequential.py --report   # only print the last run's reports/fraud/prequential/summary.json
    python bench/fraud_prequential.py -s prequential.search.budget_s='{ffn: 60, sequence: 120}'   # any override

Prints, per model: our test-fold AP / ROC-AUC / CP@100 (mean ± std over folds), the handbook's, the
difference and ratio, and the compute (search on the validation folds + the test folds); then the
bake-off, the unsupervised detectors and the whole run's time. Raw numbers: bench/results/fraud_prequential.json.
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
sys.path.insert(0, str(ROOT))  # flows/


def run(overrides: list[str]) -> dict:
    from flows.prequential import prequential_benchmark

    start = time.perf_counter()
    load = os.getloadavg()
    summary = prequential_benchmark("fraud", ["protocol=prequential", *overrides])
    summary["bench"] = {"wall_s": time.perf_counter() - start, "load_before": load, "load_after": os.getloadavg()}
    return summary


def show(summary: dict) -> None:
    from deepflow.usecases.fraud import reproduction as r

    results = {x["model"]: x for x in summary["results"]}
    print(f"run {summary['run_id']}  ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)\n")
    print(f"{'handbook model':<42}{'ours AP':>16}{'book':>7}{'diff':>8}{'ratio':>7}"
          f"{'AUC ours/book':>16}{'CP@100 ours/book':>18}{'compute':>10}")
    for row in r.reproduction_rows(results):
        if row["ours"] is None:
            print(f"{row['name']:<42}{'not run':>16}{row['book_ap']:>7.3f}")
            continue
        ours = results[row["ours"]]["test"]
        print(f"{row['name']:<42}{ours['mean']['auprc']:>9.3f} ± {ours['std']['auprc']:.3f}{row['book_ap']:>7.3f}"
              f"{row['diff']:>+8.3f}{row['ap'] / row['book_ap']:>7.2f}{row['auc']:>9.3f}/{row['book_auc']:.3f}"
              f"{row['cp']:>11.3f}/{row['book_cp']:.3f}{row['seconds']:>9.0f}s")
    print("\n" + r.bakeoff_table(results))
    unsup = summary.get("unsupervised")
    if unsup:
        print()
        for name, x in unsup["detectors"].items():
            print(f"{name:<18} val AP {r.pm(x['val'], 'auprc')}   test AP {r.pm(x['test'], 'auprc')}")
        for base, x in unsup["ae_feature"].items():
            if base in results:
                print(f"{base} + AE error: test AP {r.pm(x['test'], 'auprc')} "
                      f"(without: {r.pm(results[base]['test'], 'auprc')})")
    print()
    for line in r.goals(results):
        print(line)
    t = summary.get("timings", {})
    print("time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()))
    if "bench" in summary:
        b = summary["bench"]
        print(f"bench wall {b['wall_s']:.0f} s, load average before {b['load_before'][0]:.2f}, "
              f"after {b['load_after'][0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="print the last run's summary, run nothing")
    parser.add_argument("-s", "--set", action="append", default=[], help="config override key=value")
    args = parser.parse_args()
    from deepflow import settings

    if args.report:
        summary = json.loads((settings.reports_dir() / "fraud" / "prequential" / "summary.json").read_text())
    else:
        summary = run(args.set)
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "fraud_prequential.json").write_text(json.dumps(summary, indent=2, default=str))
    show(summary)


if __name__ == "__main__":
    main()
