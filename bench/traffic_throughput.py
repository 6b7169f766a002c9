"""Traffic detectors: training images/s, batch-1 latency and batch-32 throughput, eager vs TorchScript.

Per candidate (untrained weights: speed does not depend on them, except NMS, measured with the
full scorer on a trained-like number of boxes capped by ``max_det``):

- train img/s: forward + loss + backward + AdamW step on augmented batches of 32;
- net b1 p50/p95 ms: the network alone on one frame (eager, then ``torch.jit.trace``);
- scorer b1 p50/p95 ms: what serving pays per frame: JPEG decode, letterbox, network, NMS;
- b32 img/s: network (eager and TorchScript) and full scorer on batches of 32.

    .venv/bin/python bench/traffic_throughput.py [--threads 2] [--size 160] [--repeats 50]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deepflow.kinds.detection.augment import AugmentConfig, augment
from deepflow.kinds.detection.config import ModelConfig
from deepflow.kinds.detection.loss import detection_loss
from deepflow.kinds.detection.models import build_net
from deepflow.kinds.detection.scorer import DetectorScorer, to_tensors
from deepflow.usecases.traffic.generate import CLASSES, GenerateParams, frame_row


def timed(fn, repeats: int, warmup: int = 10) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return np.array(out)


def train_rate(name: str, frames: pd.DataFrame, size: int, steps: int) -> float:
    net = build_net(name, len(CLASSES), ModelConfig(img_size=size)).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    images, targets = to_tensors(frames.head(32), size)
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        x, t = augment(images.float() / 255, targets, AugmentConfig(), g)
        loss, _ = detection_loss(net(x), t, net.strides)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return 32 / float(np.median(timed(step, steps, warmup=2)))


def bench(name: str, frames: pd.DataFrame, size: int, repeats: int, train_steps: int) -> dict:
    net = build_net(name, len(CLASSES), ModelConfig(img_size=size)).eval()
    one = torch.rand(1, 3, size, size)
    batch = torch.rand(32, 3, size, size)
    traced = torch.jit.freeze(torch.jit.trace(net, one, strict=False))
    scorer = DetectorScorer(net, size, CLASSES)
    row = {"candidate": name, "parameters": sum(p.numel() for p in net.parameters()),
           "train img/s": train_rate(name, frames, size, train_steps)}
    with torch.inference_mode():
        for label, model in (("eager", net), ("torchscript", traced)):
            b1 = timed(lambda m=model: m(one), repeats) * 1000
            row[f"net b1 p50 ms ({label})"], row[f"net b1 p95 ms ({label})"] = np.percentile(b1, [50, 95])
            b32 = timed(lambda m=model: m(batch), max(5, repeats // 10))
            row[f"net b32 img/s ({label})"] = 32 / float(np.median(b32))
    single = frames[["image"]].head(1)
    b1 = timed(lambda: scorer.predict(single), repeats) * 1000
    row["scorer b1 p50 ms"], row["scorer b1 p95 ms"] = np.percentile(b1, [50, 95])
    row["scorer b1 frames/s"] = 1000 / row["scorer b1 p50 ms"]
    row["scorer b32 img/s"] = 32 / float(np.median(timed(lambda: scorer.predict(frames[["image"]].head(32)),
                                                         max(5, repeats // 10))))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/traffic_throughput.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    p = GenerateParams(width=args.size, height=args.size)
    frames = pd.DataFrame([frame_row(p, "test", i) for i in range(32)])
    rows = [bench(name, frames, args.size, args.repeats, args.train_steps) for name in ("shallow", "deep")]
    table = pd.DataFrame(rows).set_index("candidate").T
    print(f"traffic detectors at {args.size} px, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(table.to_string(float_format=lambda v: f"{v:,.1f}"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"size": args.size, "threads": torch.get_num_threads(), "rows": rows},
                                   indent=2, default=float))


if __name__ == "__main__":
    main()
