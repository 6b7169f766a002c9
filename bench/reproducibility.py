"""Do two projects' runs give the same models? Compare every member's test metrics, entry by entry.

    .venv/bin/python bench/reproducibility.py /tmp/cloneA /tmp/cloneB [--entries fraud nlp traffic]

Each folder is a deepflow project after `make run` (its embedded store, ``mlflow/mlflow.db``). For
each entry and member, the latest finished run's ``test/*`` metrics side by side; prints how many
are identical and the largest difference. Exit 1 when any differs (docs/reproduce.md records a run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlflow import MlflowClient


def member_metrics(project: Path, entry: str) -> dict[str, dict[str, float]]:
    client = MlflowClient(f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(entry)
    if experiment is None:
        return {}
    found: dict[str, dict[str, float]] = {}
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=500)
    for run in runs:
        member = run.data.tags.get("deepflow.member")
        if member and member not in found:
            found[member] = {k: v for k, v in run.data.metrics.items() if k.startswith("test/")}
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--entries", nargs="+", default=["fraud", "nlp", "traffic"])
    args = parser.parse_args()
    same = total = 0
    worst = (0.0, "")
    for entry in args.entries:
        a, b = member_metrics(args.a, entry), member_metrics(args.b, entry)
        for member in sorted(set(a) | set(b)):
            ma, mb = a.get(member, {}), b.get(member, {})
            for key in sorted(set(ma) | set(mb)):
                total += 1
                va, vb = ma.get(key), mb.get(key)
                if va is not None and vb is not None and (va == vb or (va != va and vb != vb)):
                    same += 1
                    continue
                diff = abs(va - vb) if va is not None and vb is not None else float("inf")
                print(f"DIFFERS {entry}/{member} {key}: {va} vs {vb}")
                worst = max(worst, (diff, f"{entry}/{member} {key}"))
            primary = next((k for k in ("test/auprc", "test/f1", "test/map50") if k in ma), None)
            if primary:
                print(f"{entry:<8} {member:<20} {primary} {ma[primary]:.6f} / {mb.get(primary, float('nan')):.6f}")
    print(f"{same} of {total} test metrics identical" + (f"; largest difference {worst[0]:.6g} ({worst[1]})"
                                                           if same < total else ""))
    return 0 if same == total and total else 1


if __name__ == "__main__":
    sys.exit(main())
