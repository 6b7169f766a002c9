"""Synthetic road-camera frames with YOLO labels: the traffic use case's seeded DVC stage.

A scene is a perspective road (lanes, kerbs, pavements, buildings, sky) under day, dusk or night
light, with rain, fog, sensor noise and blur. Vehicles and pedestrians stand on the ground plane,
sized by their distance to the horizon, seen from behind or from the side, drawn far to near so
near objects partly hide far ones; an object less than ``min_visible`` visible is not drawn.
Every image is seeded by (seed, split, index), so any image can be regenerated alone.

``python -m deepflow.usecases.traffic.generate --out data/prepared/traffic`` writes
``train/val/test.parquet`` (one row per image, see ``labels.py``; class ids index ``CLASSES``) from ``params.yaml``.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from deepflow.kinds.detection.labels import format_yolo

CLASSES = ("car", "truck", "bus", "motorcycle", "bicycle", "pedestrian")  # id = position, as the entry lists them
SPLITS = ("train", "val", "test")
SS = 2  # supersampling: draw at 2x, then downscale (anti-aliasing)

# Per class: share of objects, height at the bottom row (fraction of frame height), and the
# width/height ratio seen from behind ("rear") and from the side ("side"), as (low, high).
SHARE = {"car": 0.32, "truck": 0.1, "bus": 0.08, "motorcycle": 0.11, "bicycle": 0.13, "pedestrian": 0.26}
HEIGHT = {"car": 0.26, "truck": 0.46, "bus": 0.44, "motorcycle": 0.3, "bicycle": 0.27, "pedestrian": 0.36}
ASPECT = {
    "car": {"rear": (1.15, 1.45), "side": (1.9, 2.4)},
    "truck": {"rear": (0.85, 1.05), "side": (1.8, 2.5)},
    "bus": {"rear": (0.8, 0.95), "side": (2.6, 3.4)},
    "motorcycle": {"rear": (0.42, 0.55), "side": (1.2, 1.45)},
    "bicycle": {"side": (1.45, 1.8)},
    "pedestrian": {"rear": (0.3, 0.42)},
}
LIGHT = {"day": (1.0, (1.0, 1.0, 1.0)), "dusk": (0.62, (1.08, 0.86, 0.78)), "night": (0.28, (0.8, 0.85, 1.1))}


@dataclass
class GenerateParams:
    n_train: int = 1200
    n_val: int = 300
    n_test: int = 300
    width: int = 160
    height: int = 160
    seed: int = 0
    crowded_share: float = 0.25  # frames with 12-30 objects instead of 1-9 (as many as fit)
    min_visible: float = 0.45  # an object hidden more than this by nearer ones is not drawn
    jpeg_quality: int = 90


# --- drawing ---------------------------------------------------------------------------------


def _colour(rng: np.random.Generator, palette: str = "vehicle") -> tuple[int, int, int]:
    if palette == "vehicle":
        options = [(200, 30, 30), (30, 60, 170), (230, 230, 230), (40, 40, 40), (150, 150, 155),
                   (20, 120, 60), (230, 180, 20), (120, 20, 90), (200, 110, 30), (90, 160, 210)]
    else:  # clothes
        options = [(30, 30, 40), (180, 40, 40), (40, 90, 160), (200, 200, 190), (90, 70, 50),
                   (60, 130, 70), (220, 160, 40), (150, 60, 140), (120, 120, 120)]
    base = np.array(options[rng.integers(len(options))], dtype=float)
    return tuple(int(v) for v in np.clip(base * rng.uniform(0.75, 1.15), 0, 255))


def _dark(c, f=0.45):
    return tuple(int(v * f) for v in c)


def _wheel(d, cx, cy, r, thin=False):
    if thin:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(25, 25, 25), width=max(1, int(r / 5)))
    else:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(20, 20, 20))
        d.ellipse([cx - r / 2.5, cy - r / 2.5, cx + r / 2.5, cy + r / 2.5], fill=(140, 140, 140))


def _person(d, x1, y1, x2, y2, rng, torso=None):
    """A standing figure filling the box; the torso colour is returned for riders."""
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    torso = torso or _colour(rng, "clothes")
    skin = [(240, 200, 170), (200, 150, 110), (120, 80, 50)][rng.integers(3)]
    r = min(w * 0.38, h * 0.09)
    d.ellipse([cx - r, y1, cx + r, y1 + 2 * r], fill=skin)
    d.rectangle([x1 + w * 0.12, y1 + 2 * r, x2 - w * 0.12, y1 + h * 0.58], fill=torso)
    legs = _colour(rng, "clothes")
    stride = rng.uniform(0, 0.25) * w
    lw = max(1, int(w * 0.22))
    d.line([cx - w * 0.12, y1 + h * 0.56, cx - w * 0.12 - stride, y2], fill=legs, width=lw)
    d.line([cx + w * 0.12, y1 + h * 0.56, cx + w * 0.12 + stride, y2], fill=legs, width=lw)
    return torso


def _car(d, box, view, rng, night):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    body = _colour(rng)
    glass = (60, 75, 95) if not night else (25, 30, 40)
    if view == "rear":
        d.rounded_rectangle([x1 + w * 0.1, y1, x2 - w * 0.1, y1 + h * 0.5], radius=w * 0.1, fill=body)
        d.polygon([(x1 + w * 0.2, y1 + h * 0.08), (x2 - w * 0.2, y1 + h * 0.08), (x2 - w * 0.14, y1 + h * 0.45),
                   (x1 + w * 0.14, y1 + h * 0.45)], fill=glass)
        d.rectangle([x1, y1 + h * 0.42, x2, y2 - h * 0.12], fill=body)
        d.rectangle([x1 + w * 0.05, y2 - h * 0.14, x1 + w * 0.22, y2], fill=(20, 20, 20))
        d.rectangle([x2 - w * 0.22, y2 - h * 0.14, x2 - w * 0.05, y2], fill=(20, 20, 20))
        d.rectangle([x1 + w * 0.02, y2 - h * 0.24, x2 - w * 0.02, y2 - h * 0.14], fill=_dark(body))
        red = (255, 40, 40) if night else (190, 20, 20)
        d.rectangle([x1 + w * 0.04, y1 + h * 0.5, x1 + w * 0.2, y1 + h * 0.62], fill=red)
        d.rectangle([x2 - w * 0.2, y1 + h * 0.5, x2 - w * 0.04, y1 + h * 0.62], fill=red)
    else:
        d.rounded_rectangle([x1 + w * 0.22, y1, x2 - w * 0.25, y1 + h * 0.5], radius=h * 0.15, fill=body)
        d.rectangle([x1 + w * 0.27, y1 + h * 0.08, x2 - w * 0.3, y1 + h * 0.45], fill=glass)
        d.rounded_rectangle([x1, y1 + h * 0.4, x2, y2 - h * 0.15], radius=h * 0.12, fill=body)
        r = h * 0.2
        _wheel(d, x1 + w * 0.2, y2 - r, r)
        _wheel(d, x2 - w * 0.2, y2 - r, r)
        if night:
            d.ellipse([x2 - w * 0.05, y1 + h * 0.45, x2 + w * 0.02, y1 + h * 0.6], fill=(255, 250, 200))


def _truck(d, box, view, rng, night):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cargo = _colour(rng) if rng.random() < 0.5 else (225, 225, 220)
    if view == "rear":
        d.rectangle([x1, y1, x2, y2 - h * 0.12], fill=cargo)
        mid = (x1 + x2) / 2  # the cargo doors' seam
        d.line([mid, y1 + h * 0.05, mid, y2 - h * 0.15], fill=_dark(cargo), width=max(1, int(w * 0.03)))
        d.rectangle([x1 + w * 0.05, y2 - h * 0.12, x1 + w * 0.3, y2], fill=(20, 20, 20))
        d.rectangle([x2 - w * 0.3, y2 - h * 0.12, x2 - w * 0.05, y2], fill=(20, 20, 20))
        red = (255, 40, 40) if night else (180, 20, 20)
        d.rectangle([x1 + w * 0.02, y2 - h * 0.22, x1 + w * 0.14, y2 - h * 0.16], fill=red)
        d.rectangle([x2 - w * 0.14, y2 - h * 0.22, x2 - w * 0.02, y2 - h * 0.16], fill=red)
    else:
        cab = _colour(rng)
        front = rng.random() < 0.5  # cab on the right or the left
        cx1, cx2 = (x2 - w * 0.24, x2) if front else (x1, x1 + w * 0.24)
        kx1, kx2 = (x1, x2 - w * 0.26) if front else (x1 + w * 0.26, x2)
        d.rectangle([kx1, y1, kx2, y2 - h * 0.18], fill=cargo)
        d.rounded_rectangle([cx1, y1 + h * 0.3, cx2, y2 - h * 0.15], radius=h * 0.06, fill=cab)
        d.rectangle([cx1 + w * 0.04, y1 + h * 0.36, cx2 - w * 0.04, y1 + h * 0.55], fill=(60, 75, 95))
        r = h * 0.13
        for fx in ((0.1, 0.24, 0.85) if front else (0.15, 0.76, 0.9)):
            _wheel(d, x1 + w * fx, y2 - r, r)


def _bus(d, box, view, rng, night):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    body = [(240, 190, 20), (200, 30, 30), (30, 80, 170), (235, 235, 235), (40, 140, 80)][rng.integers(5)]
    window = (70, 85, 105) if not night else (250, 230, 150)  # lit inside at night
    d.rounded_rectangle([x1, y1, x2, y2 - h * 0.08], radius=min(w, h) * 0.08, fill=body)
    if view == "rear":
        d.rectangle([x1 + w * 0.1, y1 + h * 0.08, x2 - w * 0.1, y1 + h * 0.4], fill=window)
        d.rectangle([x1 + w * 0.08, y2 - h * 0.1, x1 + w * 0.25, y2], fill=(20, 20, 20))
        d.rectangle([x2 - w * 0.25, y2 - h * 0.1, x2 - w * 0.08, y2], fill=(20, 20, 20))
    else:
        n = int(rng.integers(5, 9))
        step = (w * 0.9) / n
        for i in range(n):
            wx = x1 + w * 0.05 + i * step
            d.rectangle([wx + step * 0.1, y1 + h * 0.12, wx + step * 0.9, y1 + h * 0.45], fill=window)
        d.rectangle([x1 + w * 0.02, y1 + h * 0.55, x2 - w * 0.02, y1 + h * 0.6], fill=_dark(body, 0.7))
        r = h * 0.12
        _wheel(d, x1 + w * 0.15, y2 - r, r)
        _wheel(d, x2 - w * 0.18, y2 - r, r)


def _two_wheeler(d, box, view, rng, night, motor: bool):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    body = _colour(rng) if motor else (40, 40, 40)
    if view == "rear":  # a narrow tyre, the body and the rider's back
        d.rectangle([x1 + w * 0.35, y2 - h * 0.35, x2 - w * 0.35, y2], fill=(20, 20, 20))
        d.rectangle([x1 + w * 0.1, y1 + h * 0.5, x2 - w * 0.1, y2 - h * 0.25], fill=body)
        red = (255, 40, 40) if night else (170, 20, 20)
        d.rectangle([x1 + w * 0.38, y1 + h * 0.55, x2 - w * 0.38, y1 + h * 0.62], fill=red)
        _person(d, x1 + w * 0.05, y1, x2 - w * 0.05, y1 + h * 0.62, rng)
        return
    r = h * (0.24 if motor else 0.27)
    fx, bx = x1 + r, x2 - r
    _wheel(d, fx, y2 - r, r, thin=not motor)
    _wheel(d, bx, y2 - r, r, thin=not motor)
    lw = max(1, int(h * (0.12 if motor else 0.05)))
    if motor:
        d.rounded_rectangle([fx, y2 - r * 2.2, bx, y2 - r * 1.1], radius=r * 0.3, fill=body)
    else:
        seat = ((fx + bx) / 2, y2 - r * 2.1)
        d.line([fx, y2 - r, seat, bx, y2 - r, fx, y2 - r], fill=body, width=lw)
        d.line([bx, y2 - r, bx - r * 0.3, y2 - r * 2.3], fill=body, width=lw)
    if motor or rng.random() < 0.6:  # a rider: torso and head above the seat
        rider = _colour(rng, "clothes")
        sx = (fx + bx) / 2
        d.line([sx, y2 - r * 2.0, sx + w * 0.08, y1 + h * 0.22], fill=rider, width=max(2, int(w * 0.12)))
        hr = h * 0.1
        d.ellipse([sx + w * 0.08 - hr, y1, sx + w * 0.08 + hr, y1 + 2 * hr],
                  fill=(30, 30, 30) if motor else (200, 150, 110))


def _draw_object(d, cls, box, view, rng, night):
    if cls == "car":
        _car(d, box, view, rng, night)
    elif cls == "truck":
        _truck(d, box, view, rng, night)
    elif cls == "bus":
        _bus(d, box, view, rng, night)
    elif cls in ("motorcycle", "bicycle"):
        _two_wheeler(d, box, view, rng, night, motor=cls == "motorcycle")
    else:
        _person(d, *box, rng)


# --- the scene -------------------------------------------------------------------------------


@dataclass
class Road:
    horizon: float  # y of the horizon (supersampled pixels)
    vp: float  # x of the vanishing point
    top: float  # road half-width at the horizon
    bottom: float  # road half-width at the bottom row

    def half_width(self, y: float, h: float) -> float:
        return self.top + (self.bottom - self.top) * (y - self.horizon) / (h - self.horizon)


def _background(rng, w, h, road: Road, night: bool) -> Image.Image:
    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img)
    top, low = ((20, 25, 50), (60, 60, 90)) if night else ((90, 140, 210), (190, 210, 230))
    for y in range(int(road.horizon) + 1):  # sky gradient
        t = y / max(road.horizon, 1)
        d.line([0, y, w, y], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, low, strict=True)))
    x = -rng.uniform(0, 20)
    while x < w:  # building silhouettes on the horizon
        bw, bh = rng.uniform(0.06, 0.2) * w, rng.uniform(0.04, 0.3) * road.horizon + 4
        grey = int(rng.uniform(70, 170))
        d.rectangle([x, road.horizon - bh, x + bw, road.horizon], fill=(grey, grey - 5, grey - 10))
        if night:
            for _ in range(int(rng.integers(0, 6))):
                wx, wy = rng.uniform(x, x + bw), rng.uniform(road.horizon - bh, road.horizon - 2)
                d.rectangle([wx, wy, wx + 2, wy + 2], fill=(250, 220, 120))
        x += bw + rng.uniform(0, 0.05) * w
    ground = [(70, 120, 60), (120, 115, 100), (95, 100, 80)][rng.integers(3)]
    d.rectangle([0, road.horizon, w, h], fill=ground)
    walk = int(rng.uniform(140, 185))
    for side in (-1, 1):  # pavements, then kerbs
        outer = [(road.vp + side * road.top * 1.8, road.horizon), (road.vp + side * road.bottom * 1.8, h)]
        inner = [(road.vp + side * road.bottom, h), (road.vp + side * road.top, road.horizon)]
        d.polygon(outer + inner, fill=(walk, walk, walk - 8))
    asphalt = int(rng.uniform(60, 100))
    d.polygon([(road.vp - road.top, road.horizon), (road.vp + road.top, road.horizon),
               (road.vp + road.bottom, h), (road.vp - road.bottom, h)], fill=(asphalt,) * 3)
    for side in (-1, 1):
        d.line([road.vp + side * road.top, road.horizon, road.vp + side * road.bottom, h],
               fill=(220, 220, 210), width=max(2, SS * 2))
    lanes = int(rng.integers(2, 5))
    paint = (235, 235, 235) if rng.random() < 0.7 else (230, 190, 40)
    for i in range(1, lanes):  # dashed lane lines, dashes lengthen towards the camera
        f = -1 + 2 * i / lanes
        y = road.horizon + 2
        while y < h:
            seg = 3 + 0.12 * (y - road.horizon)
            ya, yb = y, min(y + seg, h)
            xa = road.vp + f * road.half_width(ya, h)
            xb = road.vp + f * road.half_width(yb, h)
            d.line([xa, ya, xb, yb], fill=paint, width=max(1, int(1 + 0.02 * (yb - road.horizon))))
            y += 2.2 * seg
    return img


def _place(rng, cls, road: Road, w, h):
    """(box, view) of one object of ``cls`` on the ground plane, or None if too small."""
    view = str(rng.choice(list(ASPECT[cls])))
    bottom = road.horizon + (h - road.horizon) * rng.uniform(0.06, 1.08) ** 0.8
    depth = (bottom - road.horizon) / (h - road.horizon)  # 0 at the horizon, 1 at the bottom row
    oh = HEIGHT[cls] * h * depth * rng.uniform(0.85, 1.15)
    ow = oh * rng.uniform(*ASPECT[cls][view])
    half = road.half_width(min(bottom, h), h)
    if cls in ("pedestrian", "bicycle") and rng.random() < 0.7:  # on a pavement
        cx = road.vp + rng.choice([-1, 1]) * half * rng.uniform(1.05, 1.7)
    else:
        cx = road.vp + half * rng.uniform(-0.85, 0.85)
    box = np.array([cx - ow / 2, bottom - oh, cx + ow / 2, bottom])
    return (box, view) if oh >= 7 * SS and ow >= 3 * SS else None


def _weather(rng, img: Image.Image, road: Road) -> tuple[Image.Image, str]:
    kind = str(rng.choice(["clear", "clear", "rain", "fog"]))
    if kind == "rain":
        d = ImageDraw.Draw(img, "RGBA")
        w, h = img.size
        slant = rng.uniform(-0.3, 0.3)
        for _ in range(int(rng.integers(60, 200))):
            x, y, n = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(6, 18)
            d.line([x, y, x + slant * n, y + n], fill=(200, 200, 220, 90), width=1)
    elif kind == "fog":
        a = np.asarray(img, dtype=np.float32)
        rows = np.arange(a.shape[0], dtype=np.float32)[:, None, None]
        dist = np.clip(1 - np.abs(rows - road.horizon) / (a.shape[0] * 0.9), 0, 1)  # thickest far away
        alpha = rng.uniform(0.35, 0.7) * dist
        img = Image.fromarray((a * (1 - alpha) + 200 * alpha).astype(np.uint8))
    return img, kind


def render(rng: np.random.Generator, p: GenerateParams) -> tuple[Image.Image, np.ndarray, np.ndarray, dict]:
    """One frame: (image, class ids (N,), boxes (N, 4) xyxy pixels, scene tags)."""
    w, h = p.width * SS, p.height * SS
    lighting = str(rng.choice(["day", "day", "dusk", "night"]))
    night = lighting == "night"
    horizon = h * rng.uniform(0.28, 0.45)
    road = Road(horizon, w * rng.uniform(0.3, 0.7), w * rng.uniform(0.03, 0.08), w * rng.uniform(0.6, 1.0))
    img = _background(rng, w, h, road, night)
    n = int(rng.integers(12, 31)) if rng.random() < p.crowded_share else int(rng.integers(1, 10))
    names = list(SHARE)
    share = np.array(list(SHARE.values()))
    candidates = []  # three tries per wanted object: some are too small, some too hidden
    for cls in rng.choice(names, size=3 * n, p=share / share.sum()):
        if placed := _place(rng, str(cls), road, w, h):
            candidates.append((*placed, str(cls)))
    candidates.sort(key=lambda o: -o[0][3])  # near (large bottom y) first
    covered = np.zeros((h, w), dtype=bool)
    kept = []
    for box, view, cls in candidates:  # keep what stays visible enough behind nearer objects
        x1, y1, x2, y2 = np.clip(np.round(box), 0, [w, h, w, h]).astype(int)
        full = (box[2] - box[0]) * (box[3] - box[1])
        region = covered[y1:y2, x1:x2]
        visible = (region.size - region.sum()) / full  # also loses what falls outside the frame
        if region.size and visible >= p.min_visible:
            covered[y1:y2, x1:x2] = True
            kept.append((box, view, cls))
            if len(kept) == n:
                break
    d = ImageDraw.Draw(img)
    for box, view, cls in reversed(kept):  # far to near
        _draw_object(d, cls, box, view, rng, night)
    gain, tint = LIGHT[lighting]
    a = np.asarray(img, dtype=np.float32) * gain * np.array(tint) * rng.uniform(0.85, 1.1)
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if night:  # lamps stay bright after the scene is darkened
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 6))):
            lx, ly = rng.uniform(0, w), rng.uniform(0.5, 1.0) * horizon
            d.ellipse([lx - 3, ly - 3, lx + 3, ly + 3], fill=(255, 240, 180))
    img, weather = _weather(rng, img, road)
    img = img.resize((p.width, p.height), Image.Resampling.BOX)
    if (blur := rng.uniform(0, 1.0)) > 0.5:
        img = img.filter(ImageFilter.GaussianBlur(blur - 0.4))
    noise = rng.normal(0, rng.uniform(1, 8), (p.height, p.width, 3))
    img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    boxes = np.array([b for b, _, _ in kept]).reshape(-1, 4) / SS
    boxes = np.clip(boxes, 0, [p.width, p.height, p.width, p.height])
    classes = np.array([CLASSES.index(c) for _, _, c in kept], dtype=np.int64)
    return img, classes, boxes, {"lighting": lighting, "weather": weather}


def frame_row(p: GenerateParams, split: str, index: int) -> dict:
    rng = np.random.default_rng([p.seed, SPLITS.index(split), index])
    img, classes, boxes, tags = render(rng, p)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=p.jpeg_quality)
    xyxy = boxes / np.array([p.width, p.height, p.width, p.height], dtype=np.float64)
    cxcywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return {"image_id": f"{split}-{index:06d}", "image": buf.getvalue(), "width": p.width,
            "height": p.height, "labels": format_yolo(classes, cxcywh), **tags}


def generate(p: GenerateParams) -> dict[str, pd.DataFrame]:
    sizes = {"train": p.n_train, "val": p.n_val, "test": p.n_test}
    return {s: pd.DataFrame([frame_row(p, s, i) for i in range(n)]) for s, n in sizes.items()}


def write(splits: dict[str, pd.DataFrame], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in splits.items():
        frame.to_parquet(out / f"{name}.parquet", index=False)


def main() -> None:
    from deepflow.settings import stage_params

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/prepared/traffic"))
    args = parser.parse_args()
    params = GenerateParams(**stage_params("traffic.generate"))
    splits = generate(params)
    write(splits, args.out)
    boxes = sum(s.labels.str.count("\n").sum() for s in splits.values())
    print(f"{sum(map(len, splits.values())):,} frames, {boxes:,} boxes -> {args.out}")


if __name__ == "__main__":
    main()
