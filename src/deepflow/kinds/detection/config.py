"""Typed defaults of the ``detection`` kind; an entry's ``config:`` and ``key=value`` override them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from deepflow.promotion import PromotionConfig


@dataclass
class AugmentConfig:
    """Training-time augmentation (augment.py); lives here so the config imports no torch."""

    flip: float = 0.5  # probability of a horizontal flip
    scale_min: float = 0.7  # zoom range (<1 shrinks the scene, >1 crops into it)
    scale_max: float = 1.4
    brightness: float = 0.3  # multiplicative jitter, +-
    contrast: float = 0.3
    saturation: float = 0.4
    min_kept: float = 0.4  # a cropped box keeps its label if this share of it stays in frame


@dataclass
class TrainConfig:
    epochs: int = 9
    batch_size: int = 32
    lr: float = 3e-3  # peak of a one-cycle schedule
    weight_decay: float = 5e-4
    patience: int = 4  # epochs without a better val/map50 before stopping
    box_weight: float = 5.0
    iou_loss: str = "ciou"  # iou, giou, diou or ciou
    seed: int = 42
    threads: int = 0  # torch intra-op threads; 0 = torch's default


@dataclass
class ModelConfig:
    img_size: int = 160  # network input (square letterbox); a multiple of 32
    shallow_width: int = 32
    deep_width: int = 16
    deep_depth: int = 1
    min_score: float = 0.01  # detections kept for mAP; the reporting threshold is separate
    nms_iou: float = 0.6
    max_det: int = 100


@dataclass
class CocoConfig:
    """The real-data sample scored after training: the domain-gap figure (``coco/map50``)."""

    enabled: bool = False
    root: str = ""
    # its YOLO class ids (COCO's 80) -> deepflow classes; other classes are dropped
    class_map: dict[int, str] = field(default_factory=dict)


@dataclass
class DetectionConfig:
    # The classes are the kind's fixed six (labels.py) until they come from the dataset (issue 15):
    # then `classes` joins the identity, as `labels` did for text.
    IDENTITY_KEYS: ClassVar[tuple[str, ...]] = ()

    prepared_dir: str = ""
    candidates: list[str] = field(default_factory=lambda: ["shallow", "deep"])
    baselines: list[str] = field(default_factory=list)
    register_baselines: bool = False
    max_boxes_per_image: int = 40  # data contract: boxes per image within [0, this]
    min_box_px: float = 1.0  # data contract: box width and height at least this
    threshold: float | None = None  # reporting score threshold; None = best F1 on val
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    coco: CocoConfig = field(default_factory=CocoConfig)
    promotion: PromotionConfig = field(  # 10 frames/s at batch 1 with decode and NMS; small model
        default_factory=lambda: PromotionConfig(floor=0.3, max_latency_p95_ms=100.0, max_size_mb=20.0))
