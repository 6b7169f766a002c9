"""The Lightning system that trains either detector: augmentation, loss, schedule, ``val/map50``."""

from __future__ import annotations

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
    split through the serving scorer's own decode + NMS and logs its mAP@0.5 and mAP@0.5:0.95."""

    def __init__(self, net: nn.Module, val: pd.DataFrame, size: int, classes: list[str], *, lr: float,
                 weight_decay: float, total_steps: int, augment_cfg: AugmentConfig, box_weight: float,
                 iou_kind: str, seed: int) -> None:
        super().__init__()
        self.net, self.val_frame, self.size, self.classes = net, val, size, list(classes)
        self.lr, self.weight_decay, self.total_steps = lr, weight_decay, total_steps
        self.augment_cfg, self.box_weight, self.iou_kind = augment_cfg, box_weight, iou_kind
        self.generator = torch.Generator().manual_seed(seed)
        self._val: list[tuple] = []

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
        images, _ = batch
        self._val.extend(detect(self.net, images.float() / 255))

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
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=max(self.total_steps, 2),
                                                    pct_start=0.15)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
