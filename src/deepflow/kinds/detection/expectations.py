"""The ``detection`` kind's data contract, as Great Expectations suites over a manifest of the prepared splits.

``images``: one row per image (decodes? decoded size vs the recorded one, boxes, content hash and
the splits that hold the same pixels). ``boxes``: one row per labelled box (class name from the
entry's ``classes``, or "unknown class id N" for an id outside them; normalised edges, size in
pixels). ``classes``: one row per class of the entry with its number of training boxes, so a class
too rare to learn is named. Decoding every image is the check itself: a truncated file fails here.
Failures name their rows: images and boxes by ``split/image_id``, classes by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from deepflow.kinds.detection.config import DetectionConfig
from deepflow.kinds.detection.labels import decode, parse_yolo
from deepflow.validation import ROW_ID

SPLITS = ("train", "val", "test")
EDGE_TOLERANCE = 1e-4  # YOLO text keeps 6 decimals: an edge may round just past the frame
MIN_TRAIN_BOXES = 1  # boxes of each class the training split must hold


def _image_row(split: str, row) -> dict:
    try:
        pixels = np.asarray(decode(bytes(row.image)))
        decoded = {"decodes": True, "decoded_width": pixels.shape[1], "decoded_height": pixels.shape[0],
                   "content_hash": hashlib.sha256(pixels.tobytes()).hexdigest()[:20]}
    except Exception as exc:
        decoded = {"decodes": False, "decoded_width": None, "decoded_height": None,  # reported by "decodes"
                   "content_hash": f"undecodable:{type(exc).__name__}:{split}/{row.image_id}"}
    return {"split": split, "image": f"{split}/{row.image_id}", "width": int(row.width),
            "height": int(row.height), **decoded}


def _box_rows(split: str, row, classes: Sequence[str]) -> list[dict]:
    image = f"{split}/{row.image_id}"
    try:
        cls, b = parse_yolo(row.labels)
    except ValueError:
        return [{"split": split, "image": image, "class_name": f"unparseable label: {row.labels[:40]!r}",
                 "left": 0.0, "top": 0.0, "right": 0.0, "bottom": 0.0, "width_px": 0.0, "height_px": 0.0}]
    names = [classes[c] if 0 <= c < len(classes) else f"unknown class id {c}" for c in cls]
    return [{"split": split, "image": image, "class_name": n,
             "left": cx - w / 2, "top": cy - h / 2, "right": cx + w / 2, "bottom": cy + h / 2,
             "width_px": w * row.width, "height_px": h * row.height}
            for n, (cx, cy, w, h) in zip(names, b.tolist(), strict=True)]


def frames(splits: dict[str, pd.DataFrame], classes: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The manifest the suites look at, built from the prepared splits and the entry's ``classes``."""
    images, boxes = [], []
    classes = [str(c) for c in classes]
    for split, frame in splits.items():
        for row in frame.itertuples(index=False):
            images.append(_image_row(split, row))
            boxes.extend(_box_rows(split, row, classes))
    images = pd.DataFrame(images).astype({"decoded_width": "Int64", "decoded_height": "Int64"})
    boxes = pd.DataFrame(boxes, columns=["split", "image", "class_name", "left", "top", "right", "bottom",
                                         "width_px", "height_px"])
    counts = boxes.groupby("image").size()
    images["n_boxes"] = images["image"].map(counts).fillna(0).astype("int64")
    # "train" for an image seen in one split; "test+train" when the same pixels sit in both
    seen = images.groupby("content_hash")["split"].agg(lambda s: "+".join(sorted(set(s))))
    images["splits_with_same_image"] = images["content_hash"].map(seen)
    in_train = boxes.loc[boxes["split"] == "train", "class_name"].value_counts()
    per_class = pd.DataFrame({"class_name": classes,
                              "train_boxes": [int(in_train.get(c, 0)) for c in classes]})
    images.attrs[ROW_ID] = boxes.attrs[ROW_ID] = ["image"]
    per_class.attrs[ROW_ID] = ["class_name"]
    return {"images": images, "boxes": boxes, "classes": per_class}


def suites(cfg: DetectionConfig) -> dict[str, list]:
    images = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="image"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeInSet(column="decodes", value_set=[True]),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="width", column_B="decoded_width",
                                            ignore_row_if="either_value_is_missing"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="height", column_B="decoded_height",
                                            ignore_row_if="either_value_is_missing"),
        gxe.ExpectColumnValuesToBeBetween(column="n_boxes", min_value=0, max_value=cfg.max_boxes_per_image),
        gxe.ExpectColumnValuesToBeInSet(column="splits_with_same_image", value_set=list(SPLITS)),
    ]
    boxes = [
        gxe.ExpectColumnValuesToBeInSet(column="class_name", value_set=list(cfg.classes)),
        # the range rules below skip missing values: a "nan" in a label line is caught here
        *(gxe.ExpectColumnValuesToNotBeNull(column=c, description=f"every box has a {c} edge (a number, not NaN)")
          for c in ("left", "top", "right", "bottom")),
        gxe.ExpectColumnValuesToBeBetween(column="left", min_value=-EDGE_TOLERANCE, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="top", min_value=-EDGE_TOLERANCE, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="right", min_value=0, max_value=1 + EDGE_TOLERANCE),
        gxe.ExpectColumnValuesToBeBetween(column="bottom", min_value=0, max_value=1 + EDGE_TOLERANCE),
        gxe.ExpectColumnValuesToBeBetween(column="width_px", min_value=cfg.min_box_px),
        gxe.ExpectColumnValuesToBeBetween(column="height_px", min_value=cfg.min_box_px),
    ]
    # every class learnable: a failure names the classes with too few training boxes
    classes = [gxe.ExpectColumnValuesToBeBetween(column="train_boxes", min_value=MIN_TRAIN_BOXES)]
    return {"images": images, "boxes": boxes, "classes": classes}
