"""NLP: training throughput and per-message latency of every candidate and the baseline, side by side.

For each member, on the prepared SMS split: fit it with the use case's own config, then
- training throughput: training messages per second over the epochs actually run (the transfer
  model's one-off embedding of the training split is timed apart: it is cached per data version),
- latency per message at batch 1 through the scorer (raw string in, probabilities out: tokenising
  or encoding included), p50 and p99 over ``--messages`` test messages, after a warm-up,
- the network's forward pass alone on the already-featurised message, to show what preprocessing costs.

    .venv/bin/python bench/nlp_latency.py [--messages 500] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import pandas as pd
import torch

from deepflow import settings, usecase


def percentiles(times: list[float]) -> dict[str, float]:
    p50, p99 = np.percentile(np.array(times) * 1000, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99)}


def latency(scorer, texts: list[str]) -> tuple[dict, dict | None]:
    frames = [pd.DataFrame({"text": [t]}) for t in texts]
    for f in frames[:20]:
        scorer.predict(f)
    end_to_end = []
    for f in frames:
        start = time.perf_counter()
        scorer.predict(f)
        end_to_end.append(time.perf_counter() - start)
    net = getattr(scorer, "net", None)
    if net is None:
        return percentiles(end_to_end), None
    inputs = [scorer.featurizer.encode([t]) for t in texts]
    forward = []
    with torch.inference_mode():
        for x in inputs[:20]:
            net(x)
        for x in inputs:
            start = time.perf_counter()
            net(x)
            forward.append(time.perf_counter() - start)
    return percentiles(end_to_end), percentiles(forward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    settings.apply_env_defaults()
    if args.threads:
        torch.set_num_threads(args.threads)
    uc = usecase.get("nlp")
    splits = uc.load_splits()
    texts = splits["test"]["text"].head(args.messages).tolist()
    rows = []
    for name, kind in uc.members():
        extra = {}
        if name == "transfer":  # time the one-off encoding of the training split (not cached here)
            from deepflow.kinds.text.encoder import SentenceEncoder

            enc, train = SentenceEncoder(), splits["train"]["text"].tolist()
            enc.embed(train[:64])  # load the weights outside the timing
            start = time.perf_counter()
            enc.embed(train)
            extra["encode_train_msgs_per_s"] = len(train) / (time.perf_counter() - start)
        scorer, info = uc.fit(name, kind, splits)
        e2e, fwd = latency(scorer, texts)
        rows.append({"member": name, "kind": kind, "train_msgs_per_s": info["messages_per_s"],
                     "fit_s": info["fit_seconds"], "epochs": info.get("epochs_run"), **extra,
                     **{f"e2e_{k}": v for k, v in e2e.items()},
                     **({f"forward_{k}": v for k, v in fwd.items()} if fwd else {}),
                     "test_f1": uc.evaluate(scorer.predict(splits["test"]), splits["test"])["f1"]})
    result = {"machine": platform.processor() or platform.machine(), "cpus": torch.get_num_threads(),
              "torch": torch.__version__, "messages": len(texts), "rows": rows,
              "date": time.strftime("%Y-%m-%d")}
    print(f"{'member':10} {'train msg/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'fwd p50':>8} {'fwd p99':>8} {'test F1':>8}")
    for r in rows:
        print(f"{r['member']:10} {r['train_msgs_per_s']:12,.0f} {r['e2e_p50_ms']:8.3f} {r['e2e_p99_ms']:8.3f} "
              f"{r.get('forward_p50_ms', float('nan')):8.3f} {r.get('forward_p99_ms', float('nan')):8.3f} "
              f"{r['test_f1']:8.4f}")
    for r in rows:
        if "encode_train_msgs_per_s" in r:
            print(f"{r['member']}: encoding the training split runs at {r['encode_train_msgs_per_s']:,.0f} msg/s "
                  "(once per data version; cached)")
    out = settings.PROJECT_ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "nlp_latency.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
