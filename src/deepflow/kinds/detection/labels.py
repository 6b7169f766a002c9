"""The one prepared-data format every detection source is converted to.

A prepared split is a parquet file with one row per image: ``image_id``, ``image`` (encoded
JPEG/PNG bytes), ``width``, ``height`` and ``labels`` (the image's YOLO label file as text:
``class cx cy w h`` per line, normalised to [0, 1], class ids indexing the entry's
``config.classes``).
"""

from __future__ import annotations

import io

import numpy as np


def parse_yolo(text: str) -> tuple[np.ndarray, np.ndarray]:
    """YOLO label text -> (class ids (N,) int64, boxes (N, 4) cx cy w h normalised)."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 4))
    values = np.array(rows, dtype=np.float64)
    return values[:, 0].astype(np.int64), values[:, 1:5]


def format_yolo(classes: np.ndarray, cxcywh: np.ndarray) -> str:
    rows = zip(classes, cxcywh, strict=True)
    return "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, (x, y, w, h) in rows)


def pixel_boxes(text: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(class ids (N,), boxes (N, 4) x1 y1 x2 y2 in image pixels) of one image's labels."""
    cls, b = parse_yolo(text)
    scale = np.array([width, height, width, height], dtype=np.float64)
    xyxy = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1) * scale
    return cls, xyxy


def decode(data: bytes):
    """Encoded bytes -> RGB PIL image, fully loaded (a truncated file raises OSError)."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")

