"""The ``detection`` kind's candidates: two plain-PyTorch detectors with one anchor-free output format.

Each network maps images ``(B, 3, S, S)`` in [0, 1] to one map per pyramid level,
``(B, 5 + K, S/s, S/s)`` for stride ``s``: 4 box distances (left, top, right, bottom from the
cell centre, ``softplus * s`` pixels), 1 objectness logit and K class logits.

- ``ShallowNet``: four convolutions and a single grid at stride 8.
- ``DeepNet``: a YOLO-style detector: CSP backbone (C2f blocks + SPPF), a PAN feature pyramid
  and decoupled heads at strides 8, 16 and 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepflow.kinds.detection.boxes import batched_nms


class ConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.SiLU())


def _head(c_in: int, n_out: int, hidden: int, prior_obj: float = -4.6, prior_cls: float = -2.0) -> nn.Sequential:
    head = nn.Sequential(ConvBN(c_in, hidden), nn.Conv2d(hidden, n_out, 1))
    with torch.no_grad():  # start with few, uncertain detections (focal-loss style priors)
        head[-1].bias.zero_()
        head[-1].bias[4] = prior_obj
        head[-1].bias[5:] = prior_cls
    return head


# --- shallow: a few convolutions, one grid ------------------------------------------------------


class ShallowNet(nn.Module):
    strides = (8,)

    def __init__(self, n_classes: int, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBN(3, width // 2, s=2), ConvBN(width // 2, width, s=2),
                                  ConvBN(width, 2 * width, s=2), ConvBN(2 * width, 2 * width))
        self.head = _head(2 * width, 5 + n_classes, 2 * width)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # (B, 3, S, S) -> [(B, 5+K, S/8, S/8)]
        return [self.head(self.body(x))]


# --- deep: CSP backbone, PAN neck, three heads ---------------------------------------------------


class Bottleneck(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.net = nn.Sequential(ConvBN(c, c), ConvBN(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class C2f(nn.Module):
    """Cross-stage partial block (YOLOv8's C2f): split, chain residual blocks, concat all."""

    def __init__(self, c_in: int, c_out: int, n: int = 1) -> None:
        super().__init__()
        self.c = c_out // 2
        self.stem = ConvBN(c_in, 2 * self.c, k=1)
        self.blocks = nn.ModuleList(Bottleneck(self.c) for _ in range(n))
        self.fuse = ConvBN((2 + n) * self.c, c_out, k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.stem(x).chunk(2, 1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.fuse(torch.cat(parts, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): context from 5, 9 and 13 px windows at one cost."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.reduce, self.fuse = ConvBN(c, c // 2, k=1), ConvBN(2 * c, c, k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        p1 = F.max_pool2d(x, 5, 1, 2)
        p2 = F.max_pool2d(p1, 5, 1, 2)
        return self.fuse(torch.cat([x, p1, p2, F.max_pool2d(p2, 5, 1, 2)], 1))


class DeepNet(nn.Module):
    strides = (8, 16, 32)

    def __init__(self, n_classes: int, width: int = 16, depth: int = 1) -> None:
        super().__init__()
        w = width  # channels: w, 2w, 4w, 8w, 16w at strides 2..32
        self.stem = nn.Sequential(ConvBN(3, w, s=2), ConvBN(w, 2 * w, s=2), C2f(2 * w, 2 * w, depth))
        self.p3 = nn.Sequential(ConvBN(2 * w, 4 * w, s=2), C2f(4 * w, 4 * w, 2 * depth))
        self.p4 = nn.Sequential(ConvBN(4 * w, 8 * w, s=2), C2f(8 * w, 8 * w, 2 * depth))
        self.p5 = nn.Sequential(ConvBN(8 * w, 16 * w, s=2), C2f(16 * w, 16 * w, depth), SPPF(16 * w))
        # top-down (FPN) then bottom-up (PAN) paths
        self.td4 = C2f(24 * w, 8 * w, depth)
        self.td3 = C2f(12 * w, 4 * w, depth)
        self.down3 = ConvBN(4 * w, 4 * w, s=2)
        self.bu4 = C2f(12 * w, 8 * w, depth)
        self.down4 = ConvBN(8 * w, 8 * w, s=2)
        self.bu5 = C2f(24 * w, 16 * w, depth)
        self.heads = nn.ModuleList(_head(c, 5 + n_classes, 4 * w) for c in (4 * w, 8 * w, 16 * w))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.p3(self.stem(x))  # (B, 4w, S/8, S/8)
        c4 = self.p4(c3)  # (B, 8w, S/16, S/16)
        c5 = self.p5(c4)  # (B, 16w, S/32, S/32)
        t4 = self.td4(torch.cat([F.interpolate(c5, scale_factor=2.0), c4], 1))
        n3 = self.td3(torch.cat([F.interpolate(t4, scale_factor=2.0), c3], 1))
        n4 = self.bu4(torch.cat([self.down3(n3), t4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), c5], 1))
        return [head(f) for head, f in zip(self.heads, (n3, n4, n5), strict=True)]


def build_net(name: str, n_classes: int, m) -> nn.Module:
    if name == "shallow":
        return ShallowNet(n_classes, m.shallow_width)
    if name == "deep":
        return DeepNet(n_classes, m.deep_width, m.deep_depth)
    raise KeyError(f"unknown detection candidate {name!r} (known: shallow, deep)")


# --- decoding: maps -> boxes, scores ------------------------------------------------------------


def grid(maps: list[torch.Tensor], strides: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres (A, 2) in input pixels and the stride of each cell (A,), levels concatenated;
    float32 on the maps' device (pixel coordinates stay float32 under bf16 autocast)."""
    points, cell_strides = [], []
    for m, s in zip(maps, strides, strict=True):
        h, w = m.shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h, device=m.device), torch.arange(w, device=m.device), indexing="ij")
        points.append((torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * s)
        cell_strides.append(torch.full((h * w,), float(s), device=m.device))
    return torch.cat(points), torch.cat(cell_strides)


def flatten(maps: list[torch.Tensor]) -> torch.Tensor:
    """[(B, 5+K, H, W)] -> (B, A, 5+K)."""
    return torch.cat([m.flatten(2) for m in maps], 2).transpose(1, 2)


def decode_boxes(raw: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """(B, A, 4) raw distances -> (B, A, 4) xyxy pixels."""
    ltrb = F.softplus(raw) * strides[:, None]
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)


def dense(maps: list[torch.Tensor], strides: tuple[int, ...]) -> torch.Tensor:
    """Maps -> (B, A, 4 + 1 + K) float32: boxes (xyxy input pixels), objectness, and every class's
    score (objectness x class probability), on the maps' device. Float32 under bf16 autocast too:
    scores and pixel boxes are compared, sorted and handed to numpy."""
    points, cell_strides = grid(maps, strides)
    out = flatten(maps).float()  # (B, A, 5+K)
    boxes = decode_boxes(out[..., :4], points, cell_strides)
    objectness = out[..., 4:5].sigmoid()
    return torch.cat([boxes, objectness, objectness * out[..., 5:].sigmoid()], -1)


def select(found: torch.Tensor, *, min_score: float = 0.01, iou: float = 0.6, max_det: int = 100,
           pre_nms: int = 500, explain: bool = False) -> list[tuple[torch.Tensor, ...]]:
    """:func:`dense` output (B, A, 5 + K) -> per image (boxes, scores, class ids[, objectness and class
    scores]) after the score floor and per-class NMS, on ``found``'s device (the CPU is quickest:
    NMS is a short loop per image)."""
    boxes, explained = found[..., :4], found[..., 4:]
    scores, classes = found[..., 5:].max(-1)  # (B, A)
    results = []
    for i, (b, s, c) in enumerate(zip(boxes, scores, classes, strict=True)):
        keep = torch.nonzero(s > min_score).squeeze(1)
        keep = keep[s[keep].argsort(descending=True)[:pre_nms]]
        kept = keep[batched_nms(b[keep], s[keep], c[keep], iou)[:max_det]]
        out = (b[kept], s[kept], c[kept])
        results.append((*out, explained[i, kept]) if explain else out)
    return results


def detect(net: nn.Module, x: torch.Tensor, *, min_score: float = 0.01, iou: float = 0.6,
           max_det: int = 100, pre_nms: int = 500, explain: bool = False,
           to_cpu: bool = False) -> list[tuple[torch.Tensor, ...]]:
    """Images -> per image (boxes (D, 4) xyxy in input pixels, scores (D,), class ids (D,)); with
    ``explain`` a fourth (D, 1 + K): each box's objectness, then its score under every class
    (objectness x class probability; a box's ``score`` is the largest of these). ``to_cpu``: the
    network's dense output moves to the CPU in one copy and the selection runs there (validation
    on a GPU); otherwise everything stays on ``x``'s device."""
    found = dense(net(x), net.strides)
    return select(found.cpu() if to_cpu else found, min_score=min_score, iou=iou, max_det=max_det,
                  pre_nms=pre_nms, explain=explain)
