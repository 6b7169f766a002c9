"""The real-data path: a YOLO-format loader tested on the shipped COCO sample and a made-up set."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepflow import usecase, validation
from deepflow.kinds.detection import expectations, yolo
from deepflow.kinds.detection.config import DetectionConfig
from deepflow.kinds.detection.labels import parse_yolo
from deepflow.settings import PROJECT_ROOT
from deepflow.usecases.traffic.generate import CLASSES

COCO = PROJECT_ROOT / "data/external/coco_traffic_sample"
OURS = {"person": "pedestrian", "bicycle": "bicycle", "car": "car", "motorcycle": "motorcycle",
        "bus": "bus", "truck": "truck"}


@pytest.fixture(scope="module")
def coco() -> pd.DataFrame:
    cfg = usecase.get("traffic").cfg
    return yolo.load(COCO, cfg.coco.class_map, cfg.classes)  # the traffic entry's class map and classes


def test_coco_sample_loads_with_counts_from_its_attribution(coco: pd.DataFrame) -> None:
    attribution = pd.read_csv(COCO / "ATTRIBUTION.csv")
    assert len(coco) == len(attribution) == 20
    assert set(coco["image_id"] + ".jpg") == set(attribution["file_name"])
    expected, loaded = Counter(), Counter()
    for listed in attribution["traffic_classes"]:
        for item in listed.split(";"):
            name, n = item.split(":")
            if name in OURS:
                expected[OURS[name]] += int(n)
    for text in coco["labels"]:
        loaded.update(CLASSES[c] for c in parse_yolo(text)[0])
    assert loaded == expected  # person -> pedestrian etc.; traffic lights dropped
    assert coco["dropped"].sum() > 0
    sizes = attribution.set_index("file_name")[["width", "height"]]
    for image_id, w, h in zip(coco["image_id"], coco["width"], coco["height"], strict=True):
        assert (w, h) == tuple(sizes.loc[f"{image_id}.jpg"])


def test_coco_sample_meets_the_box_and_image_rules(coco: pd.DataFrame) -> None:
    frames = expectations.frames({"test": coco}, CLASSES)
    suites = expectations.suites(DetectionConfig(classes=list(CLASSES)))
    del frames["classes"], suites["classes"]  # "every class in train" concerns training splits only
    report = validation.validate("traffic.coco", frames, suites)
    assert report.success, report.to_markdown()


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_any_yolo_dataset_with_a_class_map_splits_and_missing_labels(tmp_path) -> None:
    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    (root / "images/train/a.png").write_bytes(_png(40, 20))
    labels = ["2 0.5 0.5 0.5 0.5", "1 0.1 0.1 0.1 0.1", "3 0.2 0.2 0.1 0.2", "0 0.8 0.5 0.1 0.6"]
    (root / "labels/train/a.txt").write_text("\n".join(labels) + "\n")
    (root / "images/train/b.png").write_bytes(_png(30, 30))  # no label file: no boxes
    (root / "images/train/notes.md").write_text("not an image")
    class_map = {0: "pedestrian", 2: "car", 3: "motorcycle"}  # source id 1 is not mapped: dropped
    train = yolo.load(root, class_map, list(CLASSES), split="train")
    assert list(train["image_id"]) == ["a", "b"] and list(train["width"]) == [40, 30]
    cls, boxes = parse_yolo(train["labels"].iloc[0])
    assert [CLASSES[c] for c in cls] == ["car", "motorcycle", "pedestrian"] and train["dropped"].tolist() == [1, 0]
    assert train["labels"].iloc[1] == ""
    other = yolo.load(root, {2: "b", 0: "a"}, ["a", "b"], split="train")  # the classes' order gives the ids
    assert [int(c) for c in parse_yolo(other["labels"].iloc[0])[0]] == [1, 0]
    with pytest.raises(FileNotFoundError):
        yolo.load(root, class_map, list(CLASSES), split="val")
    with pytest.raises(ValueError, match="unknown classes"):
        yolo.load(root, {0: "tram"}, list(CLASSES), split="train")
