"""Box ops written in torch: IoU family against hand-computed values, NMS against a brute force."""

from __future__ import annotations

import math

import pytest
import torch

from deepflow.kinds.detection.boxes import aligned_iou, batched_nms, box_iou, cxcywh_to_xyxy, nms, xyxy_to_cxcywh

A = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
B = torch.tensor([[1.0, 1.0, 3.0, 3.0]])  # overlap 1, union 7, enclosing 3x3


def test_box_iou_hand_computed() -> None:
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0]])
    iou = box_iou(boxes, boxes)
    assert iou.shape == (3, 3)
    assert torch.allclose(iou.diagonal(), torch.ones(3))
    assert iou[0, 1].item() == pytest.approx(1 / 7) and iou[0, 2].item() == 0
    assert torch.allclose(iou, iou.T)


def test_giou_diou_ciou_hand_computed() -> None:
    assert aligned_iou(A, B, "giou").item() == pytest.approx(1 / 7 - (9 - 7) / 9, abs=1e-6)
    # centres (1, 1) and (2, 2): squared distance 2; enclosing diagonal squared 18
    assert aligned_iou(A, B, "diou").item() == pytest.approx(1 / 7 - 2 / 18, abs=1e-6)
    # same aspect ratio: CIoU's shape term vanishes
    assert aligned_iou(A, B, "ciou").item() == pytest.approx(1 / 7 - 2 / 18, abs=1e-6)
    wide = torch.tensor([[0.0, 0.0, 4.0, 1.0]])
    assert aligned_iou(A, wide, "ciou").item() < aligned_iou(A, wide, "diou").item()
    far = torch.tensor([[10.0, 10.0, 11.0, 11.0]])  # disjoint: GIoU still ranks nearer boxes higher
    assert aligned_iou(A, far, "giou").item() < aligned_iou(A, B + 1.5, "giou").item() < 0
    assert aligned_iou(A, A, "ciou").item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="unknown IoU kind"):
        aligned_iou(A, B, "eiou")


def test_ciou_gradient_moves_box_towards_target() -> None:
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0]], requires_grad=True)
    (1 - aligned_iou(pred, B, "ciou")).sum().backward()
    assert (pred.grad[0, 2:] < 0).all()  # loss falls as the far corner moves to (3, 3)


def test_format_round_trip() -> None:
    b = torch.rand(20, 4) * 50
    b[:, 2:] += b[:, :2]
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b, atol=1e-5)


def _reference_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    order, keep = sorted(range(len(scores)), key=lambda i: -scores[i].item()), []
    for i in order:
        if all(box_iou(boxes[i : i + 1], boxes[j : j + 1]).item() <= thr for j in keep):
            keep.append(i)
    return keep


def test_nms_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(80, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + 5 + torch.rand(80, 2, generator=g) * 30], 1)
    scores = torch.rand(80, generator=g)
    for thr in (0.3, 0.5, 0.7):
        assert nms(boxes, scores, thr).tolist() == _reference_nms(boxes, scores, thr)


def test_batched_nms_only_suppresses_within_a_class() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 0, 1]), 0.5).tolist() == [0, 2]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    assert math.isclose(box_iou(A, A).item(), 1.0, rel_tol=1e-6)
