"""Incoming camera batches for the ``traffic`` entry (its ``incoming:``), drifted on request.

Frames are rendered by the DVC stage's generator (``generate.py``) with another seed, so drift=0
is the reference's distribution with new scenes (and their true boxes); with a probability
growing with ``drift`` each frame is turned to night, fogged or blurred (the detection kind's
``shift_image``), and ``crowded_share`` grows by ``0.5 * drift``. Class ids index the generator's
``CLASSES``, as in the entry's prepared splits.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from deepflow.drift.batches import batch_name, write_parquet
from deepflow.kinds.detection.drift import shift_image
from deepflow.kinds.detection.labels import format_yolo
from deepflow.usecases.traffic.generate import SPLITS, GenerateParams, render


def drifted_row(p: GenerateParams, index: int, drift: float) -> dict:
    """One frame as ``generate.frame_row`` writes it (split "test" of ``p.seed``), then shifted."""
    img, classes, boxes, tags = render(np.random.default_rng([p.seed, SPLITS.index("test"), index]), p)
    img, applied = shift_image(img, drift, np.random.default_rng([p.seed, 99, index]))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=p.jpeg_quality)
    xyxy = boxes / np.array([p.width, p.height, p.width, p.height], dtype=np.float64)
    cxcywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return {"image_id": f"incoming-{p.seed}-{index:06d}", "image": buf.getvalue(), "width": p.width,
            "height": p.height, "labels": format_yolo(classes, cxcywh), **tags, "shift": ",".join(applied)}


def make_batch(name: str, out_dir: Path, *, rows: int, drift: float, seed: int,
               params: GenerateParams | None = None) -> Path:
    """Write ``traffic-n<rows>-drift<d>-seed<s>.parquet`` in the generator's format (plus a
    ``shift`` column naming what was applied). ``params``: the reference's ``GenerateParams``
    (default: ``params.yaml``); ``crowded_share`` grows by ``0.5 * drift``."""
    if params is None:
        from deepflow.settings import stage_params

        params = GenerateParams(**stage_params("traffic.generate"))
    p = replace(params, seed=params.seed + 1000 + seed, crowded_share=min(1.0, params.crowded_share + 0.5 * drift))
    frame = pd.DataFrame([drifted_row(p, i, drift) for i in range(rows)])
    return write_parquet(frame, out_dir / batch_name(name, rows, drift, seed))
