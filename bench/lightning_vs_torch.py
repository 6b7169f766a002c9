"""Lightning vs. a plain PyTorch loop: same fraud network, data, epochs, batch size, logging.

Both loops: shuffle with the same seed, AdamW, per-epoch validation AUPRC, one MLflow log call
per epoch into a temporary SQLite store. Prints the ratio and the per-step overhead.

    .venv/bin/python bench/lightning_vs_torch.py [--member deep] [--epochs 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from deepflow import settings, tracking, training, usecase
from deepflow.kinds.tabular.models import Standardize, TabularSystem, build_net


def tensors(frame, cfg):
    x = torch.from_numpy(frame[cfg.features].to_numpy(np.float32, copy=True))
    y = torch.from_numpy(frame[cfg.label].to_numpy(np.float32, copy=True))
    return x, y


def plain_loop(net, x, y, xv, yv, cfg, log) -> tuple[float, int]:
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    steps = 0
    start = time.perf_counter()
    for epoch in range(cfg.train.epochs):
        net.train()
        total, n = 0.0, 0
        for xb, yb in training.batches(x, y, batch_size=cfg.train.batch_size, shuffle=True, seed=cfg.train.seed):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n, steps = total + loss.item() * len(xb), n + len(xb), steps + 1
        net.eval()
        with torch.no_grad():
            scores = torch.cat([net(xb) for xb, _ in training.batches(xv, yv, batch_size=8192, shuffle=False)])
        log({"train/loss": total / n, "val/auprc": average_precision_score(yv.numpy(), scores.numpy())}, epoch)
    return time.perf_counter() - start, steps


def lightning_loop(net, x, y, xv, yv, cfg, log) -> tuple[float, int]:
    system = TabularSystem(net, "bce", lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    result = training.fit(
        system,
        training.batches(x, y, batch_size=cfg.train.batch_size, shuffle=True, seed=cfg.train.seed),
        training.batches(xv, yv, batch_size=8192, shuffle=False),
        max_epochs=cfg.train.epochs, monitor="val/auprc", patience=10**6, log=log,
    )
    return result.seconds, result.steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--member", default="deep", choices=["shallow", "deep"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'bench.db'}"
    settings.apply_env_defaults()
    uc = usecase.get("fraud", [f"train.epochs={args.epochs}"])
    cfg = uc.cfg
    splits = uc.load_splits()
    x, y = tensors(splits["train"], cfg)
    xv, yv = tensors(splits["val"], cfg)
    timings: dict[str, list[float]] = {"plain": [], "lightning": []}
    steps = {}
    for _ in range(args.repeats):  # alternate, so drift in machine load hits both alike
        for name, loop in (("plain", plain_loop), ("lightning", lightning_loop)):
            training.seed_everything(cfg.train.seed)
            net, _ = build_net(args.member, Standardize(x.mean(0).numpy(), x.std(0).numpy()), cfg.model)
            run_id = tracking.start_run("bench", f"{name}-{args.member}")
            seconds, steps[name] = loop(net, x, y, xv, yv, cfg,
                                        lambda m, e, r=run_id: tracking.log_metrics(r, m, e))
            timings[name].append(seconds)
    best = {k: min(v) for k, v in timings.items()}
    ratio = best["lightning"] / best["plain"]
    overhead_ms = (best["lightning"] - best["plain"]) / steps["lightning"] * 1000
    result = {
        "member": args.member, "epochs": args.epochs, "steps": steps, "rows": len(x),
        "plain_s": best["plain"], "lightning_s": best["lightning"], "ratio": ratio,
        "overhead_ms_per_step": overhead_ms, "all_runs_s": timings,
        "torch": torch.__version__, "lightning": __import__("lightning").__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    print(f"Lightning / plain torch = {ratio:.3f}x  ({overhead_ms:+.2f} ms/step over "
          f"{steps['lightning']} steps, {args.member}, {args.epochs} epochs, logging on)")
    out = settings.PROJECT_ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"lightning_vs_torch_{args.member}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
