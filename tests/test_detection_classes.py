"""Any classes: a detection entry learns, scores, reports and checks the classes its entry lists."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from deepflow import config, usecase, validation
from deepflow.kinds.detection.labels import format_yolo
from tests.entries import write_entry

CLASSES = ["cat", "kite"]  # arbitrary names, two of them: nothing of a fixed class list
FILL = {0: (220, 40, 40), 1: (40, 60, 220)}
SIZE = 64
SETTINGS = {"candidates": ["shallow"], "model": {"img_size": SIZE, "shallow_width": 8},
            "train": {"epochs": 1, "batch_size": 8}, "coco": {"enabled": False}}


def shape_row(split: str, i: int) -> dict:
    """One frame: grey noise with a red square (cat) and, every other frame, a blue bar (kite)."""
    rng = np.random.default_rng([7, len(split), i])
    pixels = rng.integers(100, 140, (SIZE, SIZE, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    classes, boxes = [], []
    for c in (0, 1) if i % 2 else (0,):
        w, h = (int(v) for v in rng.integers(12, 24, 2))
        if c == 1:
            w = min(2 * w, SIZE - 2)
        x, y = int(rng.integers(0, SIZE - w)), int(rng.integers(0, SIZE - h))
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=FILL[c])
        classes.append(c)
        boxes.append([(x + w / 2) / SIZE, (y + h / 2) / SIZE, w / SIZE, h / SIZE])
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return {"image_id": f"{split}-{i:03d}", "image": buf.getvalue(), "width": SIZE, "height": SIZE,
            "labels": format_yolo(np.array(classes), np.array(boxes).reshape(-1, 4))}


@pytest.fixture(scope="module")
def shape_splits() -> dict[str, pd.DataFrame]:
    return {split: pd.DataFrame([shape_row(split, i) for i in range(n)])
            for split, n in (("train", 16), ("val", 4), ("test", 4))}


@pytest.fixture
def shapes(datasets: Path, tmp_path: Path, shape_splits) -> usecase.UseCase:
    """Entry ``shapes``: the two classes, its prepared splits in tmp_path."""
    prepared = tmp_path / "shapes"
    prepared.mkdir()
    for split, frame in shape_splits.items():
        frame.to_parquet(prepared / f"{split}.parquet", index=False)
    write_entry(datasets, "shapes", "detection", {"classes": CLASSES, "prepared_dir": str(prepared), **SETTINGS},
                description="made-up shapes", default=False)
    return usecase.get("shapes")


def contract(uc: usecase.UseCase, splits: dict[str, pd.DataFrame]) -> validation.ValidationReport:
    return validation.validate(f"{uc.name}.test", *uc.validation_inputs(splits))


def test_an_entry_with_two_classes_trains_scores_and_names_them(shapes) -> None:
    from deepflow.batch import Model
    from deepflow.drift.report import DriftConfig
    from deepflow.kinds.detection import batch, drift

    uc = shapes
    assert uc.schema() == {"kind": "detection", "classes": CLASSES}
    assert uc.summary_metrics == ("map50", "map", "ap50_cat", "ap50_kite")
    splits = uc.load_splits()
    report = contract(uc, splits)
    assert report.success, report.to_markdown()

    scorer, info = uc.fit("shallow", "candidate", splits, fast_dev_run=True)
    assert info["steps"] == 1 and scorer.classes == CLASSES
    assert scorer.net.head[-1].out_channels == 5 + len(CLASSES)
    scorer.min_score = 0.0  # an untrained net: keep every box, so there are names to check
    dets = scorer.predict(splits["test"][["image"]])
    assert len(dets) and set(dets["class"]) <= set(CLASSES)
    found = uc.evaluate(dets, splits["test"])
    assert {"ap50_cat", "ap50_kite"} <= set(found) and 0 <= found["map50"] <= 1
    assert {k for k in found if k.startswith("ap_")} == {"ap_cat", "ap_kite"}
    figs = uc.figures("shallow", dets, splits["test"], uc.threshold(dets, splits["test"]))
    assert set(figs) == {"plots/detections.png", "plots/pr_curves.png", "plots/counts_per_frame.png"}

    model = Model("shapes", "detection", "1", None, scorer, 0.0)
    out, rejects = batch.score(model, splits["test"][["image"]])
    assert list(out.columns) == list(batch.outputs(model)) == ["threshold", "detections", "count_cat", "count_kite"]
    assert rejects.empty and (out["count_cat"] + out["count_kite"]).tolist() == [
        len(json.loads(d)) for d in out["detections"]]

    report = drift.detect(splits["train"], splits["test"], DriftConfig(), scorer, use_case="shapes", threshold=0.0)
    shares = next(s for s in report.signals if s.name == "detected_classes").detail  # "kite 60%->55%, ..."
    named = [part.split()[0] for part in shares.split(" (chi2")[0].split(", ")]
    assert named and set(named) <= set(CLASSES), shares
    found = drift.detected(scorer, list(splits["test"]["image"]), 0.0)
    assert drift.detections(found, 4, scorer.classes)[2].shape == (len(CLASSES),)


def test_the_contract_names_an_id_outside_the_classes_and_a_class_missing_from_train(shapes,
                                                                                     shape_splits) -> None:
    bad = {k: v.copy() for k, v in shape_splits.items()}
    train = bad["train"]
    train.at[3, "labels"] = "2 0.5 0.5 0.2 0.2\n"  # id 2: there are only two classes
    train["labels"] = train["labels"].str.replace(r"(?m)^1 ", "0 ", regex=True)  # no kite left in train
    report = contract(shapes, bad)
    lines = [f.line() for f in report.failures]
    unknown = next(f for f in report.failures if f.column == "class_name")
    assert unknown.examples == ["unknown class id 2"] and unknown.rows == ["train/train-003"], lines
    rare = next(f for f in report.failures if f.column == "train_boxes")
    assert rare.rows == ["kite"] and "at ['kite']" in rare.line(), lines
    assert len(report.failures) == 2, lines


@pytest.mark.parametrize(("config_", "message"), [
    ({}, "config.classes is not set"),
    ({"classes": ["cat", "kite", "cat"]}, "names 'cat' more than once"),
    ({"classes": ["cat", " "]}, r"config.classes\[1\] is blank"),
    ({"classes": CLASSES, "model": {"img_size": 100}}, "not a positive multiple of 32"),
    ({"classes": CLASSES, "class_ids": {7: 2}}, "class_ids maps 7 to 2"),
    ({"classes": CLASSES, "duplicates": "keep"}, "duplicates"),
])
def test_a_bad_detection_entry_is_one_line_naming_the_file(datasets: Path, config_: dict, message: str) -> None:
    path = write_entry(datasets, "shapes", "detection", {"prepared_dir": "x", **config_})
    with pytest.raises(config.ConfigError, match=message) as info:
        usecase.get("shapes")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_classes_are_the_entrys_identity(shapes) -> None:
    with pytest.raises(config.ConfigError, match="identity"):
        usecase.get("shapes", ["classes=[dog,kite]"])
