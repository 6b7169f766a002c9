"""Batch part of the ``detection`` kind: encoded images in, detections and counts per class out.

The contract (``deepflow.batch``'s docstring): the input is a folder of image files (the core
reads it as ``file`` and ``image`` columns) or a table with an ``image`` column of encoded bytes.
An image that does not fully decode (``labels.decode``: not an image, truncated, a corrupt PNG)
is rejected with the reason, named by its file when there is one (and by its row always). The output
adds ``threshold``, ``detections`` (JSON list of the boxes at or above the threshold: ``x1 y1 x2
y2`` in the image's pixels, ``class``, ``score``) and ``count_<class>`` for every class the
model was trained on (its scorer's ``classes``, in their order).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from deepflow.batch import FILE, IMAGE, BatchError, Model, rejects_frame
from deepflow.kinds.detection.labels import ImageError, decode

NEEDS_THRESHOLD = False  # without one every box the detector keeps is written (threshold 0)
OUTPUTS = ("threshold", "detections")  # the fixed names; outputs(model) adds count_<class> per class
BOX = ("x1", "y1", "x2", "y2", "class", "score")


def classes(model: Model) -> list[str]:
    """The class names of the model's scorer; a scorer saved without them cannot be batch-scored."""
    names = getattr(model.scorer, "classes", None)
    if not names:
        raise BatchError(f"{model.name} v{model.version}: its scorer names no classes (saved by an older "
                         f"deepflow); train {model.name} again (`deepflow train {model.name}`) and score with that")
    return [str(c) for c in names]


def outputs(model: Model) -> tuple[str, ...]:
    """The columns this model adds (module docstring)."""
    return (*OUTPUTS, *(f"count_{c}" for c in classes(model)))


def inputs(model: Model) -> list[str]:
    return [IMAGE]


def validate_image(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows whose ``image`` decodes, rejects[row, column, reason]); the reason names the file."""
    problems: dict[Any, list[tuple[str, str]]] = {}
    for row, data in frame[IMAGE].items():
        where = f" ({frame.at[row, FILE]})" if FILE in frame.columns else ""
        if not isinstance(data, bytes | bytearray) or not data:
            problems[row] = [(IMAGE, f"no image bytes{where}")]
            continue
        try:
            decode(data)  # the scorer's own full decode: a truncated file fails here, not at scoring time
        except ImageError as exc:
            problems[row] = [(IMAGE, f"not a decodable image{where}: {exc.why}")]
    clean = frame.drop(index=list(problems)) if problems else frame
    return clean, rejects_frame(problems)


def validate(frame: pd.DataFrame, model: Model) -> tuple[pd.DataFrame, pd.DataFrame]:
    return validate_image(frame)


def score(model: Model, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(threshold, detections JSON and counts per class per decodable image, rejects)."""
    clean, rejects = validate_image(frame)
    names = classes(model)
    threshold = float(model.threshold) if model.threshold is not None else 0.0
    # The detector numbers images by position in the frame it is given (its ``image`` column).
    found = model.scorer.predict(clean[[IMAGE]].reset_index(drop=True)) if len(clean) else None
    kept = found[found["score"] >= threshold] if found is not None else None
    boxes, counts = [], {c: [] for c in names}
    for pos in range(len(clean)):
        mine = kept[kept["image"] == pos] if kept is not None else pd.DataFrame()
        boxes.append(json.dumps([{k: (round(float(r[k]), 2) if k != "class" else r[k]) for k in BOX}
                                 for _, r in mine.iterrows()]))
        for c in names:
            counts[c].append(int((mine["class"] == c).sum()) if len(mine) else 0)
    out = pd.DataFrame({"threshold": pd.Series(threshold, index=clean.index, dtype="float64"),
                        "detections": pd.Series(boxes, index=clean.index, dtype=str)}, index=clean.index)
    for c in names:
        out[f"count_{c}"] = pd.Series(counts[c], index=clean.index, dtype="int64")
    return out, rejects
