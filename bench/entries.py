"""What reading dataset entries from their files costs, side by side in one run.

deepflow discovers entries by reading ``datasets/*.yaml`` on every call (``usecase.entries()``,
``usecase.get()``), so a new file shows up at once, with no cache to invalidate. This measures
that choice: entry discovery with the shipped entries and with many, one entry parsed and its
typed config resolved, and a dict lookup (what a cache would cost) for the ratio.

    .venv/bin/python bench/entries.py [--entries 200] [--repeat 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    fn()  # warm-up: imports, first parse
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"min_us": min(times) * 1e6, "median_us": statistics.median(times) * 1e6, "max_us": max(times) * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200, help="entries in the large folder")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()

    from deepflow import settings, usecase

    shipped = settings.PROJECT_ROOT / "datasets"
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        many = Path(tmp)
        sources = sorted(shipped.glob("*.yaml"))
        for i in range(args.entries):
            src = sources[i % len(sources)]
            shutil.copy(src, many / f"{src.stem}-{i:04d}.yaml")
        os.environ["DEEPFLOW_DATASETS_DIR"] = str(shipped)
        cached = usecase.entries()
        results[f"entries(), {len(cached)} shipped"] = timed(usecase.entries, args.repeat)
        results["entry('fraud'): one file parsed"] = timed(lambda: usecase.entry("fraud"), args.repeat)
        fraud = usecase.entry("fraud")
        results["resolve_config(fraud): typed config"] = timed(lambda: usecase.resolve_config(fraud), args.repeat)
        results["get('fraud'): entry + config + use case"] = timed(lambda: usecase.get("fraud"), args.repeat)
        results["dict lookup (a cache)"] = timed(lambda: cached["fraud"], args.repeat)
        import yaml

        text = (shipped / "fraud.yaml").read_text()
        results["yaml parse fraud.yaml, pure Python"] = timed(lambda: yaml.load(text, Loader=yaml.SafeLoader),
                                                              args.repeat)
        results["yaml parse fraud.yaml, libyaml"] = timed(lambda: yaml.load(text, Loader=yaml.CSafeLoader),
                                                          args.repeat)
        os.environ["DEEPFLOW_DATASETS_DIR"] = str(many)
        results[f"entries(), {args.entries} entries"] = timed(usecase.entries, max(10, args.repeat // 10))

    base = results["dict lookup (a cache)"]["median_us"]
    print(f"{'measure':45s} {'min µs':>10s} {'median µs':>10s} {'max µs':>10s} {'x lookup':>9s}")
    for name, r in results.items():
        print(f"{name:45s} {r['min_us']:10.1f} {r['median_us']:10.1f} {r['max_us']:10.1f} "
              f"{r['median_us'] / base:9.0f}")
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "python": platform.python_version(), "repeat": args.repeat}))


if __name__ == "__main__":
    main()
