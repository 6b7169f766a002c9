"""Anchor-free target assignment and the detection loss, batched over images.

Assignment (FCOS-style, static): each ground-truth box belongs to one pyramid level, chosen by its
longer side (level of stride ``s`` takes sides in (lo, 5 s]); on that level, a cell is positive
for the box if its centre lies inside the box within ``radius * s`` of the box centre, or if the
cell holds the box centre. A cell claimed by two boxes takes the smaller one.

Loss: ``box * (1 - CIoU)`` on positives, objectness BCE against the IoU of the predicted box
(quality-aware, as YOLOv5) on all cells, class BCE on positives; each divided by the positives.
Computed in float32 on the maps' device whatever the network's precision (bf16 autocast included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepflow.kinds.detection.boxes import aligned_iou
from deepflow.kinds.detection.models import decode_boxes, flatten, grid


def level_ranges(strides: tuple[int, ...], cell_strides: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi] of box side handled by each cell's level (A,), (A,)."""
    his = [5.0 * s for s in strides[:-1]] + [float("inf")]
    los = [0.0] + his[:-1]
    lo = torch.zeros_like(cell_strides)
    hi = torch.zeros_like(cell_strides)
    for s, a, b in zip(strides, los, his, strict=True):
        lo[cell_strides == s], hi[cell_strides == s] = a, b
    return lo, hi


@torch.no_grad()
def assign(targets: torch.Tensor, points: torch.Tensor, cell_strides: torch.Tensor, strides: tuple[int, ...],
           radius: float = 2.5) -> tuple[torch.Tensor, torch.Tensor]:
    """targets (B, M, 5) = [class, x1, y1, x2, y2] (class -1: padding) ->
    (positive mask (B, A), index of the assigned target (B, A))."""
    boxes, valid = targets[..., 1:], targets[..., 0] >= 0  # (B, M, 4), (B, M)
    wh = boxes[..., 2:] - boxes[..., :2]
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    lo, hi = level_ranges(strides, cell_strides)
    side = wh.max(-1).values[..., None]  # (B, M, 1)
    on_level = (side > lo) & (side <= hi)  # (B, M, A)
    p = points[None, None]  # (1, 1, A, 2)
    dist = (p - centre[:, :, None]).abs().max(-1).values  # (B, M, A) L-inf distance to the centre
    inside = ((p > boxes[:, :, None, :2]) & (p < boxes[:, :, None, 2:])).all(-1)
    near = (inside & (dist < radius * cell_strides)) | (dist <= cell_strides / 2)
    candidate = valid[..., None] & on_level & near
    area = torch.where(candidate, wh.prod(-1)[..., None], torch.full_like(dist, float("inf")))
    best = area.argmin(1)  # (B, A): the smallest candidate box
    return candidate.any(1), best


def detection_loss(maps: list[torch.Tensor], targets: torch.Tensor, strides: tuple[int, ...], *,
                   box_weight: float = 5.0, iou_kind: str = "ciou") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    points, cell_strides = grid(maps, strides)  # on the maps' device
    out = flatten(maps).float()  # (B, A, 5+K); the loss in float32 under bf16 autocast too
    positive, index = assign(targets, points, cell_strides, strides)
    matched = torch.gather(targets, 1, index[..., None].expand(-1, -1, 5))  # (B, A, 5)
    n_pos = positive.sum().clamp(min=1)
    pred = decode_boxes(out[..., :4], points, cell_strides)[positive]  # (P, 4)
    true = matched[..., 1:][positive]
    iou = aligned_iou(pred, true, iou_kind)  # (P,)
    box = (1 - iou).sum() / n_pos
    obj_target = torch.zeros_like(out[..., 4])
    obj_target[positive] = aligned_iou(pred, true).detach().clamp(0, 1)
    obj = F.binary_cross_entropy_with_logits(out[..., 4], obj_target, reduction="sum") / n_pos
    cls_target = F.one_hot(matched[..., 0][positive].long(), out.shape[-1] - 5).float()
    cls = F.binary_cross_entropy_with_logits(out[..., 5:][positive], cls_target, reduction="sum") / n_pos
    total = box_weight * box + obj + cls
    return total, {"box": box.detach(), "obj": obj.detach(), "cls": cls.detach()}
