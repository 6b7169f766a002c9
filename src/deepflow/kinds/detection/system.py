"""The Lightning system that trains either detector: augmentation, loss, schedule, ``val/map50``.

The learning rate follows a one-cycle schedule sized by ``total_steps`` (the epochs asked for).
With a time limit (``time_limit_s``: a run's budget), the schedule follows the clock instead:
after every epoch the epochs that still fit are estimated from the epochs so far, and the
schedule's remaining steps are re-sized to end with them (:class:`TimedOneCycle`), so a run the
budget cuts short still anneals; past its end the rate holds at its floor.
"""

from __future__ import annotations

import math
import time

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import nn

from deepflow.kinds.detection.augment import AugmentConfig, augment
from deepflow.kinds.detection.loss import detection_loss
from deepflow.kinds.detection.metrics import Matched
from deepflow.kinds.detection.models import detect
from deepflow.kinds.detection.scorer import detections_frame


class DetectorSystem(L.LightningModule):
    """Batches are (images (B, 3, S, S) uint8, targets (B, M, 5)); validation scores the val
    split through the serving scorer's own decode + NMS and logs its mAP@0.5 and mAP@0.5:0.95.
    Trains on any device and precision: augmentation numbers are drawn on the CPU generator and
    moved to the batch, the loss runs in float32, validation outputs reach the CPU once per batch."""

    def __init__(self, net: nn.Module, val: pd.DataFrame, size: int, classes: list[str], *, lr: float,
                 weight_decay: float, total_steps: int, augment_cfg: AugmentConfig, box_weight: float,
                 iou_kind: str, seed: int, steps_per_epoch: int | None = None,
                 time_limit_s: float | None = None) -> None:
        super().__init__()
        self.net, self.val_frame, self.size, self.classes = net, val, size, list(classes)
        self.lr, self.weight_decay, self.total_steps = lr, weight_decay, total_steps
        self.augment_cfg, self.box_weight, self.iou_kind = augment_cfg, box_weight, iou_kind
        # drawn on the CPU, moved to each batch's device (augment.draw): one seed, one augmentation anywhere
        self.generator = torch.Generator().manual_seed(seed)  # device: cpu on purpose — see the line above
        self._val: list[tuple] = []
        # the clock-following schedule (None: sized by epochs only, exactly as OneCycleLR)
        self.steps_per_epoch, self.time_limit_s = steps_per_epoch, time_limit_s
        self._started: float | None = None
        self._epoch_s: list[float] = []  # seconds of each finished epoch (training + validation)
        self.resized: list[int] = []  # the schedule's total steps after each re-size (for the record)

    def on_train_start(self) -> None:
        self._started = self._last = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        """Re-size the schedule to the epochs that still fit in the time limit (validation has run)."""
        if self.time_limit_s is None or not self.steps_per_epoch or self._started is None:
            return
        now = time.perf_counter()
        self._epoch_s.append(now - self._last)
        self._last = now
        done = len(self._epoch_s)
        fit = epochs_that_fit(self.time_limit_s - (now - self._started), self._epoch_s)
        sched = self.lr_schedulers()
        total = min(math.ceil(self.total_steps / self.steps_per_epoch), done + fit) * self.steps_per_epoch
        if isinstance(sched, TimedOneCycle) and total != sched.total_steps and sched.resize(total):
            self.resized.append(sched.total_steps)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        images, targets = batch
        x, targets = augment(images.float() / 255, targets, self.augment_cfg, self.generator)
        loss, parts = detection_loss(self.net(x), targets, self.net.strides, box_weight=self.box_weight,
                                     iou_kind=self.iou_kind)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        for name, value in parts.items():
            self.log(f"train/{name}_loss", value, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        images, _ = batch  # the dense outputs come to the CPU in one copy per batch; NMS runs there
        self._val.extend(detect(self.net, images.float() / 255, to_cpu=True))

    def on_validation_epoch_end(self) -> None:
        frame = self.val_frame.head(len(self._val))  # fast_dev_run validates a single batch
        scale = self.size / frame[["width", "height"]].max(axis=1).to_numpy(dtype=np.float64)
        parts = [(i, b.numpy() / scale[i], s.numpy(), c.numpy()) for i, (b, s, c) in enumerate(self._val)]
        self._val.clear()
        matched = Matched(frame, detections_frame(parts, self.classes), self.classes)
        ap = matched.ap()
        self.log("val/map50", float(np.nanmean(ap[:, 0])) if np.isfinite(ap).any() else 0.0)
        self.log("val/map", float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        cls = torch.optim.lr_scheduler.OneCycleLR if self.time_limit_s is None else TimedOneCycle
        sched = cls(opt, max_lr=self.lr, total_steps=max(self.total_steps, 2), pct_start=PCT_START)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


PCT_START = 0.15  # the share of the schedule spent warming up


PACE_MARGIN = 1.1  # epochs vary: plan each a tenth longer, so the schedule ends before the clock does


def epochs_that_fit(left_s: float, epoch_s: list[float]) -> int:
    """Whole epochs that fit in ``left_s`` seconds, at the pace of the epochs so far (the first one,
    which carries the start-up, counts only while it is the only one), with :data:`PACE_MARGIN`."""
    pace = epoch_s[1:] or epoch_s
    per_epoch = max(PACE_MARGIN * sum(pace) / len(pace), 1e-6)
    return max(int(left_s // per_epoch), 0)


class TimedOneCycle(torch.optim.lr_scheduler.OneCycleLR):
    """OneCycleLR whose length can change while it runs (:meth:`resize`) and that holds its final
    rate past its end instead of failing (a time limit reached mid-epoch, or a pessimistic re-size)."""

    def resize(self, total_steps: int) -> bool:
        """End the schedule at ``total_steps`` (never before the step it is at); the warm-up keeps its
        share unless it is already over. True when the length changed."""
        total = max(int(total_steps), self.last_epoch + 1, 2)
        if total == self.total_steps:
            return False
        phases = self._schedule_phases
        warm_end = phases[0]["end_step"]
        if self.last_epoch < warm_end:  # still warming up: keep the share, never end behind the step,
            # and leave at least one step to anneal in
            phases[0]["end_step"] = min(max(float(PCT_START * total) - 1, float(self.last_epoch)), float(total - 2))
        phases[-1]["end_step"] = float(total - 1)
        self.total_steps = total
        return True

    def get_lr(self):
        if self.last_epoch < self.total_steps:
            return super().get_lr()
        step = self.last_epoch
        self.last_epoch = self.total_steps - 1  # hold at the schedule's end
        try:
            return super().get_lr()
        finally:
            self.last_epoch = step
