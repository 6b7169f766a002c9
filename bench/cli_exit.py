"""What ending a `deepflow` command costs: the console script's exit (cli._exit: threads, exit
handlers, flush, then os._exit) against Python's normal exit (the same code, with cli._exit
raising SystemExit instead, so the interpreter tears its modules down).

Each command runs both ways in turn (A B A B ...), `--runs` pairs; medians and the median of the
pairwise ratios are printed. Run it alone on a quiet machine (docs/benchmarks.md).

    .venv/bin/python bench/cli_exit.py [--runs 7] [--command "status" --command "validate fraud"]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NORMAL = ("from deepflow import cli; "
          "cli._exit = lambda code: (_ for _ in ()).throw(SystemExit(code)); cli.main()")


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{shlex.join(argv)} failed ({done.returncode}): {done.stderr[-500:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--command", action="append", help="a deepflow command line (repeatable)")
    args = parser.parse_args()
    deepflow = str(Path(sys.executable).with_name("deepflow"))
    print(f"{'command':<18} {'fast exit s':>12} {'normal exit s':>14} {'saved s':>8} {'ratio':>7}")
    for command in args.command or ["entries", "status", "validate fraud"]:
        words = shlex.split(command)
        timed([deepflow, *words])  # warm-up: caches, the Prefect home
        fast, normal = [], []
        for _ in range(args.runs):
            fast.append(timed([deepflow, *words]))
            normal.append(timed([sys.executable, "-c", NORMAL, *words]))
        ratio = statistics.median(f / n for f, n in zip(fast, normal, strict=True))
        print(f"{command:<18} {statistics.median(fast):>12.2f} {statistics.median(normal):>14.2f} "
              f"{statistics.median(normal) - statistics.median(fast):>8.2f} {ratio:>7.3f}")


if __name__ == "__main__":
    main()
