"""The one place a Lightning Trainer is built, plus the leaf utilities every candidate shares.

Metrics are logged to MLflow once per epoch, in one batch, against an explicit ``run_id``; each
finished epoch is also reported to ``deepflow.progress`` (a no-op unless a command enabled it).
Inside ``checkpoints.member`` (the pipeline's member fits) every completed epoch is checkpointed and
a fit resumes from its checkpoint (:class:`EpochCheckpoint`); the shuffle order is a function of
(seed, epoch) (:class:`ShuffledBatches`), so a resumed fit ends as an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import random
import time
import warnings
from collections.abc import Callable
from datetime import timedelta

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, Timer
from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler, TensorDataset

from deepflow import checkpoints, progress
from deepflow.trainer_setup import (  # noqa: F401  (the leaf parts, re-exported)
    ACCELERATORS,
    PRECISIONS,
    FitResult,
    seed_everything,
    trainer_options,
)


class ShuffledBatches(Sampler[list[int]]):
    """Batches of indices of a random order of ``n`` rows that depends on (``seed``, epoch) only, not
    on earlier epochs: Lightning calls :meth:`set_epoch` before each epoch (as for a
    DistributedSampler), so a fit resumed at epoch k sees epoch k's order. A loop that never calls
    it still gets a new order each pass (the epoch counts passes)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        state = np.random.SeedSequence([self.seed & 0xFFFFFFFF, self.epoch]).generate_state(2, np.uint32)
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1])))
        self.epoch += 1
        for start in range(0, self.n, self.batch_size):
            yield order[start:start + self.batch_size].tolist()


def batches(*tensors: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A loader that slices whole batches out of in-memory tensors (no per-row collate); shuffled:
    a new order each epoch, a function of (``seed``, epoch) (:class:`ShuffledBatches`)."""
    dataset = TensorDataset(*tensors)
    sampler = (ShuffledBatches(len(dataset), batch_size, seed) if shuffle
               else BatchSampler(SequentialSampler(dataset), batch_size, False))
    # batch_size=None: each sampled item is already a list of indices -> tensor[idx] per batch.
    return DataLoader(dataset, batch_size=None, sampler=sampler)


class EpochMetricsToMlflow(L.Callback):
    """Log the epoch's ``train/*`` and ``val/*`` metrics to one MLflow run, one call per epoch. Its
    state is the metrics so far: a resumed fit logs the earlier epochs' again, into its own run."""

    def __init__(self, log: Callable[[dict[str, float], int], None]) -> None:
        self.sink = log
        self.history: list[list] = []  # [epoch, metrics] per finished epoch

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.history = [list(item) for item in state.get("history", [])]
        for epoch, metrics in self.history:
            self.sink(metrics, epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))
        }
        if metrics:
            self.history.append([trainer.current_epoch, metrics])
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
    """Keep the weights of the best epoch in memory; they are part of its state (a checkpoint's)."""

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

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "state": self.state}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.state = state["best"], state["best_epoch"], state["state"]


class AttemptTimer(Timer):
    """Lightning's ``max_time`` Timer counting this attempt only: a resumed fit may train for its whole
    ``time_limit_s`` again (the limit is a share of this command's budget, a promise about this
    command's wall clock; the killed attempt's seconds were spent by another command)."""

    def load_state_dict(self, state_dict: dict) -> None:
        pass


def generators(module: torch.nn.Module) -> dict[str, torch.Generator]:
    """The random generators a module holds as attributes (e.g. its own augmentation generator)."""
    return {f"{name}.{attr}": value for name, sub in module.named_modules()
            for attr, value in vars(sub).items() if isinstance(value, torch.Generator)}


def rng_states(module: torch.nn.Module) -> dict:
    """Every random state a fit draws from: torch (CPU and CUDA), numpy, Python and ``module``'s
    generators, as tensors and plain values (a checkpoint loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generators": {name: g.get_state() for name, g in generators(module).items()}}


def set_rng_states(module: torch.nn.Module, states: dict) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    for name, g in generators(module).items():
        if name in states["generators"]:
            g.set_state(states["generators"][name])


class EpochCheckpoint(Checkpoint):
    """After every completed epoch, the whole fit into ``fit``'s file (``checkpoints.Fit.write``:
    temporary file + rename): weights, optimizer, scheduler, loop state, every callback's state
    (best weights, early stopping, metrics so far) and the RNG states Lightning leaves out, which
    come back while Lightning restores the fit, so the resumed epochs draw what the uninterrupted
    fit drew.
    The epoch after which the fit stops (early stopping, time limit, max epochs) is not written: a
    fit killed after it redoes it. A Checkpoint, so that Lightning calls it after EarlyStopping has decided."""

    def __init__(self, fit: checkpoints.Fit) -> None:
        self.fit = fit
        self.module: torch.nn.Module | None = None

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self.module = module

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        last = trainer.should_stop or trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
        if not trainer.sanity_checking and not last:
            self.fit.write(trainer.save_checkpoint)

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["deepflow"] = {"key": self.fit.key, "epochs": trainer.current_epoch + 1}

    def state_dict(self) -> dict:
        return {"rng": rng_states(self.module)} if self.module is not None else {}

    def load_state_dict(self, state: dict) -> None:
        # Now, while Lightning restores the fit (after setup): before the resumed epoch's loader draws
        # its base seed, as the uninterrupted fit drew it after this state was saved.
        if state.get("rng") is None or self.module is None:
            raise RuntimeError("EpochCheckpoint: a checkpoint without RNG states, or restored before setup")
        set_rng_states(self.module, state["rng"])


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
    devices: int = 1,
    nodes: int = 1,
) -> FitResult:
    """Train ``module``; leave it holding its best-on-validation weights. Without ``val``: exactly
    ``max_epochs`` epochs, no early stopping (the epoch count is then a hyperparameter). ``mode``:
    whether a higher (``max``) or lower (``min``) ``monitor`` is better. ``time_limit_s``: training
    stops after the step that reaches it (Lightning's ``max_time``), with the best weights seen so
    far; it counts this attempt's training only (:class:`AttemptTimer`). Inside
    ``checkpoints.member``: checkpointed after every epoch and resumed from the last one
    (:class:`EpochCheckpoint`). Reports every epoch and the fit's end to ``deepflow.progress``.
    ``devices`` x ``nodes`` > 1: DDP in its own job (``deepflow.distributed``), with the same result contract."""
    if devices < 1 or nodes < 1:
        raise ValueError(f"train.devices={devices}, train.nodes={nodes}: both must be >= 1")
    if devices * nodes > 1:
        from deepflow import distributed

        return distributed.fit(module, train, val, max_epochs=max_epochs, monitor=monitor, patience=patience,
                               log=log, fast_dev_run=fast_dev_run, mode=mode, time_limit_s=time_limit_s,
                               devices=devices, nodes=nodes)
    # Lightning's GPU/TPU banners and tips: into the log file when progress routes logs, else dropped.
    logging.getLogger("lightning.pytorch").setLevel(logging.INFO if progress.logs_routed() else logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    owner = None if fast_dev_run else checkpoints.active()
    slot = owner.next_fit() if owner is not None else None
    resume = slot.resumable(module.state_dict()) if slot is not None else None
    keep = KeepBest(monitor, mode)
    stopper = L.pytorch.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience)
    callbacks: list[L.Callback] = [] if val is None else [keep, stopper]
    if log is not None:
        callbacks.append(EpochMetricsToMlflow(log))
    total = 1 if fast_dev_run else max_epochs
    reporter = EpochProgress(total, may_stop_early=val is not None and not fast_dev_run)
    callbacks.append(reporter)
    if time_limit_s is not None:
        callbacks.append(AttemptTimer(duration=timedelta(seconds=max(time_limit_s, 0.0)), interval="step"))
    if slot is not None:
        callbacks.append(EpochCheckpoint(slot))
    trainer = L.Trainer(
        **trainer_options(),
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=slot is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
        fast_dev_run=fast_dev_run,
        callbacks=callbacks,
    )
    start = time.perf_counter()
    trainer.fit(module, train, val, ckpt_path=resume[0] if resume else None, weights_only=True)
    seconds = time.perf_counter() - start
    if slot is not None:
        slot.done()
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
        resumed_from_epoch=resume[1] if resume else 0,
    )
