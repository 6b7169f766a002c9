"""`make run` on a fresh clone, end to end, split into install, data and each dataset.

Clones this repository (its committed HEAD) into a temporary folder, runs the README's main
command there once (`make run`: bootstrap the venv from the lock, `dvc repro`, `deepflow run`) and
stamps every output line with the seconds since the start. The split comes from the command's own
output: install ends where make echoes `dvc repro`, data ends where it echoes `deepflow run`, and
each dataset's share is its pipeline's "done in" line. Goal: the whole command <= 10 minutes on 2
quiet cores. pip's download cache is whatever this machine has (say which in the docs).

    .venv/bin/python bench/make_run.py [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DONE = re.compile(r"\] (?P<name>[\w.-]+): done in (?:(?P<m>\d+)m )?(?P<s>\d+)s")
GOAL_S = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = parser.parse_args()
    clone = Path(tempfile.mkdtemp(prefix="deepflow-make-run-"))
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                          check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "DEEPFLOW_", "MLFLOW_",
                                                                        "PREFECT_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    marks: dict[str, float] = {}
    datasets: dict[str, float] = {}
    log = clone / "make-run.log"
    began = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter() - began
            out.write(f"{now:8.1f} {line}")
            if "dvc repro" in line and "install" not in marks:
                marks["install"] = now
            elif "deepflow run" in line and "data" not in marks and line.lstrip().startswith(".venv"):
                marks["data"] = now
            elif found := DONE.search(line):
                datasets[found["name"]] = int(found["m"] or 0) * 60 + int(found["s"])
        code = proc.wait()
    total = time.perf_counter() - began
    # `make run` leaves the shared Prefect server running for later commands (it stops itself when
    # idle); this bench stops it now, by the pid it recorded, before the clone goes
    subprocess.run([str(clone / ".venv" / "bin" / "deepflow"), "prefect", "stop", "--force"], cwd=clone, env=env,
                   check=False)
    if code != 0:
        sys.exit(f"make run failed (exit {code}); log: {log}")
    install = marks.get("install", 0.0)
    data = marks.get("data", install) - install
    run = total - install - data
    result = {"commit": head, "total_s": round(total, 1), "install_s": round(install, 1), "data_s": round(data, 1),
              "deepflow_run_s": round(run, 1), "datasets_s": datasets,
              "other_s": round(run - sum(datasets.values()), 1)}
    print(json.dumps(result, indent=2))
    print(f"\nmake run on a fresh clone of {head}: {total / 60:.1f} min (goal <= {GOAL_S / 60:.0f} min: "
          f"{'met' if total <= GOAL_S else 'not met'})")
    print(f"  install {install:6.1f} s\n  data    {data:6.1f} s")
    for name, seconds in datasets.items():
        print(f"  {name:<7} {seconds:6.1f} s")
    print(f"  rest of `deepflow run` (start-up, imports, summary) {result['other_s']:.1f} s")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "make_run.json").write_text(json.dumps(result, indent=2))
    if args.keep:
        print(f"clone kept: {clone}")
    else:
        shutil.rmtree(clone, ignore_errors=True)


if __name__ == "__main__":
    main()
