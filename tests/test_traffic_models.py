"""Detector units: shapes, assignment, augmentation geometry, the scorer's contract, a smoke fit."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from deepflow import usecase
from deepflow.kinds.detection.augment import AugmentConfig, augment, hflip, scale_crop
from deepflow.kinds.detection.config import ModelConfig
from deepflow.kinds.detection.loss import assign, detection_loss
from deepflow.kinds.detection.models import build_net, decode_boxes, detect, grid
from deepflow.kinds.detection.scorer import DetectorScorer, letterbox, to_tensors
from deepflow.usecases.traffic.generate import CLASSES
from tests.test_traffic_generate import traffic_dir, traffic_splits  # noqa: F401 (fixtures)

K = len(CLASSES)
TARGETS = torch.tensor([[[0, 10.0, 12.0, 30.0, 28.0], [5, 40.0, 20.0, 48.0, 60.0], [-1, -1, -1, -1, -1]],
                        [[2, 0.0, 30.0, 96.0, 90.0], [-1, -1, -1, -1, -1], [-1, -1, -1, -1, -1]]])


@pytest.mark.parametrize(("name", "levels"), [("shallow", [(12, 12)]), ("deep", [(12, 12), (6, 6), (3, 3)])])
def test_networks_map_images_to_per_level_grids(name: str, levels: list) -> None:
    net = build_net(name, K, ModelConfig())
    maps = net(torch.rand(2, 3, 96, 96))
    assert [tuple(m.shape) for m in maps] == [(2, 5 + K, h, w) for h, w in levels]
    loss, parts = detection_loss(maps, TARGETS, net.strides)
    assert torch.isfinite(loss) and set(parts) == {"box", "obj", "cls"}
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_every_box_gets_positive_cells_on_its_level() -> None:
    maps = build_net("deep", K, ModelConfig())(torch.rand(2, 3, 96, 96))
    points, strides = grid(maps, (8, 16, 32))
    positive, index = assign(TARGETS, points, strides, (8, 16, 32))
    for b, m in ((0, 0), (0, 1), (1, 0)):
        cells = positive[b] & (index[b] == m)
        assert cells.any()
        side = (TARGETS[b, m, 3:] - TARGETS[b, m, 1:3]).max()
        expected = 8 if side <= 40 else 16 if side <= 80 else 32
        assert (strides[cells] == expected).all()
        x1, y1, x2, y2 = TARGETS[b, m, 1:]
        inside = (points[cells, 0] > x1) & (points[cells, 0] < x2) & (points[cells, 1] > y1) & (points[cells, 1] < y2)
        assert inside.all()
    assert positive[1].sum() < positive.shape[1]  # padding rows assign nothing


def test_decoding_inverts_exact_distances() -> None:
    points, strides = torch.tensor([[20.0, 20.0]]), torch.tensor([8.0])
    ltrb = torch.tensor([[[10.0, 8.0, 6.0, 4.0]]]) / 8  # softplus^-1(y) = log(exp(y) - 1)
    raw = torch.log(torch.expm1(ltrb))
    assert torch.allclose(decode_boxes(raw, points, strides), torch.tensor([[[10.0, 12.0, 26.0, 24.0]]]), atol=1e-4)


def test_flip_and_crop_move_boxes_with_the_pixels() -> None:
    img = torch.zeros(1, 3, 64, 64)
    img[..., 10:20, 4:12] = 1.0  # a white block at x 4..12, y 10..20
    t = torch.tensor([[[1, 4.0, 10.0, 12.0, 20.0]]])
    flipped, ft = hflip(img, t, torch.tensor([True]))
    assert ft[0, 0, 1:].tolist() == [52.0, 10.0, 60.0, 20.0] and flipped[0, 0, 15, 52:60].min() == 1
    zoomed, zt = scale_crop(img, t, torch.tensor([2.0]), torch.tensor([[-0.5, -0.5]]), 0.4)
    x1, y1, x2, y2 = zt[0, 0, 1:].round().int().tolist()  # input window x,y in [0, 32): doubled
    assert (x1, y1, x2, y2) == (8, 20, 24, 40)
    assert zoomed[0, 0, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].min() > 0.95
    out, gone = scale_crop(img, t, torch.tensor([2.0]), torch.tensor([[0.5, 0.5]]), 0.4)
    assert gone[0, 0, 0] == -1  # cropped out of frame: becomes padding
    g = torch.Generator().manual_seed(0)
    images, targets = augment(torch.rand(4, 3, 64, 64), TARGETS[:, :, :].repeat(2, 1, 1) / 1.5, AugmentConfig(), g)
    assert images.shape == (4, 3, 64, 64) and 0 <= images.min() and images.max() <= 1
    kept = targets[targets[..., 0] >= 0]
    assert ((kept[:, 1:] >= 0) & (kept[:, 1:] <= 64)).all()


def _jpeg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_scorer_takes_encoded_images_and_returns_boxes_in_their_pixels() -> None:
    canvas, scale, size = letterbox(_jpeg(200, 100), 96)
    assert canvas.shape == (96, 96, 3) and scale == pytest.approx(0.48) and size == (200, 100)
    assert (canvas[60:, :, :] == 114).all()  # padded below the resized image
    net = build_net("shallow", K, ModelConfig())
    with torch.no_grad():
        net.head[-1].bias[4:] = 5.0  # confident everywhere: plenty of boxes to check
    scorer = DetectorScorer(net, 96, CLASSES, max_det=50)
    out = scorer.predict(pd.DataFrame({"image": [_jpeg(200, 100), _jpeg(64, 120)]}))
    assert list(out.columns) == ["image", "x1", "y1", "x2", "y2", "class", "score"]
    assert set(out["image"]) == {0, 1} and out.groupby("image").size().max() <= 50
    for i, (w, h) in enumerate([(200, 100), (64, 120)]):
        mine = out[out["image"] == i]
        assert mine[["x1", "x2"]].to_numpy().max() <= w and mine[["y1", "y2"]].to_numpy().max() <= h
    assert set(out["class"]) <= set(CLASSES) and out["score"].between(0, 1).all()
    empty = DetectorScorer(build_net("shallow", K, ModelConfig()), 96, CLASSES, min_score=1.1).predict(
        pd.DataFrame({"image": [_jpeg(50, 50)]}))
    assert empty.empty and list(empty.columns) == list(out.columns)


def test_training_tensors_follow_the_letterbox(traffic_splits) -> None:  # noqa: F811
    frame = traffic_splits["val"]
    x, t = to_tensors(frame, 64)  # 96 px frames -> 64 px: boxes scale by 2/3
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.uint8
    n = frame["labels"].str.count("\n")
    assert ((t[..., 0] >= 0).sum(1).tolist()) == n.tolist()
    assert t[t[..., 0] >= 0][:, 1:].max() <= 64 + 1e-3


@pytest.mark.parametrize("name", ["shallow", "deep"])
def test_fit_one_batch_returns_a_working_scorer(traffic_dir, name: str) -> None:  # noqa: F811
    uc = usecase.get("traffic", [f"prepared_dir={traffic_dir}", "model.img_size=64", "coco.enabled=false"])
    splits = uc.load_splits()
    scorer, info = uc.fit(name, "candidate", splits, fast_dev_run=True)
    assert info["steps"] == 1 and info["parameters"] > 1000 and scorer.classes == list(CLASSES)
    dets = scorer.predict(uc.input_example(splits["test"]))
    assert {"image", "x1", "y1", "x2", "y2", "class", "score"} == set(dets.columns)
    found = uc.evaluate(dets if len(dets) else dets, splits["test"].head(3))
    assert 0 <= found["map50"] <= 1 and 0 <= found["map"] <= found["map50"] + 1e-9


def test_mlflow_signature_takes_bytes_and_returns_detections(traffic_splits) -> None:  # noqa: F811
    from mlflow.models import infer_signature

    uc = usecase.get("traffic")
    example = uc.input_example(traffic_splits["test"])
    net = build_net("shallow", K, ModelConfig())
    signature = infer_signature(example, DetectorScorer(net, 96, CLASSES).predict(example))
    assert signature.inputs.to_dict() == [{"type": "binary", "name": "image", "required": True}]
    assert {c["name"]: c["type"] for c in signature.outputs.to_dict()}["class"] == "string"


def test_detect_keeps_at_most_max_det_per_image() -> None:
    net = build_net("deep", K, ModelConfig()).eval()
    with torch.no_grad():
        for head in net.heads:
            head[-1].bias[4:] = 5.0
        found = detect(net, torch.rand(2, 3, 96, 96), max_det=7)
    assert [len(b) for b, _, _ in found] == [7, 7]
