"""The ``detection`` kind's use case, wired for the pipeline: frames, contract, detectors, mAP, figures.

Scores are detection frames (one row per box, see ``scorer.py``); every metric takes them with
the split they were predicted on.
"""

from __future__ import annotations

import math

import pandas as pd

from deepflow import stats, training, usecase
from deepflow.config import ConfigError
from deepflow.kinds.detection import figures, metrics
from deepflow.kinds.detection.config import DetectionConfig
from deepflow.kinds.detection.labels import CLASSES

SPLITS = ("train", "val", "test")
CANDIDATES = ("shallow", "deep")


class DetectionUseCase(usecase.UseCase):
    kind = "detection"
    primary_metric = "map50"  # logged as val/map50 and test/map50
    summary_metrics = ("map50", "map", *(f"ap50_{c}" for c in CLASSES))  # the CLI's table
    families = {"shallow": "shallow", "deep": "deep"}

    def __init__(self, entry: usecase.Entry, cfg: DetectionConfig) -> None:
        super().__init__(entry, cfg)
        if not cfg.prepared_dir:
            raise ConfigError(f"{entry.path}: config.prepared_dir is not set")
        if unknown := [n for n in cfg.candidates if n not in CANDIDATES]:
            raise ConfigError(f"candidates: unknown {unknown[0]!r} (known: {', '.join(CANDIDATES)})")
        if cfg.baselines:
            raise ConfigError("baselines: the detection kind has none (candidates only)")
        if cfg.model.img_size % 32:
            raise ConfigError(f"model.img_size: {cfg.model.img_size} is not a multiple of 32")

    # --- data ---------------------------------------------------------------------------------

    def schema(self) -> dict:
        return {"kind": self.kind, "classes": list(CLASSES)}  # img_size is a setting of the model, not the data

    def load_splits(self) -> dict[str, pd.DataFrame]:
        return usecase.read_splits(self.name, self.prepared_dir, SPLITS)

    def validation_inputs(self, splits: dict[str, pd.DataFrame]) -> tuple[dict, dict]:
        from deepflow.kinds.detection import expectations

        return expectations.frames(splits), expectations.suites(self.cfg)

    def members(self) -> list[tuple[str, str]]:
        return [(c, "candidate") for c in self.cfg.candidates]

    # --- training -----------------------------------------------------------------------------

    def fit(self, name: str, kind: str, splits: dict[str, pd.DataFrame], log=None, fast_dev_run: bool = False,
            time_limit_s: float | None = None):
        """Train one detector; returns (scorer, info)."""
        from deepflow.kinds.detection.models import build_net
        from deepflow.kinds.detection.scorer import DetectorScorer, to_tensors
        from deepflow.kinds.detection.system import DetectorSystem

        cfg, t, m = self.cfg, self.cfg.train, self.cfg.model
        if kind != "candidate":
            raise ValueError(f"{self.name}: a detection entry trains candidates only, not {kind!r}")
        if t.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {t.batch_size}")
        training.seed_everything(t.seed, t.threads)
        net = build_net(name, len(CLASSES), m)
        x_train, y_train = to_tensors(splits["train"], m.img_size)
        x_val, y_val = to_tensors(splits["val"], m.img_size)
        system = DetectorSystem(
            net, splits["val"], m.img_size, lr=t.lr, weight_decay=t.weight_decay,
            total_steps=t.epochs * math.ceil(len(x_train) / t.batch_size), augment_cfg=cfg.augment,
            box_weight=t.box_weight, iou_kind=t.iou_loss, seed=t.seed,
        )
        result = training.fit(
            system,
            training.batches(x_train, y_train, batch_size=t.batch_size, shuffle=True, seed=t.seed),
            training.batches(x_val, y_val, batch_size=64, shuffle=False),
            max_epochs=t.epochs,
            monitor="val/map50",
            patience=t.patience,
            log=log,
            fast_dev_run=fast_dev_run,
            time_limit_s=time_limit_s,
        )
        info = {
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "steps": result.steps,
            "fit_seconds": result.seconds,
            "train_images_per_s": result.steps * t.batch_size / max(result.seconds, 1e-9),
            "parameters": sum(p.numel() for p in net.parameters()),
        }
        scorer = DetectorScorer(net, m.img_size, min_score=m.min_score, iou=m.nms_iou, max_det=m.max_det)
        return scorer, info

    # --- evaluation ---------------------------------------------------------------------------

    def evaluate(self, scores: pd.DataFrame, frame: pd.DataFrame) -> dict[str, float]:
        """COCO mAP@0.5, mAP@0.5:0.95 and per-class AP (faster-coco-eval)."""
        out = metrics.coco_metrics(frame, scores)
        out["detections_per_image"] = len(scores) / max(len(frame), 1)
        return out

    def primary_interval(self, scores: pd.DataFrame, frame: pd.DataFrame) -> stats.Interval:
        """Bootstrap interval of test mAP@0.5 over test images (seeded by the promotion policy)."""
        p = self.cfg.promotion
        return metrics.bootstrap_map50(metrics.Matched(frame, scores), resamples=p.resamples,
                                       confidence=p.confidence, seed=p.seed)

    def primary_gain(self, challenger: pd.DataFrame, champion: pd.DataFrame, frame: pd.DataFrame) -> stats.Interval:
        """Paired-bootstrap interval of mAP@0.5(challenger) - mAP@0.5(champion) on the same images."""
        p = self.cfg.promotion
        return metrics.paired_bootstrap_map50(metrics.Matched(frame, challenger), metrics.Matched(frame, champion),
                                              resamples=p.resamples, confidence=p.confidence, seed=p.seed)

    def threshold(self, val_scores: pd.DataFrame, val: pd.DataFrame) -> float:
        """Score from which a detection is reported (counts, grids): best pooled F1 at IoU 0.5 on val."""
        if self.cfg.threshold is not None:
            return self.cfg.threshold
        return metrics.best_f1_threshold(metrics.Matched(val, val_scores))

    def figures(self, member: str, scores: pd.DataFrame, frame: pd.DataFrame, threshold: float):
        title = f"{self.name} {member}"
        counts, _ = figures.counts_per_frame(frame, scores, threshold, f"{title}: objects per test frame")
        return {
            "plots/detections.png": figures.detection_grid(frame, scores, threshold, f"{title}: test frames"),
            "plots/pr_curves.png": figures.pr_curves(metrics.Matched(frame, scores), f"{title}: test PR (IoU 0.5)"),
            "plots/counts_per_frame.png": counts,
        }

    def input_example(self, frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
        """Encoded images (bytes: MLflow's ``binary``), the one column the model needs."""
        return frame[["image"]].head(3).reset_index(drop=True)

    def extra_metrics(self, scorer) -> dict[str, float]:
        """Batch-32 throughput on test frames, and the domain gap: mAP on the real (COCO) sample."""
        import time

        frames = self.load_splits()["test"][["image"]].head(32)
        scorer.predict(frames)  # warm-up
        start = time.perf_counter()
        scorer.predict(frames)
        out = {"throughput_b32_images_per_s": len(frames) / (time.perf_counter() - start)}
        c = self.cfg.coco
        root = usecase.project_path(c.root)
        if not c.enabled or not root.exists():
            return out
        from deepflow.kinds.detection import yolo

        real = yolo.load(root, c.class_map)
        found = metrics.coco_metrics(real, scorer.predict(real))
        out |= {f"coco/{k}": v for k, v in found.items() if k in ("map50", "map") or k.startswith("ap50_")}
        return out | {"coco/images": float(len(real)), "coco/boxes": float(real["labels"].str.count("\n").sum())}
