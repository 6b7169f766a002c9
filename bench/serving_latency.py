"""Serving a champion: deepflow's server vs `mlflow models serve`, side by side in one run.

Both servers run as real processes on 127.0.0.1 and serve the same registered version
(``models:/<use case>@champion`` of the store in MLFLOW_TRACKING_URI, default the project's). For each:
- cold start: process start to the first successful prediction;
- p50/p99 latency and requests/s for one item (transaction, text, image) per request, at
  concurrency 1 and 8 (a bounded number of requests, then it stops);
and, as the floor, the same scorer's raw ``predict`` on one item in this process.

    .venv/bin/python bench/serving_latency.py [--use-case fraud|nlp|traffic] [--requests 400]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from deepflow import settings, tracking, usecase

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, request: dict, timeout: float = 180.0) -> tuple[subprocess.Popen, float]:
    """Start a server; return it and the seconds until its first 200 on ``url``."""
    began = time.perf_counter()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # mlflow execs `uvicorn`
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    while time.perf_counter() - began < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
        try:
            if httpx.post(url, timeout=5, **request).status_code == 200:
                return proc, time.perf_counter() - began
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


def settled(ready_url: str | None, timeout: float = 120.0) -> None:
    """Wait until a deepflow server's background warm-up (the explainer's imports) is over, so
    the measurements below do not share the CPU with it."""
    if ready_url is None:
        return
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        try:
            if httpx.get(ready_url, timeout=5).json().get("explainer", "ready") == "ready":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{ready_url}: the explainer still warming after {timeout} s")


def floor(url: str, n: int = 400) -> float:
    """p50 ms of a GET that does no work (the server's health probe): HTTP + client alone."""
    with httpx.Client(timeout=30) as client:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            client.get(url).raise_for_status()
            times.append(time.perf_counter() - t)
    return float(np.percentile(np.array(times) * 1000, 50))


def load(url: str, requests: list[dict], concurrency: int) -> dict[str, float]:
    """Each request's kwargs (``json=`` or ``files=``) once, ``concurrency`` at a time; bounded, then stops."""
    with httpx.Client(timeout=30) as client:
        for request in requests[:20]:  # warm-up
            client.post(url, **request).raise_for_status()

        def one(request: dict) -> float:
            t = time.perf_counter()
            client.post(url, **request).raise_for_status()
            return time.perf_counter() - t

        began = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            times = list(pool.map(one, requests))
        wall = time.perf_counter() - began
    p50, p99 = np.percentile(np.array(times) * 1000, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99), "rps": len(requests) / wall}


def requests_for(use_case: str, n: int) -> tuple[pd.DataFrame, list, list, str]:
    """(raw scorer inputs, our request kwargs, mlflow request bodies, our path) for n single-item requests."""
    uc = usecase.get(use_case)
    test = uc.load_splits()["test"]
    test = test.sample(n, random_state=0, replace=len(test) < n)
    if use_case == "fraud":
        rows = test[uc.cfg.features].astype("float64")
        ours = [{"json": {"rows": [r]}} for r in rows.to_dict("records")]
        theirs = [{"dataframe_split": {"columns": list(rows.columns), "data": [list(r)]}}
                  for r in rows.itertuples(index=False)]
        return rows, ours, theirs, "/v1/fraud/predict"
    if use_case == "nlp":
        rows = test[["text"]]
        ours = [{"json": {"texts": [t]}} for t in rows["text"]]
        theirs = [{"dataframe_split": {"columns": ["text"], "data": [[t]]}} for t in rows["text"]]
        return rows, ours, theirs, "/v1/nlp/predict"
    rows = test[["image"]]  # traffic: one JPEG per request (multipart for us, base64 for MLflow's binary column)
    ours = [{"files": {"image": ("frame.jpg", b, "image/jpeg")}} for b in rows["image"]]
    theirs = [{"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(b).decode()]]}}
              for b in rows["image"]]
    return rows, ours, theirs, "/v1/traffic/predict"


def compiled_predict(name: str, scorer, rows: pd.DataFrame) -> dict | None:
    """What the fast path runs for one item (a tabular torch scorer's compiled form), timed like
    ``predict``, and its largest difference from ``predict`` on the same rows."""
    from deepflow import fastpath

    if usecase.entry(name).kind != "tabular" or not hasattr(scorer, "net"):
        return None
    compiled = fastpath.compile_torch(scorer.net, len(scorer.features), scorer.output)
    eager = fastpath._eager(scorer.net, scorer.output)
    x = rows[scorer.features].to_numpy(np.float32)
    times: dict[str, list[float]] = {"compiled": [], "eager": []}
    for i in range(len(x)):  # interleaved, one row each
        for label, run in (("compiled", compiled.run), ("eager", eager)):
            t = time.perf_counter()
            run(x[i:i + 1])
            times[label].append(time.perf_counter() - t)
    p50, p99 = np.percentile(np.array(times["compiled"]) * 1000, [50, 99])
    diff = float(np.abs(compiled.run(x) - scorer.predict(rows)).max())
    return {"runtime": compiled.runtime, "p50_ms": float(p50), "p99_ms": float(p99), "max_diff": diff,
            "eager_torch_p50_ms": float(np.percentile(np.array(times["eager"]) * 1000, 50)),
            "probe_max_diff": compiled.max_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--use-case", default="fraud", choices=["fraud", "nlp", "traffic"])
    args = parser.parse_args()
    settings.apply_env_defaults()
    name = args.use_case
    champion = tracking.version_by_alias(name, tracking.CHAMPION)
    if champion is None:
        sys.exit(f"no {name}@champion in this store: run `deepflow run {name}` first")
    rows, ours, theirs, path = requests_for(name, args.requests)
    scorer = tracking.load_scorer(f"models:/{name}/{champion.version}")

    raw = []
    for i in range(len(rows)):
        one = rows.iloc[[i]]
        t = time.perf_counter()
        scorer.predict(one)
        raw.append(time.perf_counter() - t)
    raw_p50, raw_p99 = np.percentile(np.array(raw) * 1000, [50, 99])
    results: dict = {"use_case": name, "version": str(champion.version), "requests": len(rows),
                     "raw_predict": {"p50_ms": float(raw_p50), "p99_ms": float(raw_p99)}}
    compiled = compiled_predict(name, scorer, rows)
    if compiled:
        results["compiled_predict"] = compiled

    ours_port, mlflow_port = free_port(), free_port()
    ours_root, mlflow_root = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{mlflow_port}"
    servers = {
        "deepflow serve": ([str(BIN / "deepflow"), "serve", "--port", str(ours_port)],
                           f"{ours_root}{path}", ours, f"{ours_root}/readyz", f"{ours_root}/healthz"),
        "mlflow models serve": ([str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}/{champion.version}",
                                 "--env-manager", "local", "--host", "127.0.0.1", "--port", str(mlflow_port)],
                                f"{mlflow_root}/invocations", [{"json": b} for b in theirs], None,
                                f"{mlflow_root}/ping"),
    }
    for label, (cmd, url, kwargs, ready, probe) in servers.items():
        proc, cold = start(cmd, url, kwargs[0])
        try:
            settled(ready)
            results[label] = {"cold_start_s": cold, "probe_p50_ms": floor(probe),
                              **{f"c{c}": load(url, kwargs, c) for c in (1, 8)}}
            if ready:
                results[label]["runtime"] = httpx.get(f"{ours_root}/v1/models").json()["models"][name].get("runtime")
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    print(json.dumps(results, indent=2))
    print(f"\n{name} v{results['version']}, {len(rows)} requests of one item each")
    print(f"{'':22} {'cold s':>7} {'c1 p50':>8} {'c1 p99':>8} {'c1 rps':>8} {'c8 p50':>8} {'c8 p99':>8} {'c8 rps':>8}")
    for label in servers:
        r = results[label]
        print(f"{label:22} {r['cold_start_s']:7.1f} {r['c1']['p50_ms']:8.2f} {r['c1']['p99_ms']:8.2f} "
              f"{r['c1']['rps']:8.0f} {r['c8']['p50_ms']:8.2f} {r['c8']['p99_ms']:8.2f} {r['c8']['rps']:8.0f}")
    print(f"{'raw predict (1 item)':22} {'':7} {raw_p50:8.3f} {raw_p99:8.3f}")
    if compiled:
        print(f"{'compiled (1 item)':22} {'':7} {compiled['p50_ms']:8.3f} {compiled['p99_ms']:8.3f}   "
              f"({compiled['runtime']}, largest difference from predict on these rows {compiled['max_diff']:.2g}; "
              f"the network in eager torch: p50 {compiled['eager_torch_p50_ms']:.3f} ms)")
    for label in servers:
        print(f"{label}: a GET that does no work (health probe), c1 p50 {results[label]['probe_p50_ms']:.2f} ms")
    a, b = results["deepflow serve"], results["mlflow models serve"]
    for c in ("c1", "c8"):
        print(f"requests/s ratio at {c}: {a[c]['rps'] / b[c]['rps']:.1f}x (goal >= 3x)")
    out = settings.PROJECT_ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"serving_latency_{name}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
