"""The detection scorer: encoded image in, boxes out; the same preprocessing in training and serving.

``predict(frame)`` takes a frame with an ``image`` column of JPEG/PNG bytes and returns one row per
detection: ``image`` (row position in the input), ``x1 y1 x2 y2`` (input-image pixels), ``class``
(a name from the scorer's ``classes``, the entry's class names it was trained on) and ``score``.
Images are letterboxed (aspect kept, grey padding right/bottom) to ``size`` pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from deepflow.kinds.detection.labels import decode, pixel_boxes

GREY = 114


def letterbox(data: bytes, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Encoded image -> ((size, size, 3) uint8, scale applied to its pixels, its (width, height))."""
    from PIL import Image

    image = decode(data)
    original = image.size
    scale = size / max(image.size)
    if scale != 1:
        w, h = (max(1, round(v * scale)) for v in image.size)
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    canvas = np.full((size, size, 3), GREY, dtype=np.uint8)
    canvas[: image.size[1], : image.size[0]] = np.asarray(image)
    return canvas, scale, original


def to_tensors(frame: pd.DataFrame, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A prepared split -> (images (N, 3, S, S) uint8, targets (N, M, 5) [class, x1, y1, x2, y2])."""
    images, targets = [], []
    for data, text, w, h in zip(frame["image"], frame["labels"], frame["width"], frame["height"], strict=True):
        pixels, scale, _ = letterbox(data, size)
        images.append(torch.from_numpy(pixels).permute(2, 0, 1))  # device: cpu on purpose — the loader's
        cls, boxes = pixel_boxes(text, w, h)
        targets.append(np.concatenate([cls[:, None], boxes * scale], 1))
    m = max([len(t) for t in targets] + [1])
    padded = torch.full((len(frame), m, 5), -1.0)  # device: cpu on purpose — the loader's tensors
    for i, t in enumerate(targets):
        padded[i, : len(t)] = torch.from_numpy(t).float()  # device: cpu on purpose — the loader's
    empty = torch.zeros(0, 3, size, size, dtype=torch.uint8)  # device: cpu on purpose — the loader's tensors
    return torch.stack(images) if images else empty, padded


class DetectorScorer:
    """An eval-mode detector plus its letterbox preprocessing and NMS postprocessing; ``classes``
    names its class ids (serving, batch scoring and drift read them from here)."""

    def __init__(self, net, size: int, classes: Sequence[str], *, min_score: float = 0.01, iou: float = 0.6,
                 max_det: int = 100, batch_size: int = 32) -> None:
        self.net = net.eval()
        self.size = size
        self.classes = [str(c) for c in classes]
        self.min_score, self.iou, self.max_det, self.batch_size = min_score, iou, max_det, batch_size

    def predict(self, frame: pd.DataFrame, explain: bool = False) -> pd.DataFrame:
        """One row per detection (module docstring); ``explain`` adds ``objectness`` and
        ``class_scores`` ({class: the box's score under that class}) to each."""
        from deepflow.kinds.detection.models import detect

        parts, extra = [], []
        images = list(frame["image"])
        device = next(self.net.parameters()).device  # the CPU, unless a caller moved the network
        for start in range(0, len(images), self.batch_size):
            chunk = [letterbox(bytes(d), self.size) for d in images[start : start + self.batch_size]]
            pixels = torch.from_numpy(np.stack([c[0] for c in chunk]))  # device: cpu on purpose — decoded here
            x = pixels.to(device).permute(0, 3, 1, 2).float() / 255
            with torch.inference_mode():  # boxes back on the CPU in one copy per chunk
                found = detect(self.net, x, min_score=self.min_score, iou=self.iou, max_det=self.max_det,
                               explain=explain, to_cpu=True)
            for i, (result, (_, scale, (w, h))) in enumerate(zip(found, chunk, strict=True)):
                boxes, scores, cls = result[:3]
                # back to the input's pixels, clipped to its frame (the letterbox pads right/bottom)
                xyxy = np.clip(boxes.numpy().astype(np.float64) / scale, 0, [w, h, w, h])
                parts.append((start + i, xyxy, scores.numpy(), cls.numpy()))
                if explain:
                    extra.append(result[3].numpy().astype(np.float64))
        out = detections_frame(parts, self.classes)
        if explain:
            why = np.concatenate(extra) if extra else np.zeros((0, 1 + len(self.classes)))
            out["objectness"] = why[:, 0]
            out["class_scores"] = [dict(zip(self.classes, map(float, row[1:]), strict=True)) for row in why]
        return out


def detections_frame(parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
                     classes: Sequence[str]) -> pd.DataFrame:
    """[(image position, boxes (D, 4), scores (D,), class ids (D,))] -> one row per detection,
    its class named from ``classes``."""
    n = sum(len(p[2]) for p in parts)
    image = np.concatenate([np.full(len(p[2]), p[0], dtype=np.int64) for p in parts]) if n else np.zeros(0, np.int64)
    boxes = np.concatenate([p[1] for p in parts]).astype(np.float64) if n else np.zeros((0, 4))
    return pd.DataFrame({
        "image": image,
        "x1": boxes[:, 0], "y1": boxes[:, 1], "x2": boxes[:, 2], "y2": boxes[:, 3],
        "class": pd.Series([classes[c] for p in parts for c in p[3]], dtype=object),
        "score": np.concatenate([p[2] for p in parts]).astype(np.float64) if n else np.zeros(0),
    })

