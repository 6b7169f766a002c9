"""Image drift (``deepflow.drift.detect(kind="image")``) and drifted incoming camera batches.

Signals, each against the champion's reference frames (the prepared train split):

* per-frame statistics from the decoded pixels (frames larger than ``STATS_SIZE`` are first
  shrunk to it, so resolution alone does not move them): ``brightness`` (mean luma), ``contrast``
  (luma standard deviation), ``red``/``green``/``blue`` (channel means), ``sharpness`` (variance
  of the 4-neighbour Laplacian of luma: blur and fog lower it, noise raises it). PSI over the
  reference's deciles, confirmed by KS; at most ``max_frames`` frames per side;
* with the champion detector, on at most ``scored_frames`` reference frames and every current
  frame (up to ``max_frames``): ``detections_per_frame`` at or above the reporting threshold
  (PSI/KS), ``detection_score`` (the confidence of those detections, PSI/KS) and
  ``detected_classes`` (total variation of the class shares, confirmed by a chi-square test).
  A camera that fogs up shows as fewer, less confident detections before anyone labels a frame.

The batch generator renders frames with the DVC stage's generator (another seed) and, with
probability growing with ``drift``, turns them to night, fogs or blurs them, and crowds the scenes.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepflow.drift import (
    IMAGE,
    DriftConfig,
    DriftReport,
    Signal,
    batch_name,
    chi2_pvalue,
    numeric_signal,
    require_columns,
    subsample,
    summarise,
    total_variation,
    write_parquet,
)
from deepflow.kinds.detection.labels import CLASSES, decode, format_yolo

STATS = ("brightness", "contrast", "red", "green", "blue", "sharpness")
STATS_SIZE = 160  # longest side the statistics are computed at
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def frame_stats(data: bytes) -> np.ndarray:
    """``STATS`` of one encoded image, as a (6,) float64 array."""
    from PIL import Image

    image = decode(data)
    if max(image.size) > STATS_SIZE:
        image.thumbnail((STATS_SIZE, STATS_SIZE), Image.Resampling.BILINEAR)
    a = np.asarray(image, dtype=np.float32)  # (H, W, 3)
    y = a @ LUMA  # (H, W)
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    means = a.reshape(-1, 3).mean(0)
    return np.array([y.mean(), y.std(), *means, lap.var() if lap.size else 0.0], dtype=np.float64)


def stats_frame(images: list[bytes]) -> tuple[pd.DataFrame, list[int]]:
    """(one row of ``STATS`` per decodable image, positions of the images that did not decode)."""
    rows, bad = [], []
    for i, data in enumerate(images):
        try:
            rows.append(frame_stats(bytes(data)))
        except Exception:  # PIL raises several types for bad bytes
            bad.append(i)
    return pd.DataFrame(np.array(rows).reshape(-1, len(STATS)), columns=list(STATS)), bad


def detections(scorer: Any, images: list[bytes], threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(detections per image (N,), scores (D,), class counts (C,)) at or above ``threshold``."""
    found = scorer.predict(pd.DataFrame({IMAGE: images}))
    found = found[found["score"] >= threshold]
    per_frame = np.bincount(found["image"].to_numpy(dtype=np.int64), minlength=len(images)).astype(np.float64)
    classes = found["class"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy(dtype=np.int64)
    return per_frame, found["score"].to_numpy(dtype=np.float64), np.bincount(classes, minlength=len(CLASSES))


def detect_image(reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig, scorer: Any = None, *,
                 use_case: str = "", threshold: float | None = None) -> DriftReport:
    require_columns(reference, [IMAGE], "reference")
    require_columns(current, [IMAGE], "current batch")
    ref = subsample(reference, cfg.max_frames, cfg.seed)
    cur = subsample(current, cfg.max_frames, cfg.seed + 1)
    notes = []
    if dropped := current.attrs.get("dropped"):
        notes.append(f"{dropped} undecodable image(s) dropped while loading: "
                     + "; ".join(current.attrs.get("rejected", [])[:5]))
    if len(cur) < len(current):
        notes.append(f"current batch subsampled to {len(cur):,} of {len(current):,} frames")
    ref_stats, ref_bad = stats_frame(list(ref[IMAGE]))
    cur_stats, cur_bad = stats_frame(list(cur[IMAGE]))
    if cur_bad:
        notes.append(f"{len(cur_bad)} current frame(s) did not decode and were skipped")
    if cur_stats.empty:
        from deepflow.drift import DriftInputError, source_of

        raise DriftInputError(f"{source_of(current, 'current batch')}: no decodable image")
    sizes = _sizes(cur)
    if sizes and sizes != _sizes(ref):
        notes.append(f"frame sizes differ: reference {sorted(_sizes(ref))[:3]}, current {sorted(sizes)[:3]}")
    signals, samples = [], {}
    for name in STATS:
        r, c = ref_stats[name].to_numpy(), cur_stats[name].to_numpy()
        signals.append(numeric_signal(name, r, c, cfg))
        signals[-1].detail += f"; median {np.median(r):.1f} -> {np.median(c):.1f}"
        samples[name] = (r, c)
    if scorer is not None:
        thr = cfg.detection_threshold if threshold is None else float(threshold)
        skip_r, skip_c = set(ref_bad), set(cur_bad)
        good_ref = [d for i, d in enumerate(ref[IMAGE]) if i not in skip_r]
        scored = subsample(pd.DataFrame({IMAGE: good_ref}), cfg.scored_frames, cfg.seed + 2)[IMAGE].tolist()
        good_cur = [bytes(d) for i, d in enumerate(cur[IMAGE]) if i not in skip_c]
        signals += _detection_signals(scorer, [bytes(d) for d in scored], good_cur, thr, cfg, samples)
        notes.append(f"detections counted at score >= {thr:g}; {len(scored)} reference frames scored")
    return summarise(use_case, "image", len(ref), len(cur), signals, cfg, notes, samples)


def _sizes(frame: pd.DataFrame) -> set[tuple[int, int]]:
    if {"width", "height"} <= set(frame.columns):
        return set(zip(frame["width"].astype(int), frame["height"].astype(int), strict=True))
    return set()


def _detection_signals(scorer: Any, ref: list[bytes], cur: list[bytes], thr: float, cfg: DriftConfig,
                       samples: dict) -> list[Signal]:
    n_r, s_r, k_r = detections(scorer, ref, thr)
    n_c, s_c, k_c = detections(scorer, cur, thr)
    out = [numeric_signal("detections_per_frame", n_r, n_c, cfg)]
    out[-1].detail += f"; mean {n_r.mean():.2f} -> {n_c.mean():.2f}"
    samples["detections_per_frame"] = (n_r, n_c)
    if len(s_r) and len(s_c):
        out.append(numeric_signal("detection_score", s_r, s_c, cfg))
        out[-1].detail += f"; median {np.median(s_r):.2f} -> {np.median(s_c):.2f}"
        samples["detection_score"] = (s_r, s_c)
    if k_r.sum() and k_c.sum():
        tvd, p = total_variation(k_r, k_c), chi2_pvalue(k_r, k_c)
        shares = ", ".join(f"{c} {a / k_r.sum():.0%}->{b / k_c.sum():.0%}" for c, a, b in zip(CLASSES, k_r, k_c,
                                                                                              strict=True))
        out.append(Signal("detected_classes", "tvd", tvd, cfg.class_share_shift,
                          bool(tvd >= cfg.class_share_shift and p < cfg.pvalue), f"{shares} (chi2 p={p:.1e})"))
    return out


# --- drifted batches -------------------------------------------------------------------------


def shift_image(image, drift: float, rng: np.random.Generator):
    """(image, applied conditions): night, fog and blur, each with a probability growing with drift."""
    from PIL import Image, ImageFilter

    applied = []
    a = np.asarray(image, dtype=np.float32)
    if rng.random() < 0.5 * drift:  # night: the generator's night gain and blue tint on the whole frame
        a = a * 0.3 * np.array([0.8, 0.85, 1.1], dtype=np.float32)
        applied.append("night")
    if rng.random() < 0.4 * drift:  # fog: a uniform veil
        alpha = rng.uniform(0.4, 0.7)
        a = a * (1 - alpha) + 200 * alpha
        applied.append("fog")
    image = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if rng.random() < 0.5 * drift:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.0)))
        applied.append("blur")
    return image, applied


def drifted_row(p, index: int, drift: float) -> dict:
    """One frame as ``generate.frame_row`` writes it (split "test" of ``p.seed``), then shifted."""
    from deepflow.usecases.traffic.generate import SPLITS, render

    img, classes, boxes, tags = render(np.random.default_rng([p.seed, SPLITS.index("test"), index]), p)
    img, applied = shift_image(img, drift, np.random.default_rng([p.seed, 99, index]))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=p.jpeg_quality)
    xyxy = boxes / np.array([p.width, p.height, p.width, p.height], dtype=np.float64)
    cxcywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return {"image_id": f"incoming-{p.seed}-{index:06d}", "image": buf.getvalue(), "width": p.width,
            "height": p.height, "labels": format_yolo(classes, cxcywh), **tags, "shift": ",".join(applied)}


def make_batch(out_dir: Path, *, rows: int, drift: float, seed: int, params=None) -> Path:
    """Write ``traffic-n<rows>-drift<d>-seed<s>.parquet`` in the generator's format (plus a
    ``shift`` column naming what was applied). ``params``: the reference's ``GenerateParams``
    (default: ``params.yaml``); ``crowded_share`` grows by ``0.5 * drift``."""
    from deepflow.usecases.traffic.generate import GenerateParams

    if params is None:
        from deepflow.settings import stage_params

        params = GenerateParams(**stage_params("traffic.generate"))
    p = replace(params, seed=params.seed + 1000 + seed, crowded_share=min(1.0, params.crowded_share + 0.5 * drift))
    frame = pd.DataFrame([drifted_row(p, i, drift) for i in range(rows)])
    return write_parquet(frame, out_dir / batch_name("traffic", rows, drift, seed))
