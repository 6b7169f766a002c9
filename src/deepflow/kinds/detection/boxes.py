"""Box operations in plain torch (no torchvision): format conversion, IoU family, NMS.

Boxes are ``(..., 4)`` tensors in ``xyxy`` pixels unless a name says otherwise.
"""

from __future__ import annotations

import math

import torch

EPS = 1e-7


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)


def area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU: (N, 4) x (M, 4) -> (N, M)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + EPS)


def aligned_iou(a: torch.Tensor, b: torch.Tensor, kind: str = "iou") -> torch.Tensor:
    """Element-wise IoU / GIoU / DIoU / CIoU of two aligned ``(..., 4)`` sets -> ``(...)``.

    GIoU subtracts the empty share of the enclosing box; DIoU the squared centre distance over
    the enclosing diagonal; CIoU also an aspect-ratio term (Zheng et al., 2020).
    """
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area(a) + area(b) - inter + EPS
    iou = inter / union
    if kind == "iou":
        return iou
    enc_lt = torch.minimum(a[..., :2], b[..., :2])
    enc_rb = torch.maximum(a[..., 2:], b[..., 2:])
    if kind == "giou":
        enclosing = (enc_rb - enc_lt).prod(-1) + EPS
        return iou - (enclosing - union) / enclosing
    diagonal = ((enc_rb - enc_lt) ** 2).sum(-1) + EPS
    centre = (((a[..., :2] + a[..., 2:]) - (b[..., :2] + b[..., 2:])) ** 2).sum(-1) / 4
    if kind == "diou":
        return iou - centre / diagonal
    if kind != "ciou":
        raise ValueError(f"unknown IoU kind {kind!r} (known: iou, giou, diou, ciou)")
    wa, ha = (a[..., 2] - a[..., 0]), (a[..., 3] - a[..., 1]).clamp(min=EPS)
    wb, hb = (b[..., 2] - b[..., 0]), (b[..., 3] - b[..., 1]).clamp(min=EPS)
    v = (4 / math.pi**2) * (torch.atan(wb / hb) - torch.atan(wa / ha)) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + EPS)
    return iou - centre / diagonal - alpha * v


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of kept boxes, by decreasing score (torchvision's semantics)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])  # (N, N), in score order
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    # Row i suppresses later boxes only if i itself survives: one pass over an (N, N) matrix.
    overlaps = (iou > iou_threshold).triu(1)
    for i in range(len(order)):
        if keep[i]:
            keep &= ~overlaps[i]
    return order[keep]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """Per-class NMS in one call: boxes of different classes are shifted apart first."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offset = classes.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou_threshold)


XYXY = ["x1", "y1", "x2", "y2"]


def agreement(registered, rebuilt, iou: float = 0.5) -> dict:
    """How two detectors' outputs on the same images agree (``deepflow reproduce``): per image and
    class, boxes matched greedily by score at IoU >= ``iou``; ``matched_share`` of the larger box
    count, the smallest IoU and largest score difference among matches, and ``identical``."""
    import numpy as np

    a, b = registered.reset_index(drop=True), rebuilt.reset_index(drop=True)
    identical = a.equals(b)
    ious, score_diffs = [], []
    groups = {key: frame for key, frame in b.groupby(["image", "class"])}
    for key, mine in a.groupby(["image", "class"]):
        theirs = groups.get(key)
        if theirs is None:
            continue
        m = box_iou(torch.tensor(mine[XYXY].to_numpy(dtype=np.float64)),  # device: cpu on purpose — numpy in, out
                    torch.tensor(theirs[XYXY].to_numpy(dtype=np.float64))).numpy()  # device: cpu on purpose — same
        free = np.ones(len(theirs), dtype=bool)
        for i in np.argsort(-mine["score"].to_numpy(), kind="stable"):
            j = int(np.argmax(np.where(free, m[i], -1.0)))
            if free[j] and m[i, j] >= iou:
                free[j] = False
                ious.append(float(m[i, j]))
                score_diffs.append(abs(float(mine["score"].iloc[i]) - float(theirs["score"].iloc[j])))
    most = max(len(a), len(b))
    share = len(ious) / most if most else 1.0
    return {"identical": identical, "boxes_registered": len(a), "boxes_rebuilt": len(b), "matched_share": share,
            "min_iou": min(ious, default=1.0), "max_score_diff": max(score_diffs, default=0.0),
            "detail": f"{len(ious)} of {most} boxes matched at IoU >= {iou} ({share:.1%}), smallest IoU "
                      f"{min(ious, default=1.0):.3f}, largest score difference {max(score_diffs, default=0.0):.3g}"}
