"""Detection mAP: a hand-made case, the numpy twin against faster-coco-eval, fast bootstraps."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from deepflow.kinds.detection import metrics
from deepflow.kinds.detection.labels import format_yolo
from deepflow.kinds.detection.scorer import detections_frame
from deepflow.usecases.traffic.generate import CLASSES

Box = tuple[float, float, float, float]


def frame_of(boxes_per_image: list[list[tuple[int, Box]]], size: int = 100) -> pd.DataFrame:
    """Ground truth as a prepared split (labels only; metrics never decode the image)."""
    rows = []
    for i, boxes in enumerate(boxes_per_image):
        cls = np.array([c for c, _ in boxes], dtype=np.int64)
        xyxy = np.array([b for _, b in boxes], dtype=np.float64).reshape(-1, 4) / size
        cxcywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
        rows.append({"image_id": str(i), "image": b"", "width": size, "height": size,
                     "labels": format_yolo(cls, cxcywh)})
    return pd.DataFrame(rows)


def dets_of(rows: list[tuple[int, Box, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"image": i, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3], "class": c, "score": s}
                         for i, b, c, s in rows], columns=list(metrics.DET_COLUMNS))


CAR, PED = CLASSES.index("car"), CLASSES.index("pedestrian")
HAND_GT = frame_of([[(CAR, (0, 0, 10, 10)), (CAR, (20, 20, 30, 30))], [(CAR, (0, 0, 10, 10)), (PED, (50, 50, 60, 80))]])
HAND_DETS = dets_of([
    (0, (0, 0, 10, 10), "car", 0.9),  # TP
    (0, (1, 1, 10, 10), "car", 0.8),  # duplicate of a matched box: FP
    (0, (20, 20, 30, 32), "car", 0.7),  # IoU 100/120: TP up to IoU 0.8, FP above
    (1, (60, 60, 70, 70), "car", 0.6),  # FP
])
# car: precision 1, 1/2, 2/3, 1/2 at recall 1/3, 1/3, 2/3, 2/3 -> 101-point AP = (34 + 33 * 2/3) / 101
CAR_AP50 = 56 / 101
CAR_AP = (7 * 56 / 101 + 3 * 34 / 101) / 10  # at IoU >= 0.85 only the first detection is a TP


def test_hand_made_case_numpy_and_coco_agree_with_pencil() -> None:
    found = metrics.coco_metrics(HAND_GT, HAND_DETS, CLASSES)
    assert found["ap50_car"] == pytest.approx(CAR_AP50) and found["ap_car"] == pytest.approx(CAR_AP)
    assert found["ap50_pedestrian"] == 0.0  # ground truth, no detection: counts as 0
    assert "ap50_bus" not in found  # no ground truth: left out of the mean
    assert found["map50"] == pytest.approx(CAR_AP50 / 2) and found["map"] == pytest.approx(CAR_AP / 2)
    m = metrics.Matched(HAND_GT, HAND_DETS, CLASSES)
    ap = m.ap()
    assert ap[CAR, 0] == pytest.approx(CAR_AP50) and np.nanmean(ap[CAR]) == pytest.approx(CAR_AP)
    assert m.map50() == pytest.approx(CAR_AP50 / 2)
    assert np.isnan(ap[CLASSES.index("bus")]).all()


def random_case(n_images: int, seed: int, size: float = 160) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ground truth and a plausible detector: jittered true boxes, wrong classes, clutter."""
    rng = np.random.default_rng(seed)
    truth, dets = [], []
    for i in range(n_images):
        boxes = []
        for _ in range(rng.integers(0, 12)):
            x, y = rng.uniform(0, size - 30, 2)
            w, h = rng.uniform(4, 30, 2)
            c = int(rng.integers(len(CLASSES)))
            boxes.append((c, (x, y, x + w, y + h)))
            for _ in range(rng.integers(0, 3)):  # jittered hits, sometimes the wrong class
                j = rng.normal(0, 0.12, 4) * [w, h, w, h]
                cls = c if rng.random() < 0.8 else int(rng.integers(len(CLASSES)))
                dets.append((i, tuple(np.clip(np.array([x, y, x + w, y + h]) + j, 0, size)), CLASSES[cls],
                             float(rng.uniform(0.2, 1))))
        for _ in range(rng.integers(0, 20)):  # clutter
            x, y = rng.uniform(0, size - 20, 2)
            dets.append((i, (x, y, x + rng.uniform(3, 20), y + rng.uniform(3, 20)),
                         CLASSES[int(rng.integers(len(CLASSES)))], float(rng.uniform(0, 0.6))))
        truth.append(boxes)
    return frame_of(truth, size=int(size)), dets_of(dets)


def test_numpy_twin_equals_faster_coco_eval() -> None:
    frame, dets = random_case(60, seed=1)
    coco = metrics.coco_metrics(frame, dets, CLASSES)
    ap = metrics.Matched(frame, dets, CLASSES).ap()
    assert coco["map50"] == pytest.approx(np.nanmean(ap[:, 0]), abs=1e-9)
    assert coco["map"] == pytest.approx(np.nanmean(ap), abs=1e-9)
    for k, name in enumerate(CLASSES):
        assert coco[f"ap50_{name}"] == pytest.approx(ap[k, 0], abs=1e-9)
        assert coco[f"ap_{name}"] == pytest.approx(ap[k].mean(), abs=1e-9)


def test_bootstrap_over_images_is_fast_and_paired() -> None:
    frame, dets = random_case(300, seed=2)
    start = time.perf_counter()
    m = metrics.Matched(frame, dets, CLASSES)
    interval = metrics.bootstrap_map50(m, resamples=1000, confidence=0.95, seed=0)
    assert time.perf_counter() - start < 15  # seconds, not minutes (~2 s on 2 free cores)
    assert interval.low < interval.estimate < interval.high and interval.resamples == 1000
    assert interval.estimate == pytest.approx(metrics.coco_metrics(frame, dets, CLASSES)["map50"], abs=1e-9)
    same = metrics.paired_bootstrap_map50(m, m, resamples=200, confidence=0.95, seed=0)
    assert (same.low, same.estimate, same.high) == (0.0, 0.0, 0.0)
    worse = metrics.Matched(frame, dets.assign(score=np.random.default_rng(0).random(len(dets))), CLASSES)
    gain = metrics.paired_bootstrap_map50(m, worse, resamples=200, confidence=0.95, seed=0)
    assert gain.low > 0  # real scores beat shuffled ones on every resample
    first = metrics.bootstrap_map50(m, resamples=100, confidence=0.95, seed=0)
    again = metrics.bootstrap_map50(m, resamples=100, confidence=0.95, seed=0)
    assert (again.low, again.high) == (first.low, first.high)  # seeded


def test_best_f1_threshold_and_empty_detections() -> None:
    assert metrics.best_f1_threshold(metrics.Matched(HAND_GT, HAND_DETS, CLASSES)) == 0.7  # 2 TP of 4 GT, 1 FP
    empty = detections_frame([], CLASSES)
    assert metrics.coco_metrics(HAND_GT, empty, CLASSES) == {"map50": 0.0, "map": 0.0, "ap50_car": 0.0, "ap_car": 0.0,
                                                    "ap50_pedestrian": 0.0, "ap_pedestrian": 0.0}
    assert metrics.Matched(HAND_GT, empty, CLASSES).map50() == 0.0
