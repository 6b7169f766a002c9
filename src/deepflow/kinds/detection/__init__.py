"""The ``detection`` kind: object detection: images with YOLO-style boxes."""

from deepflow.kinds import Parts

PARTS = Parts(
    kind="detection",
    usecase="deepflow.kinds.detection.usecase:DetectionUseCase",
    config="deepflow.kinds.detection.config:DetectionConfig",
    serving="deepflow.kinds.detection.serving",
    batch="deepflow.kinds.detection.batch",
    drift="deepflow.kinds.detection.drift",
)
