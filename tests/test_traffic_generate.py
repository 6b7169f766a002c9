"""Synthetic traffic scenes: seeded, labelled inside the frame, every class, decodable shards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepflow import usecase
from deepflow.kinds.detection.labels import decode, parse_yolo, pixel_boxes
from deepflow.usecases.traffic.generate import CLASSES, GenerateParams, frame_row, generate, write

TINY = GenerateParams(n_train=32, n_val=8, n_test=8, width=96, height=96, seed=3)


@pytest.fixture(scope="session")
def traffic_splits() -> dict[str, pd.DataFrame]:
    """48 small frames (96 px): enough for contracts and one-batch training."""
    return generate(TINY)


@pytest.fixture
def traffic_dir(tmp_path, traffic_splits):
    out = tmp_path / "traffic"
    write(traffic_splits, out)
    return out


def test_same_seed_same_frame_and_seeds_differ() -> None:
    a, b = frame_row(TINY, "train", 5), frame_row(TINY, "train", 5)
    assert a["image"] == b["image"] and a["labels"] == b["labels"]
    assert frame_row(TINY, "test", 5)["image"] != a["image"]


def test_frames_decode_at_their_size_with_boxes_inside(traffic_splits) -> None:
    for frame in traffic_splits.values():
        for data, text, w, h in zip(frame["image"], frame["labels"], frame["width"], frame["height"], strict=True):
            assert decode(data).size == (w, h) == (96, 96)
            cls, boxes = pixel_boxes(text, w, h)
            assert ((boxes[:, :2] >= -1e-3) & (boxes[:, 2:] <= 96 + 1e-3)).all()
            assert (boxes[:, 2:] > boxes[:, :2]).all() and ((cls >= 0) & (cls < len(CLASSES))).all()


def test_the_entry_lists_the_generators_classes_in_its_order() -> None:
    """Class ids in the prepared labels index the entry's classes: the same six, the same order."""
    cfg = usecase.get("traffic").cfg
    assert cfg.classes == list(CLASSES) and usecase.get("traffic").schema()["classes"] == list(CLASSES)


def test_scenes_vary_and_every_class_appears(traffic_splits) -> None:
    train = traffic_splits["train"]
    classes = np.concatenate([parse_yolo(t)[0] for t in train["labels"]])
    assert set(classes) == set(range(len(CLASSES)))
    assert train["lighting"].nunique() == 3 and train["weather"].nunique() == 3
    per_image = train["labels"].str.count("\n")
    assert per_image.max() >= 10  # crowded frames
    sides = np.concatenate([parse_yolo(t)[1][:, 3] for t in train["labels"]]) * 96
    assert sides.min() < 12 and sides.max() > 40  # far and near objects
