"""The one place a Lightning Trainer is built, plus the leaf utilities every candidate shares.

Metrics are logged to MLflow once per epoch, in one batch, against an explicit ``run_id``; each
finished epoch is also reported to ``deepflow.progress`` (a no-op unless a command enabled it).
"""

from __future__ import annotations

import copy
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import lightning as L
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from deepflow import progress
from deepflow import threads as cpu_threads


def seed_everything(seed: int, threads: int = 0) -> cpu_threads.Choice:
    """Same seed and thread count, same CPU results: seeds torch/numpy/random and sets torch's
    intra-op threads: ``threads`` > 0 exactly, 0 chosen from the machine now (``deepflow.threads``,
    whose ``in_use()`` gives the choice back until the next call)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    L.seed_everything(seed, workers=True, verbose=False)
    return cpu_threads.use(threads)


def batches(*tensors: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A loader that slices whole batches out of in-memory tensors (no per-row collate)."""
    dataset = TensorDataset(*tensors)
    base = (
        RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
        if shuffle
        else SequentialSampler(dataset)
    )
    # batch_size=None: each sampled item is already a list of indices -> tensor[idx] per batch.
    return DataLoader(dataset, batch_size=None, sampler=BatchSampler(base, batch_size, False))


class EpochMetricsToMlflow(L.Callback):
    """Log the epoch's ``train/*`` and ``val/*`` metrics to one MLflow run, one call per epoch."""

    def __init__(self, log: Callable[[dict[str, float], int], None]) -> None:
        self.sink = log

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))
        }
        if metrics:
            self.sink(metrics, trainer.current_epoch)


class EpochProgress(L.Callback):
    """Report each finished epoch (epochs done of ``total``, training seconds so far) to
    ``deepflow.progress``, for the entry and member of the step that started this fit."""

    def __init__(self, total: int, may_stop_early: bool) -> None:
        self.total, self.may_stop_early = total, may_stop_early
        self.entry, self.member = progress.current()
        self.start = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        progress.epoch(self.entry, self.member, trainer.current_epoch + 1, self.total,
                       seconds=time.perf_counter() - self.start, may_stop_early=self.may_stop_early)


class KeepBest(L.Callback):
    """Keep the weights of the best epoch in memory (no checkpoint files to clean up)."""

    def __init__(self, monitor: str, mode: str = "max") -> None:
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.best_epoch: int = -1
        self.state: dict | None = None

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best, self.best_epoch = value, trainer.current_epoch
            self.state = copy.deepcopy(module.state_dict())

    def restore(self, module: L.LightningModule) -> None:
        if self.state is not None:
            module.load_state_dict(self.state)


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")


def trainer_options() -> dict[str, str | int]:
    """Where the Trainer runs: ``DEEPFLOW_ACCELERATOR`` (default ``auto``: a GPU if torch sees one)
    and ``DEEPFLOW_PRECISION`` (default ``32-true``). Always one device: multi-device (DDP) training
    is not supported by the pipeline (docs/team.md says why); pick the GPU with CUDA_VISIBLE_DEVICES."""
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


def fit(
    module: L.LightningModule,
    train: DataLoader,
    val: DataLoader | None,
    *,
    max_epochs: int,
    monitor: str,
    patience: int,
    log: Callable[[dict[str, float], int], None] | None = None,
    fast_dev_run: bool = False,
    mode: str = "max",
    time_limit_s: float | None = None,
) -> FitResult:
    """Train ``module``; leave it holding its best-on-validation weights. Without ``val``: exactly
    ``max_epochs`` epochs, no early stopping (the epoch count is then a hyperparameter). ``mode``:
    whether a higher (``max``) or lower (``min``) ``monitor`` is better. ``time_limit_s``: training
    stops after the step that reaches it (Lightning's ``max_time``), with the best weights seen so
    far. Reports every epoch and the fit's end to ``deepflow.progress``."""
    # Lightning's GPU/TPU banners and tips: into the log file when progress routes logs, else dropped.
    logging.getLogger("lightning.pytorch").setLevel(logging.INFO if progress.logs_routed() else logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    keep = KeepBest(monitor, mode)
    stopper = L.pytorch.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience)
    callbacks: list[L.Callback] = [] if val is None else [keep, stopper]
    if log is not None:
        callbacks.append(EpochMetricsToMlflow(log))
    total = 1 if fast_dev_run else max_epochs
    reporter = EpochProgress(total, may_stop_early=val is not None and not fast_dev_run)
    callbacks.append(reporter)
    trainer = L.Trainer(
        **trainer_options(),
        max_epochs=max_epochs,
        max_time=None if time_limit_s is None else timedelta(seconds=max(time_limit_s, 0.0)),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
        fast_dev_run=fast_dev_run,
        callbacks=callbacks,
    )
    start = time.perf_counter()
    trainer.fit(module, train, val)
    seconds = time.perf_counter() - start
    progress.fitted(reporter.entry, reporter.member, trainer.current_epoch, total, seconds=seconds)
    keep.restore(module)
    module.cpu().eval()
    stopped_by = ("early stopping" if val is not None and stopper.stopped_epoch > 0
                  else "time limit" if time_limit_s is not None and seconds >= time_limit_s else "max epochs")
    return FitResult(
        best_value=keep.best,
        best_epoch=keep.best_epoch,
        epochs_run=trainer.current_epoch,
        steps=trainer.global_step,
        seconds=seconds,
        stopped_by=stopped_by,
    )
