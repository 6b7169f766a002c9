"""The leaf parts of training that a DDP rank needs too (``deepflow.distributed``, ``deepflow.training``):
seeding and thread choice, where the Trainer runs, and a fit's result. No Trainer is built here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import lightning as L

from deepflow import threads as cpu_threads


def seed_everything(seed: int, threads: int = 0) -> cpu_threads.Choice:
    """Same seed and thread count, same CPU results: seeds torch/numpy/random and sets torch's
    intra-op threads: ``threads`` > 0 exactly, 0 chosen from the machine now (``deepflow.threads``,
    whose ``in_use()`` gives the choice back until the next call)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    L.seed_everything(seed, workers=True, verbose=False)
    return cpu_threads.use(threads)


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")


def trainer_options() -> dict[str, str | int]:
    """Where the Trainer runs: ``DEEPFLOW_ACCELERATOR`` (default ``auto``: a GPU if torch sees one)
    and ``DEEPFLOW_PRECISION`` (default ``32-true``). One device per process: ``train.devices`` /
    ``train.nodes`` > 1 train with DDP in a job of their own (``deepflow.distributed``); pick one GPU
    with CUDA_VISIBLE_DEVICES."""
    accelerator = os.environ.get("DEEPFLOW_ACCELERATOR", "auto").strip().lower() or "auto"
    precision = os.environ.get("DEEPFLOW_PRECISION", "32-true").strip() or "32-true"
    if accelerator not in ACCELERATORS:
        raise ValueError(f"DEEPFLOW_ACCELERATOR={accelerator!r}: expected one of {', '.join(ACCELERATORS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"DEEPFLOW_PRECISION={precision!r}: expected one of {', '.join(PRECISIONS)}")
    return {"accelerator": accelerator, "devices": 1, "precision": precision}


@dataclass
class FitResult:
    best_value: float | None
    best_epoch: int
    epochs_run: int
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_by: str = ""  # "early stopping", "time limit" or "max epochs"
    resumed_from_epoch: int = 0  # epochs done by an earlier, killed attempt (its checkpoint)
