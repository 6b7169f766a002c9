"""Detection drift (``deepflow.drift.detect(kind="detection")``), image batches and the generic
image generator.

Signals, each against the champion's reference frames (the prepared train split):

* per-frame statistics from the decoded pixels (frames larger than ``STATS_SIZE`` are first
  shrunk to it, so resolution alone does not move them): ``brightness`` (mean luma), ``contrast``
  (luma standard deviation), ``red``/``green``/``blue`` (channel means), ``sharpness`` (variance
  of the 4-neighbour Laplacian of luma: blur and fog lower it, noise raises it). PSI over the
  reference's deciles, confirmed by KS; at most ``max_frames`` frames per side;
* with the champion detector, on at most ``scored_frames`` reference frames and every current
  frame (up to ``max_frames``): ``detections_per_frame`` at or above the reporting threshold
  (PSI/KS), ``detection_score`` (the confidence of those detections, PSI/KS) and
  ``detected_classes`` (total variation of the shares of the champion's classes, its scorer's
  ``classes``, confirmed by a chi-square test).
  A camera that fogs up shows as fewer, less confident detections before anyone labels a frame.

Batches are a folder of image files or a parquet table with an ``image`` column of encoded bytes.

``make_batch`` is what a detection entry without its own ``incoming:`` generator gets: frames
resampled from the prepared test split, each turned, with a probability growing with ``drift``,
to night, fogged or blurred (``shift_image``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepflow.drift.batches import (
    DriftInputError,
    batch_name,
    read_table,
    require_columns,
    sample_split,
    source_of,
    subsample,
    write_parquet,
)
from deepflow.drift.report import DriftConfig, DriftReport, Signal, numeric_signal, summarise
from deepflow.drift.statistics import chi2_pvalue, total_variation
from deepflow.kinds.detection.labels import decode

IMAGE, FILE = "image", "file"  # as deepflow.batch reads a folder: encoded bytes, path in the folder
STATS = ("brightness", "contrast", "red", "green", "blue", "sharpness")
STATS_SIZE = 160  # longest side the statistics are computed at
SHARES_SHOWN = 8  # classes named in detected_classes' detail, largest share change first
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


def detected(scorer: Any, images: list[bytes], threshold: float) -> pd.DataFrame:
    """The scorer's detections on ``images`` at or above ``threshold``."""
    found = scorer.predict(pd.DataFrame({IMAGE: images}))
    return found[found["score"] >= threshold]


def detections(found: pd.DataFrame, n_images: int, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray]:
    """(detections per image (N,), scores (D,), counts per class of ``classes`` (C,)) of ``detected``'s frame."""
    per_frame = np.bincount(found["image"].to_numpy(dtype=np.int64), minlength=n_images).astype(np.float64)
    idx = found["class"].map({c: i for i, c in enumerate(classes)}).dropna().to_numpy(dtype=np.int64)
    return per_frame, found["score"].to_numpy(dtype=np.float64), np.bincount(idx, minlength=len(classes))


def detect(reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig, scorer: Any = None, *,
           use_case: str = "", features: list[str] | None = None, threshold: float | None = None) -> DriftReport:
    """The signals of the module docstring; detections count at or above ``threshold`` (default
    ``cfg.detection_threshold``). ``features`` is not used by this kind."""
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
    return summarise(use_case, "detection", len(ref), len(cur), signals, cfg, notes, samples)


def _sizes(frame: pd.DataFrame) -> set[tuple[int, int]]:
    if {"width", "height"} <= set(frame.columns):
        return set(zip(frame["width"].astype(int), frame["height"].astype(int), strict=True))
    return set()


def _detection_signals(scorer: Any, ref: list[bytes], cur: list[bytes], thr: float, cfg: DriftConfig,
                       samples: dict) -> list[Signal]:
    found_r, found_c = detected(scorer, ref, thr), detected(scorer, cur, thr)
    # the model's classes; a stand-in scorer without them: the names either side detected
    classes = list(getattr(scorer, "classes", None) or sorted(set(found_r["class"]) | set(found_c["class"])))
    n_r, s_r, k_r = detections(found_r, len(ref), classes)
    n_c, s_c, k_c = detections(found_c, len(cur), classes)
    out = [numeric_signal("detections_per_frame", n_r, n_c, cfg)]
    out[-1].detail += f"; mean {n_r.mean():.2f} -> {n_c.mean():.2f}"
    samples["detections_per_frame"] = (n_r, n_c)
    if len(s_r) and len(s_c):
        out.append(numeric_signal("detection_score", s_r, s_c, cfg))
        out[-1].detail += f"; median {np.median(s_r):.2f} -> {np.median(s_c):.2f}"
        samples["detection_score"] = (s_r, s_c)
    if k_r.sum() and k_c.sum():
        tvd, p = total_variation(k_r, k_c), chi2_pvalue(k_r, k_c)
        share_r, share_c = k_r / k_r.sum(), k_c / k_c.sum()
        moved = [k for k in np.argsort(-np.abs(share_c - share_r), kind="stable") if k_r[k] or k_c[k]]
        shares = ", ".join(f"{classes[k]} {share_r[k]:.0%}->{share_c[k]:.0%}" for k in moved[:SHARES_SHOWN])
        if len(moved) > SHARES_SHOWN:
            shares += f", ... (+{len(moved) - SHARES_SHOWN} classes)"
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


def encode_jpeg(image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_batch(name: str, out_dir: Path, *, rows: int, drift: float, seed: int,
               overrides: Sequence[str] = ()) -> Path:
    """Write ``<name>-n<rows>-drift<d>-seed<s>.parquet``: frames of entry ``name``'s prepared test
    split (val, then train, when it has none) drawn with replacement, in the split's columns plus
    ``shift`` (what ``shift_image`` applied; a shifted frame is re-encoded as JPEG, its boxes stay).
    ``overrides``: the entry's config ``key=value`` (e.g. ``prepared_dir=...``)."""
    pool, path = sample_split(name, overrides)
    require_columns(pool, [IMAGE], str(path))
    rng = np.random.default_rng(seed)
    batch = pool.iloc[rng.integers(0, len(pool), size=rows)].reset_index(drop=True)
    images, shifts = [], []
    for data in batch[IMAGE]:
        image, applied = shift_image(decode(bytes(data)), drift, rng) if drift > 0 else (None, [])
        images.append(encode_jpeg(image) if applied else bytes(data))
        shifts.append(",".join(applied))
    batch[IMAGE], batch["shift"] = images, shifts
    return write_parquet(batch, out_dir / batch_name(name, rows, drift, seed))


# --- reading batches ---------------------------------------------------------------------------


def load_batch(path: Path, features: list[str] | None = None) -> pd.DataFrame:
    """A folder of image files, or a parquet table with an ``image`` column of encoded bytes (the
    generator's shards); undecodable images are dropped and named in ``attrs["rejected"]``.
    ``features``: unused."""
    from deepflow.kinds.detection.batch import validate_image

    frame = _image_folder(path) if path.is_dir() else read_table(path)
    require_columns(frame, [IMAGE], str(path))
    clean, rejects = validate_image(frame)
    if clean.empty:
        raise DriftInputError(f"{path}: no decodable image ({'; '.join(rejects['reason'].head(3))})")
    clean = clean.reset_index(drop=True)
    clean.attrs.update(source=str(path), dropped=len(rejects), rejected=list(rejects["reason"].head(10)))
    return clean


def _image_folder(folder: Path) -> pd.DataFrame:
    from deepflow.batch import image_files

    files = image_files(folder)
    if not files:
        raise DriftInputError(f"{folder}: no files in the folder")
    return pd.DataFrame({FILE: [str(f.relative_to(folder)) for f in files], IMAGE: [f.read_bytes() for f in files]})
