"""The ``detection`` kind's use case, wired for the pipeline: frames, contract, detectors, mAP, figures.

Scores are detection frames (one row per box, see ``scorer.py``); every metric takes them with
the split they were predicted on. The classes are the entry's (``config.classes``): the networks'
outputs, the contract, the per-class AP and the scorer's names all follow them.
"""

from __future__ import annotations

import math

import pandas as pd

from deepflow import stats, training, usecase
from deepflow.config import ConfigError
from deepflow.kinds.detection import figures, metrics
from deepflow.kinds.detection.config import DetectionConfig

SPLITS = ("train", "val", "test")
# After a member's fit (steps.train_member): 205 single-image latency probes, val and test predicted,
# the batch-32 throughput (twice 32 test images), then figures, the model logged and the splits read.
LATENCY_PROBES = 205
AFTER_FIT_FIXED_S = 8.0
AFTER_FIT_MARGIN = 1.15
CANDIDATES = ("shallow", "deep")
DUPLICATES = ("drop", "fail")


class DetectionUseCase(usecase.UseCase):
    kind = "detection"
    primary_metric = "map50"  # logged as val/map50 and test/map50
    families = {"shallow": "shallow", "deep": "deep"}
    reproduce_tolerance = 0.02  # mAP@0.5 across four CPUs spread over 0.019 (docs/reproduce.md)

    @staticmethod
    def compare_predictions(registered: pd.DataFrame, rebuilt: pd.DataFrame) -> dict:
        from deepflow.kinds.detection.boxes import agreement

        return agreement(registered, rebuilt)

    def __init__(self, entry: usecase.Entry, cfg: DetectionConfig) -> None:
        super().__init__(entry, cfg)
        if not cfg.classes:
            raise ConfigError(f"{entry.path}: config.classes is not set; list the class names, in class-id order "
                              f"(e.g. classes: [cat, dog])")
        if blank := [i for i, c in enumerate(cfg.classes) if not c.strip()]:
            raise ConfigError(f"{entry.path}: config.classes[{blank[0]}] is blank; give every class a name")
        if repeated := sorted({c for c in cfg.classes if cfg.classes.count(c) > 1}):
            raise ConfigError(f"{entry.path}: config.classes names {repeated[0]!r} more than once; "
                              f"each class needs its own name")
        if bad := {s: t for s, t in cfg.class_ids.items() if not 0 <= t < len(cfg.classes)}:
            src, dst = next(iter(bad.items()))
            raise ConfigError(f"{entry.path}: config.class_ids maps {src} to {dst}, outside classes "
                              f"(0..{len(cfg.classes) - 1})")
        sp = cfg.split
        if not (0 <= sp.val < 1 and 0 <= sp.test < 1 and sp.val + sp.test < 1):
            raise ConfigError(f"{entry.path}: config.split: val {sp.val} and test {sp.test} must be shares in [0, 1) "
                              f"that leave some images to train on")
        if cfg.duplicates not in DUPLICATES:
            raise ConfigError(f"{entry.path}: config.duplicates: {cfg.duplicates!r} is not one of {DUPLICATES}")
        if not cfg.prepared_dir:
            raise ConfigError(f"{entry.path}: config.prepared_dir is not set")
        if unknown := [n for n in cfg.candidates if n not in CANDIDATES]:
            raise ConfigError(f"candidates: unknown {unknown[0]!r} (known: {', '.join(CANDIDATES)})")
        if cfg.baselines:
            raise ConfigError("baselines: the detection kind has none (candidates only)")
        if cfg.model.img_size < 32 or cfg.model.img_size % 32:
            raise ConfigError(f"{entry.path}: model.img_size: {cfg.model.img_size} is not a positive multiple of "
                              f"32; use e.g. {max(32, round(cfg.model.img_size / 32) * 32)}")
        if cfg.budget_s is not None and cfg.budget_s <= 0:
            raise ConfigError(f"{entry.path}: config.budget_s must be positive, got {cfg.budget_s}")

    @property
    def summary_metrics(self) -> tuple[str, ...]:  # the CLI's table: mAP, then AP@0.5 per class
        return ("map50", "map", *(f"ap50_{c}" for c in self.cfg.classes))

    # --- data ---------------------------------------------------------------------------------

    def schema(self) -> dict:
        return {"kind": self.kind, "classes": list(self.cfg.classes)}  # img_size: the model's, not the data's

    def load_splits(self) -> dict[str, pd.DataFrame]:
        return usecase.read_splits(self.name, self.prepared_dir, SPLITS)

    def validation_inputs(self, splits: dict[str, pd.DataFrame]) -> tuple[dict, dict]:
        from deepflow.kinds.detection import expectations

        return expectations.frames(splits, self.cfg.classes), expectations.suites(self.cfg)

    def members(self) -> list[tuple[str, str]]:
        return [(c, "candidate") for c in self.cfg.candidates]

    # --- training -----------------------------------------------------------------------------

    def fit(self, name: str, kind: str, splits: dict[str, pd.DataFrame], log=None, fast_dev_run: bool = False,
            time_limit_s: float | None = None):
        """Train one detector; returns (scorer, info). ``time_limit_s`` covers decoding the frames too."""
        import time

        from deepflow.kinds.detection.models import build_net
        from deepflow.kinds.detection.scorer import DetectorScorer, to_tensors
        from deepflow.kinds.detection.system import DetectorSystem

        started = time.perf_counter()
        cfg, t, m = self.cfg, self.cfg.train, self.cfg.model
        if kind != "candidate":
            raise ValueError(f"{self.name}: a detection entry trains candidates only, not {kind!r}")
        if t.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {t.batch_size}")
        training.seed_everything(t.seed, t.threads)
        net = build_net(name, len(cfg.classes), m)
        x_train, y_train = to_tensors(splits["train"], m.img_size)
        x_val, y_val = to_tensors(splits["val"], m.img_size)
        steps_per_epoch = math.ceil(len(x_train) / t.batch_size)
        limit = None if time_limit_s is None else time_limit_s - (time.perf_counter() - started)
        system = DetectorSystem(  # with a time limit the LR schedule follows the clock (system.py)
            net, splits["val"], m.img_size, cfg.classes, lr=t.lr, weight_decay=t.weight_decay,
            total_steps=t.epochs * steps_per_epoch, augment_cfg=cfg.augment,
            box_weight=t.box_weight, iou_kind=t.iou_loss, seed=t.seed, steps_per_epoch=steps_per_epoch,
            time_limit_s=limit,
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
            time_limit_s=limit,
            devices=t.devices, nodes=t.nodes,
        )
        info = {
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "steps": result.steps,
            "fit_seconds": result.seconds,
            "train_images_per_s": result.steps * t.batch_size / max(result.seconds, 1e-9),
            "parameters": sum(p.numel() for p in net.parameters()),
        }
        if system.resized:  # the schedule was re-sized to the epochs the time limit allowed
            info["schedule_epochs"] = system.resized[-1] / steps_per_epoch
        scorer = DetectorScorer(net, m.img_size, cfg.classes, min_score=m.min_score, iou=m.nms_iou, max_det=m.max_det)
        return scorer, info

    def after_fit_estimate_s(self, member: str) -> float:
        """Seconds a member's evaluation will take (a run's budget keeps them, and twice that for the
        promotion): the images it predicts one by one or in batches, at the single-image pace of the
        member's network measured here and now on the test split's first image."""
        import pyarrow.parquet as pq

        rows = {s: pq.ParquetFile(self.prepared_dir / f"{s}.parquet").metadata.num_rows for s in ("val", "test")}
        first = next(pq.ParquetFile(self.prepared_dir / "test.parquet").iter_batches(batch_size=1, columns=["image"]))
        # val and test predicted once, test again for the model card (with class scores, reports())
        images = LATENCY_PROBES + rows["val"] + 2 * rows["test"] + 2 * min(32, rows["test"])
        return AFTER_FIT_FIXED_S + AFTER_FIT_MARGIN * images * self.single_image_s(member, first.column(0)[0].as_py())

    def single_image_s(self, member: str, image: bytes, repeats: int = 4) -> float:
        """Mean seconds of one prediction (decode, letterbox, network, NMS) of ``image`` by an untrained
        ``member``."""
        import time

        from deepflow.kinds.detection.models import build_net
        from deepflow.kinds.detection.scorer import DetectorScorer

        m = self.cfg.model
        one = pd.DataFrame({"image": [image]})
        scorer = DetectorScorer(build_net(member, len(self.cfg.classes), m), m.img_size, self.cfg.classes,
                                min_score=m.min_score, iou=m.nms_iou, max_det=m.max_det)
        scorer.predict(one)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            scorer.predict(one)
        return (time.perf_counter() - start) / repeats

    # --- evaluation ---------------------------------------------------------------------------

    def evaluate(self, scores: pd.DataFrame, frame: pd.DataFrame) -> dict[str, float]:
        """COCO mAP@0.5, mAP@0.5:0.95 and per-class AP (faster-coco-eval)."""
        out = metrics.coco_metrics(frame, scores, self.cfg.classes)
        out["detections_per_image"] = len(scores) / max(len(frame), 1)
        return out

    def primary_interval(self, scores: pd.DataFrame, frame: pd.DataFrame) -> stats.Interval:
        """Bootstrap interval of test mAP@0.5 over test images (seeded by the promotion policy)."""
        p = self.cfg.promotion
        return metrics.bootstrap_map50(metrics.Matched(frame, scores, self.cfg.classes), resamples=p.resamples,
                                       confidence=p.confidence, seed=p.seed)

    def primary_gain(self, challenger: pd.DataFrame, champion: pd.DataFrame, frame: pd.DataFrame) -> stats.Interval:
        """Paired-bootstrap interval of mAP@0.5(challenger) - mAP@0.5(champion) on the same images."""
        p = self.cfg.promotion
        classes = self.cfg.classes
        return metrics.paired_bootstrap_map50(metrics.Matched(frame, challenger, classes),
                                              metrics.Matched(frame, champion, classes),
                                              resamples=p.resamples, confidence=p.confidence, seed=p.seed)

    def threshold(self, val_scores: pd.DataFrame, val: pd.DataFrame) -> float:
        """Score from which a detection is reported (counts, grids): best pooled F1 at IoU 0.5 on val."""
        if self.cfg.threshold is not None:
            return self.cfg.threshold
        return metrics.best_f1_threshold(metrics.Matched(val, val_scores, self.cfg.classes))

    def figures(self, member: str, scores: pd.DataFrame, frame: pd.DataFrame, threshold: float):
        title, classes = f"{self.name} {member}", self.cfg.classes
        counts, _ = figures.counts_per_frame(frame, scores, threshold, f"{title}: objects per test frame", classes)
        return {
            "plots/detections.png": figures.detection_grid(frame, scores, threshold, f"{title}: test frames", classes),
            "plots/pr_curves.png": figures.pr_curves(metrics.Matched(frame, scores, classes),
                                                     f"{title}: test PR (IoU 0.5)"),
            "plots/counts_per_frame.png": counts,
        }

    def reports(self, member: str, scorer, scores: pd.DataFrame, frame: pd.DataFrame) -> dict:
        """The model card's "what the model relies on": a detector's boxes are its explanation, so
        per class how sure it is of them (``predict(explain=True)``: objectness and every class's
        score) and how often that confidence was right on the test split."""
        found = scorer.predict(frame, explain=True)
        threshold = self.cfg.threshold if self.cfg.threshold is not None else 0.25
        matched = metrics.Matched(frame, found, self.cfg.classes)
        return figures.confidence_report(member, found, matched.tp50, threshold, self.cfg.classes)

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

        real = yolo.load(root, c.class_map, self.cfg.classes)
        found = metrics.coco_metrics(real, scorer.predict(real), self.cfg.classes)
        out |= {f"coco/{k}": v for k, v in found.items() if k in ("map50", "map") or k.startswith("ap50_")}
        return out | {"coco/images": float(len(real)), "coco/boxes": float(real["labels"].str.count("\n").sum())}
