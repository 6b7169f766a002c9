"""Typed defaults of the ``detection`` kind; an entry's ``config:`` and ``key=value`` override them.

Any YOLO-format image folder is an entry (``datasets/<name>.yaml``, ``kind: detection``):
``prepared_dir`` holds the prepared splits (``labels.py``); ``classes`` (the entry's identity: the
class names, index = class id in the prepared labels) comes from the entry file only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from deepflow.promotion import PromotionConfig
from deepflow.validation import ContractConfig


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
    threads: int = 0  # torch intra-op threads; 0 = one per free CPU, chosen per fit (deepflow/threads.py)
    devices: int = 1  # processes (CPU) or GPUs per node; > 1 trains with DDP in its own job (deepflow/distributed.py)
    nodes: int = 1  # hosts of a multi-node DDP job (torchrun on each; docs/team.md)


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
class SplitConfig:
    """Shares of a content-hash split, used by prepare when the folder has no split of its own."""

    val: float = 0.15
    test: float = 0.15
    seed: int = 0  # salt of the content hash (changing it reshuffles the split)


@dataclass
class DetectionConfig:
    IDENTITY_KEYS: ClassVar[tuple[str, ...]] = ("classes",)

    classes: list[str] = field(default_factory=list)  # class names; index = class id in the prepared labels
    source: str = ""  # the user's folder copy, project-relative; "" for generated data
    prepared_dir: str = ""
    budget_s: float | None = None  # wall clock of a whole `deepflow run`; None = no limit
    # identical images in two splits: "drop" (prepare drops the later copies, in split order train,
    # val, test, and records them) or "fail" (left in place: the contract fails)
    duplicates: str = "drop"
    class_ids: dict[int, int] = field(default_factory=dict)  # source class id -> index into classes; {} = identity
    split: SplitConfig = field(default_factory=SplitConfig)
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
    contract: ContractConfig = field(default_factory=ContractConfig)  # checks against the data's history
