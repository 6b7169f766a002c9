"""Write a new incoming batch of an entry, or measure a batch against the entry's reference.

``python -m deepflow.drift make-batch <entry> <out_dir> --rows N [--drift D] [--seed S]``: prints the
batch's path. ``python -m deepflow.drift report <entry> <batch> [--champion]``: prints the report;
exit status 1 when the batch drifted.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from deepflow import drift, kinds

    parser = argparse.ArgumentParser(prog="python -m deepflow.drift", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-batch", help="write a (drifted) incoming batch of an entry")
    make.add_argument("entry", help="a dataset entry (datasets/<entry>.yaml)")
    make.add_argument("out_dir", type=Path)
    make.add_argument("--rows", type=int, required=True)
    make.add_argument("--drift", type=float, default=0.0, help="0 = reference distribution, 1 = clearly shifted")
    make.add_argument("--seed", type=int, default=0)
    rep = sub.add_parser("report", help="measure a batch against an entry's reference; print the report")
    rep.add_argument("entry")
    rep.add_argument("batch", type=Path)
    rep.add_argument("--champion", action="store_true", help="add prediction drift from the registered @champion")
    rep.add_argument("--kind", choices=kinds.names(), help="default: the entry's kind")
    args = parser.parse_args(argv)
    if args.command == "make-batch":
        print(drift.make_batch(args.entry, args.out_dir, rows=args.rows, drift=args.drift, seed=args.seed))
        return 0
    from deepflow import settings, usecase

    settings.apply_env_defaults()
    scorer, threshold = None, None
    kind = args.kind or usecase.entry(args.entry).kind
    if args.champion:
        from deepflow import batch

        model = batch.load_model(args.entry)
        scorer, threshold = model.scorer, model.threshold
    features = drift.entry_features(args.entry)  # tabular kinds name their feature columns; others none
    current = drift.load_batch(kind, args.batch, features, entry=args.entry)
    report = drift.detect(kind, drift.reference_frame(args.entry), current, scorer=scorer, features=features,
                          threshold=threshold)
    print(report.markdown())
    return 1 if report.drifted else 0


if __name__ == "__main__":
    raise SystemExit(main())
