"""Detection metrics: COCO mAP through faster-coco-eval, and a numpy twin for bootstraps.

``coco_metrics`` is the reported number (a maintained COCO implementation on COCO-format dicts).
``Matched`` reproduces COCOeval's bbox protocol (greedy matching by score per image and class,
101-point interpolated AP, maxDets 100, area "all") with the matching done once; each bootstrap
resample is then a weighted cumulative sum over images, so 1000 resamples take seconds.
Detections are frames with one row per box: ``image`` (row position of the image in the split),
``x1 y1 x2 y2`` (input-image pixels), ``class`` (name) and ``score``. ``classes`` are the entry's
class names (index = class id in the prepared labels).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from deepflow import stats
from deepflow.kinds.detection.labels import pixel_boxes

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
DET_COLUMNS = ("image", "x1", "y1", "x2", "y2", "class", "score")


def ground_truth(frame: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image of the split: (class ids (G,), boxes (G, 4) xyxy pixels)."""
    return [pixel_boxes(t, w, h) for t, w, h in zip(frame["labels"], frame["width"], frame["height"], strict=True)]


# --- the reported numbers: faster-coco-eval -----------------------------------------------------


def to_coco(frame: pd.DataFrame, dets: pd.DataFrame, classes: Sequence[str]) -> tuple[dict, list[dict]]:
    """(COCO ground-truth dict, COCO results list); image ids are row positions + 1."""
    images, annotations = [], []
    for i, (cls, boxes) in enumerate(ground_truth(frame)):
        images.append({"id": i + 1, "width": int(frame["width"].iloc[i]), "height": int(frame["height"].iloc[i])})
        for c, (x1, y1, x2, y2) in zip(cls, boxes, strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": k + 1, "name": n} for k, n in enumerate(classes)]}
    index = {n: k + 1 for k, n in enumerate(classes)}
    columns = (dets[c].tolist() for c in DET_COLUMNS)
    results = [{"image_id": int(i) + 1, "category_id": index[c], "score": float(s),
                "bbox": [x1, y1, x2 - x1, y2 - y1]} for i, x1, y1, x2, y2, c, s in zip(*columns, strict=True)]
    return gt, results


def coco_metrics(frame: pd.DataFrame, dets: pd.DataFrame, classes: Sequence[str]) -> dict[str, float]:
    """map50, map (0.5:0.95) and per-class ap50_<class>, ap_<class> (classes with ground truth)."""
    from faster_coco_eval import COCO, COCOeval_faster

    logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)
    gt_dict, results = to_coco(frame, dets, classes)
    gt = COCO(gt_dict)
    if not gt_dict["annotations"]:
        return {"map50": float("nan"), "map": float("nan")}
    if not results:  # the same keys as with detections: every class with ground truth scores 0
        present = {classes[a["category_id"] - 1] for a in gt_dict["annotations"]}
        return {"map50": 0.0, "map": 0.0} | {f"{m}_{n}": 0.0 for n in classes if n in present for m in ("ap50", "ap")}
    evaluator = COCOeval_faster(gt, gt.loadRes(results), iouType="bbox", print_function=lambda *a: None)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (T, R, K), area "all", maxDets 100
    out = {"map50": float(evaluator.stats[1]), "map": float(evaluator.stats[0])}
    for k, name in enumerate(classes):
        if (precision[:, :, k] > -1).any():
            out[f"ap50_{name}"] = float(precision[0, :, k].mean())
            out[f"ap_{name}"] = float(precision[:, :, k].mean())
    return out


# --- the numpy twin: match once, resample images -------------------------------------------------


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (D, 4) x (G, 4) -> (D, G), COCO's definition (no +1)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """COCO greedy matching of one image and class: (D, T) true-positive flags, in input order.

    By decreasing score, each detection takes the unmatched ground truth of highest IoU >= t.
    """
    tp = np.zeros((len(det_boxes), len(IOU_THRESHOLDS)), dtype=bool)
    if not len(det_boxes) or not len(gt_boxes):
        return tp
    ious = _iou(det_boxes, gt_boxes)
    taken = np.zeros((len(IOU_THRESHOLDS), len(gt_boxes)), dtype=bool)  # (T, G)
    rows = np.arange(len(IOU_THRESHOLDS))
    for d in np.argsort(-det_scores, kind="mergesort"):
        if ious[d].max() < IOU_THRESHOLDS[0]:
            continue  # a false positive at every threshold
        candidates = np.where(~taken & (ious[d][None, :] >= IOU_THRESHOLDS[:, None]), ious[d][None, :], -1.0)
        best = len(gt_boxes) - 1 - candidates[:, ::-1].argmax(1)  # COCO keeps the last of tied IoUs
        hit = candidates[rows, best] >= 0
        taken[rows[hit], best[hit]] = True
        tp[d] = hit
    return tp


class Matched:
    """One model's detections on one split, matched to ground truth once.

    ``ap(weights)`` gives per-class AP (K, T) for integer image weights (a bootstrap resample);
    all-ones weights reproduce COCOeval exactly.
    """

    def __init__(self, frame: pd.DataFrame, dets: pd.DataFrame, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        truth = ground_truth(frame)
        self.n_images = len(truth)
        self.gt_counts = np.zeros((self.n_images, len(self.classes)))  # (N, K)
        for i, (cls, _) in enumerate(truth):
            np.add.at(self.gt_counts[i], cls, 1)
        cls_idx = dets["class"].map({n: k for k, n in enumerate(self.classes)}).to_numpy(dtype=np.int64)
        images = dets["image"].to_numpy(dtype=np.int64)
        boxes = dets[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
        scores = dets["score"].to_numpy(dtype=np.float64)
        tp = np.zeros((len(dets), len(IOU_THRESHOLDS)), dtype=bool)
        by_image = pd.Series(np.arange(len(dets))).groupby([images, cls_idx]).indices if len(dets) else {}
        for (i, k), rows in by_image.items():
            gt_cls, gt_boxes = truth[i]
            tp[rows] = match_image(boxes[rows], scores[rows], gt_boxes[gt_cls == k])
        self.tp50 = tp[:, 0]  # per detection, in ``dets`` order: matched a true box at IoU 0.5
        self.per_class = []  # per class: (image of each detection, tp flags (D, T)) in COCO order
        for k in range(len(self.classes)):
            rows = np.flatnonzero(cls_idx == k)
            # COCO concatenates per image (ascending id), each by score, then stable-sorts by score
            rows = rows[np.lexsort((-scores[rows], images[rows]))]
            rows = rows[np.argsort(-scores[rows], kind="mergesort")]
            self.per_class.append((images[rows], tp[rows], scores[rows]))

    def ap(self, weights: np.ndarray | None = None, thresholds: slice = slice(None)) -> np.ndarray:
        """(K, T) AP per class and IoU threshold; NaN for a class without ground truth."""
        w = np.ones(self.n_images) if weights is None else np.asarray(weights, dtype=np.float64)
        positives = w @ self.gt_counts  # (K,)
        n_thresholds = len(IOU_THRESHOLDS[thresholds])
        out = np.full((len(self.classes), n_thresholds), np.nan)
        for k, (images, tp, _) in enumerate(self.per_class):
            if positives[k] <= 0:
                continue
            dw = w[images][:, None]  # (D, 1)
            hits = tp[:, thresholds]
            tps, fps = np.cumsum(dw * hits, 0), np.cumsum(dw * ~hits, 0)  # (D, T)
            out[k] = [_interpolated_ap(tps[:, t], fps[:, t], positives[k]) for t in range(n_thresholds)]
        return out

    def map50(self, weights: np.ndarray | None = None) -> float:
        return float(np.nanmean(self.ap(weights, slice(0, 1))))

    def pr_curve(self, k: int, t: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(recall, precision, score) after each detection of class ``k`` at threshold index ``t``."""
        _, tp, scores = self.per_class[k]
        tps, fps = np.cumsum(tp[:, t]), np.cumsum(~tp[:, t])
        return tps / max(self.gt_counts[:, k].sum(), 1), tps / np.maximum(tps + fps, 1), scores


def _interpolated_ap(tps: np.ndarray, fps: np.ndarray, positives: float) -> float:
    """COCO's 101-point interpolated AP from cumulative (weighted) TP/FP counts."""
    if not len(tps):
        return 0.0
    recall = tps / positives
    precision = tps / (tps + fps + np.spacing(1))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    ok = idx < len(recall)
    return float(np.where(ok, envelope[np.minimum(idx, len(recall) - 1)], 0.0).sum() / len(RECALL_POINTS))


def bootstrap_map50(m: Matched, *, resamples: int, confidence: float, seed: int) -> stats.Interval:
    """Percentile interval of mAP@0.5 over test images resampled with replacement."""
    values = np.array([m.map50(w) for w in stats.weight_matrix(m.n_images, resamples, seed)])
    return stats.interval(m.map50(), values, confidence)


def paired_bootstrap_map50(a: Matched, b: Matched, *, resamples: int, confidence: float,
                           seed: int) -> stats.Interval:
    """Interval of mAP@0.5(a) - mAP@0.5(b), both on the same resampled test images."""
    diffs = np.array([a.map50(w) - b.map50(w) for w in stats.weight_matrix(a.n_images, resamples, seed)])
    return stats.interval(a.map50() - b.map50(), diffs, confidence)


def best_f1_threshold(m: Matched) -> float:
    """Score threshold maximising F1 at IoU 0.5, all classes pooled (for reports and serving)."""
    parts = [(tp[:, 0], s) for _, tp, s in m.per_class if len(s)]
    if not parts:
        return 0.5
    tp = np.concatenate([p[0] for p in parts])
    scores = np.concatenate([p[1] for p in parts])
    order = np.argsort(-scores, kind="mergesort")
    tps = np.cumsum(tp[order])
    f1 = 2 * tps / (np.arange(1, len(tps) + 1) + m.gt_counts.sum())
    return float(scores[order][int(np.argmax(f1))])
