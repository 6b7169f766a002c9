"""GPU vs CPU: each network member's fit time and test metric, measured in one run on one machine
(its own CPU is the baseline), through the kinds' own ``fit()`` (tests/device_members.py).

Per member and device/precision: the seconds of the kind's whole ``fit()`` (its preprocessing
included), of the Lightning fit alone, the test split's primary metric, and the devices the
parameters were on at each epoch's end. Prints a markdown table headed by the card, torch and
Lightning versions and the date; ``--out`` also writes it (and ``--json`` the rows).

Runs on an image with torch, Lightning, pandas, pyarrow and scikit-learn only (no MLflow,
Prefect, Great Expectations, DVC, no network). ``--check`` exits 1 when a GPU fit's parameters
were not on the GPU, or a metric is not finite: the plain-python twin of tests/test_gpu.py.

    PYTHONPATH=src python bench/gpu_fit.py [--devices gpu,cpu] [--precisions 32-true,bf16-mixed]
        [--members fraud:shallow,traffic:deep] [--scale 4] [--epochs 3] [--check] [--out FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))  # tests.device_members

import torch  # noqa: E402

from tests import device_members  # noqa: E402


def parse_members(text: str | None) -> list[tuple[str, str]]:
    known = device_members.members()
    if not text:
        return known
    wanted = [tuple(item.split(":", 1)) for item in text.split(",") if item.strip()]
    if bad := [w for w in wanted if w not in known]:
        raise SystemExit(f"--members: unknown {bad} (known: {', '.join(f'{e}:{m}' for e, m in known)})")
    return wanted


def runs(devices: list[str], precisions: list[str]) -> list[tuple[str, str]]:
    """(accelerator, precision) pairs: every precision on the GPU, full precision on the CPU (the
    baseline; bf16 autocast on a CPU is an emulation, not what anyone trains with)."""
    out = []
    for d in devices:
        out += [(d, p) for p in precisions] if d == "gpu" else [(d, "32-true")]
    return out


def header() -> str:
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    import lightning

    return (f"card: {card}; CPU: {os.cpu_count()} cores ({platform.processor() or platform.machine()}); "
            f"torch {torch.__version__}, Lightning {lightning.__version__}; {date.today().isoformat()}")


def table(rows: list[device_members.Fitted]) -> str:
    lines = ["| entry | member | device | precision | fit s | train s | vs CPU | metric | value | params on |",
             "|---|---|---|---|---:|---:|---:|---|---:|---|"]
    cpu = {(r.entry, r.member): r.fit_seconds for r in rows if r.accelerator == "cpu"}
    for r in rows:
        base = cpu.get((r.entry, r.member))
        speed = f"{base / r.fit_seconds:.2f}x" if base and r.accelerator != "cpu" else ""
        lines.append(f"| {r.entry} | {r.member} | {r.accelerator} | {r.precision} | {r.fit_seconds:.2f} | "
                     f"{r.train_seconds:.2f} | {speed} | {r.metric_name} | {r.metric:.4f} | "
                     f"{','.join(sorted(set(r.devices)))} |")
    return "\n".join(lines)


def problems(rows: list[device_members.Fitted]) -> list[str]:
    out = []
    for r in rows:
        where = f"{r.entry} {r.member} {r.accelerator} {r.precision}"
        if not r.devices:
            out.append(f"{where}: no training epoch ended")
        elif r.accelerator == "gpu" and not all(d.startswith("cuda") for d in r.devices):
            out.append(f"{where}: parameters on {sorted(set(r.devices))}, not the GPU")
        if not math.isfinite(r.metric):
            out.append(f"{where}: {r.metric_name} = {r.metric}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default=None, help="comma list of gpu, cpu (default: gpu when CUDA is "
                                                        "available, then cpu)")
    parser.add_argument("--precisions", default="32-true,bf16-mixed", help="the GPU's precisions")
    parser.add_argument("--members", default=None, help="entry:member list (default: every network member)")
    parser.add_argument("--scale", type=int, default=4, help="data size, in multiples of the tests' small data")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--check", action="store_true", help="exit 1 when a GPU fit was off the GPU or a metric "
                                                             "is not finite")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    devices = (args.devices or ("gpu,cpu" if torch.cuda.is_available() else "cpu")).split(",")
    if unknown := [d for d in devices if d not in ("gpu", "cpu")]:
        raise SystemExit(f"--devices: unknown {unknown} (known: gpu, cpu)")
    if "gpu" in devices and not torch.cuda.is_available():
        raise SystemExit("--devices gpu: torch sees no CUDA device here")
    if args.scale < 1 or args.epochs < 1:
        raise SystemExit(f"--scale {args.scale}, --epochs {args.epochs}: both must be >= 1")
    warnings.filterwarnings("ignore")
    members = parse_members(args.members)
    if "gpu" in devices:  # the CUDA context is made here, not inside the first GPU fit's timing
        torch.ones(1, device="cuda").sum().item()
    rows: list[device_members.Fitted] = []
    for entry, member in members:
        started = time.perf_counter()
        device_members.splits(entry, args.scale)  # made once, outside the timings
        made = time.perf_counter() - started
        for accelerator, precision in runs(devices, args.precisions.split(",")):
            try:
                fitted = device_members.fit(entry, member, accelerator, precision, scale=args.scale,
                                            epochs=args.epochs)
            except Exception as exc:  # one member's failure is a row, not the end of the run
                print(f"{entry} {member} {accelerator} {precision}: FAILED {type(exc).__name__}: {exc}",
                      file=sys.stderr, flush=True)
                fitted = device_members.Fitted(entry, member, accelerator, precision, math.nan, math.nan,
                                               "failed", math.nan)
            rows.append(fitted)
            print(f"{entry} {member} {accelerator} {precision}: fit {fitted.fit_seconds:.2f} s, "
                  f"{fitted.metric_name} {fitted.metric:.4f} (data {made:.1f} s)", file=sys.stderr, flush=True)
    text = f"{header()}\n\nscale {args.scale}, {args.epochs} epochs\n\n{table(rows)}\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    if args.check and (found := problems(rows)):
        print("\n".join(["CHECK FAILED:", *found]), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
