"""What an explanation costs: plain vs ``?explain=true`` requests to one real server, side by side.

For each built-in entry with a ``@champion`` in the store (MLFLOW_TRACKING_URI, default the
project's): one ``deepflow serve`` process on 127.0.0.1 answers single-item requests, plain and
explained, in alternating blocks (so a change of machine load hits both alike); p50/p99 and the
ratio explained/plain. Then, in this process, the cost of the model card's global importance
(``UseCase.reports``) of the champion on its test split.

``--baseline-src DIR`` also starts a second server from other code (``DIR`` first on PYTHONPATH,
e.g. the ``src/`` of a worktree of the commit before explanations) on the same store, and times
plain requests to both in alternating blocks: does the option slow plain predictions?

    .venv/bin/python bench/explain_cost.py [--requests 200] [--use-case fraud nlp traffic] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import httpx
import numpy as np
from serving_latency import BIN, free_port, requests_for, start

from deepflow import settings, tracking, usecase


def timed(client: httpx.Client, url: str, request: dict) -> float:
    t = time.perf_counter()
    client.post(url, **request).raise_for_status()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per entry and side")
    parser.add_argument("--use-case", nargs="*", default=["fraud", "nlp", "traffic"])
    parser.add_argument("--baseline-src", help="src/ of other code: time its plain requests alongside")
    args = parser.parse_args()
    settings.apply_env_defaults()
    names = [n for n in args.use_case if tracking.version_by_alias(n, tracking.CHAMPION) is not None]
    if not names:
        sys.exit("no champion to explain: run `deepflow run` first")
    port = free_port()
    results: dict = {}
    first = requests_for(names[0], 1)
    proc, cold = start([str(BIN / "deepflow"), "serve", "--port", str(port)],
                       f"http://127.0.0.1:{port}{first[3]}", first[1][0])
    other, other_port = None, free_port()
    if args.baseline_src:
        os.environ["PYTHONPATH"] = args.baseline_src  # the baseline server imports deepflow from there
        other, _ = start([str(BIN / "deepflow"), "serve", "--port", str(other_port)],
                         f"http://127.0.0.1:{other_port}{first[3]}", first[1][0])
        del os.environ["PYTHONPATH"]
    try:
        with httpx.Client(timeout=120) as client:
            for name in names:
                _, ours, _, path = requests_for(name, args.requests)
                plain_url, explained_url = f"http://127.0.0.1:{port}{path}", f"http://127.0.0.1:{port}{path}?explain=true"
                for request in ours[:5]:  # warm-up, both paths
                    timed(client, plain_url, request)
                    timed(client, explained_url, request)
                plain, explained = [], []
                for k, start_at in enumerate(range(0, len(ours), 20)):  # alternating blocks of 20
                    block = ours[start_at: start_at + 20]
                    for url, into in ([(plain_url, plain), (explained_url, explained)][:: 1 if k % 2 == 0 else -1]):
                        into += [timed(client, url, r) for r in block]
                p = np.percentile(np.array(plain) * 1000, [50, 99])
                e = np.percentile(np.array(explained) * 1000, [50, 99])
                if other is not None:  # plain requests, this code vs the baseline's, alternating blocks
                    base_url = f"http://127.0.0.1:{other_port}{path}"
                    mine, theirs = [], []
                    for k, start_at in enumerate(range(0, len(ours), 20)):  # who goes first alternates too
                        block = ours[start_at: start_at + 20]
                        for url, into in ([(plain_url, mine), (base_url, theirs)][:: 1 if k % 2 == 0 else -1]):
                            into += [timed(client, url, r) for r in block]
                    a, b = (float(np.percentile(np.array(x) * 1000, 50)) for x in (mine, theirs))
                    results.setdefault("plain_vs_baseline", {})[name] = {
                        "this_p50_ms": a, "baseline_p50_ms": b, "ratio": a / b}
                results[name] = {"requests_per_side": len(ours),
                                 "plain": {"p50_ms": float(p[0]), "p99_ms": float(p[1])},
                                 "explained": {"p50_ms": float(e[0]), "p99_ms": float(e[1])},
                                 "p50_ratio": float(e[0] / p[0])}
    finally:
        for p in (proc, other):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)
    results["server_cold_start_s"] = cold

    for name in names:  # the model card's global importance, in this process
        uc = usecase.get(name)
        champion = tracking.version_by_alias(name, tracking.CHAMPION)
        scorer = tracking.load_scorer(f"models:/{name}/{champion.version}")
        test = uc.load_splits()["test"]
        scores = scorer.predict(test)
        member = (champion.tags or {}).get("deepflow.member", "champion")
        t = time.perf_counter()
        if uc.kind == "text":  # its reports() also re-runs the behaviour report: time the importance only
            uc.word_importance(member, scorer, scores, test)
        else:
            uc.reports(member, scorer, scores, test)
        results[name]["model_card_importance_s"] = time.perf_counter() - t
        results[name]["member"] = member
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
