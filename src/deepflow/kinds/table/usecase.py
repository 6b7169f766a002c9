"""The ``table`` kind's use case: any table a user brings, binary, multiclass or regression.

The ladder, cheapest first (``members:``): ``linear`` (regularised logistic / ridge regression)
and ``hgb`` (gradient-boosted trees), the classical rungs; ``shallow`` (one hidden layer) and
``deep`` (residual MLP with categorical embeddings), the networks. Every rung is registrable:
the champion is the best of the whole ladder on the validation split's primary metric. Each
member fits its own :class:`~deepflow.kinds.table.features.Preprocessor` on the training split
and ships it inside its :class:`~deepflow.kinds.table.scorer.TableScorer`.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from deepflow import explain, importance, plots, stats, training, usecase
from deepflow.config import ConfigError
from deepflow.kinds.table import figures, metrics
from deepflow.kinds.table.config import MEMBERS, TableConfig
from deepflow.kinds.table.features import Lookup, Preprocessor, category_codes
from deepflow.kinds.table.scorer import TableScorer

SPLITS = ("train", "val", "test")
CLASSICAL = ("linear", "hgb")
FIT_MARGIN_S = 0.5  # of a network's time limit, kept for restoring the best weights and the scorer


def batch_size(configured: int, rows: int) -> int:
    """``train.batch_size``, or with 0 one from the training rows: rows // 64 within [32, 1024]."""
    return configured if configured > 0 else int(np.clip(rows // 64, 32, 1024))


class TableUseCase(usecase.UseCase):
    kind = "table"
    families = {"linear": "classical", "hgb": "classical", "shallow": "shallow", "deep": "deep"}

    def __init__(self, entry: usecase.Entry, cfg: TableConfig) -> None:
        super().__init__(entry, cfg)
        where = entry.path
        if not cfg.prepared_dir:
            raise ConfigError(f"{where}: config.prepared_dir is not set")
        if not cfg.target:
            raise ConfigError(f"{where}: config.target is not set (the column to predict)")
        if not cfg.features():
            raise ConfigError(f"{where}: no feature columns (config.columns has no numeric, boolean, categorical "
                              "or datetime column)")
        if cfg.task == "binary" and len(cfg.classes) != 2:
            raise ConfigError(f"{where}: a binary task needs classes: [negative, positive], got {cfg.classes}")
        if cfg.task == "multiclass" and len(cfg.classes) < 3:
            raise ConfigError(f"{where}: a multiclass task needs three or more classes, got {cfg.classes}")
        if unknown := [m for m in cfg.members if m not in MEMBERS]:
            raise ConfigError(f"{where}: members: unknown {unknown[0]!r} (known: {', '.join(MEMBERS)})")
        if not cfg.members:
            raise ConfigError(f"{where}: members is empty (the ladder: {', '.join(MEMBERS)})")
        if self.primary_metric not in metrics.PRIMARY[cfg.task]:
            raise ConfigError(f"{where}: metric {cfg.metric!r} cannot rank {cfg.task} models (higher must be "
                              f"better, never plain accuracy): use one of {', '.join(metrics.PRIMARY[cfg.task])}")

    @property
    def primary_metric(self) -> str:  # type: ignore[override]
        """``metric:`` of the entry, else by task (AUPRC for a positive class under 20 %)."""
        cfg = self.cfg
        if cfg.metric:
            return cfg.metric
        share = cfg.class_share.get(cfg.classes[1]) if cfg.task == "binary" else None
        return metrics.default_metric(cfg.task, None if not share else float(np.mean(share)))

    @property
    def summary_metrics(self) -> tuple[str, ...]:  # the CLI's table: the primary first
        primary = self.primary_metric
        return (primary, *(m for m in metrics.SUMMARY[self.cfg.task] if m != primary))

    # --- data ---------------------------------------------------------------------------------

    def schema(self) -> dict:
        cfg = self.cfg
        return {"kind": self.kind, "target": cfg.target, "task": cfg.task, "classes": list(cfg.classes),
                "features": {f: cfg.columns[f].role for f in cfg.features()}}

    def load_splits(self) -> dict[str, pd.DataFrame]:
        return usecase.read_splits(self.name, self.prepared_dir, SPLITS)

    def validation_inputs(self, splits: dict[str, pd.DataFrame]) -> tuple[dict, dict]:
        from deepflow.kinds.table import expectations

        return expectations.frames(self.cfg, splits), expectations.suites(self.cfg)

    def members(self) -> list[tuple[str, str]]:
        """(member, kind): the classical rungs are "baseline", the networks "candidate"."""
        return [(m, "baseline" if m in CLASSICAL else "candidate") for m in self.cfg.members]

    def registrable(self, kind: str) -> bool:
        return True  # the whole ladder competes for the champion

    def y(self, frame: pd.DataFrame) -> np.ndarray:
        """The target as the models see it: class index (classification) or float64 (regression)."""
        values = frame[self.cfg.target]
        if self.cfg.task == "regression":
            return values.to_numpy(dtype=np.float64, na_value=np.nan)
        ids = category_codes(values, Lookup(self.cfg.classes)) - 1
        if (ids < 0).any():
            bad = sorted(set(values[ids < 0].astype(str)))[:5]
            raise ValueError(f"{self.name}: target values outside classes {self.cfg.classes}: {bad}")
        return ids

    # --- training -----------------------------------------------------------------------------

    def fit(self, name: str, kind: str, splits: dict[str, pd.DataFrame], log=None, fast_dev_run: bool = False,
            time_limit_s: float | None = None):
        """Train one rung within ``time_limit_s`` seconds when given; returns (scorer, info)."""
        from threadpoolctl import threadpool_limits

        started = time.perf_counter()
        deadline = None if time_limit_s is None else started + time_limit_s
        cfg, m = self.cfg, self.cfg.model
        threads = training.seed_everything(cfg.train.seed, cfg.train.threads).threads  # 0: from the machine
        pre = Preprocessor.create(cfg.columns, cfg.features()).fit(splits["train"])
        train, val = ((*pre.transform(splits[s], clip=name != "hgb"), self.y(splits[s])) for s in ("train", "val"))
        common = {"task": cfg.task, "classes": list(cfg.classes) if cfg.task != "regression" else []}
        if name == "linear":
            from deepflow.kinds.table.classical import fit_linear

            with threadpool_limits(threads):
                scorer, info = fit_linear(pre, train, val, metric=self.primary_metric, strengths=list(m.linear_c),
                                          seed=cfg.train.seed, deadline=deadline, **common)
        elif name == "hgb":
            from deepflow.kinds.table.classical import fit_hgb

            with threadpool_limits(threads):
                scorer, info = fit_hgb(pre, train, max_iter=1 if fast_dev_run else m.hgb_max_iter,
                                       learning_rate=m.hgb_learning_rate, seed=cfg.train.seed, deadline=deadline,
                                       **common)
        else:
            left = None if deadline is None else deadline - time.perf_counter() - FIT_MARGIN_S
            scorer, info = self._fit_net(name, pre, train, val, log, fast_dev_run, left, common)
        info = {**info, "fit_seconds": time.perf_counter() - started, "threads": threads,
                "inputs_numeric": len(pre.numeric_names), "inputs_categorical": len(pre.categorical)}
        if time_limit_s is not None:
            info["time_limit_s"] = time_limit_s
        return scorer, info

    def _fit_net(self, name: str, pre: Preprocessor, train: tuple, val: tuple, log, fast_dev_run: bool,
                 time_limit_s: float | None, common: dict):
        import torch

        from deepflow.kinds.table.models import TableSystem, build_net

        cfg = self.cfg
        task = cfg.task
        y_train, y_val = train[2], val[2]
        scale = None
        if task == "regression":
            scale = (float(y_train.mean()), float(y_train.std()) or 1.0)
            y_train = (y_train - scale[0]) / scale[1]
        y_type = torch.long if task == "multiclass" else torch.float32
        n_out = len(cfg.classes) if task == "multiclass" else 1
        net = build_net(name, train[0].shape[1], pre.cardinalities(), n_out, cfg.model)
        system = TableSystem(net, task, self.primary_metric, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                             target_scale=scale)

        def tensors(arrays: tuple, y: np.ndarray) -> tuple[torch.Tensor, ...]:
            return (torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1]), torch.tensor(np.asarray(y), dtype=y_type))

        size = batch_size(cfg.train.batch_size, len(y_train))
        result = training.fit(
            system,
            training.batches(*tensors(train, y_train), batch_size=size, shuffle=True, seed=cfg.train.seed),
            training.batches(*tensors(val, y_val), batch_size=8192, shuffle=False),
            max_epochs=cfg.train.epochs, monitor=f"val/{self.primary_metric}", mode="max",
            patience=cfg.train.patience, log=log, fast_dev_run=fast_dev_run,
            time_limit_s=None if time_limit_s is None else max(time_limit_s, 0.1),
            devices=cfg.train.devices, nodes=cfg.train.nodes,
        )
        info = {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "steps": result.steps,
                "train_seconds": result.seconds, "stopped_by": result.stopped_by, "batch_size": size,
                "parameters": sum(p.numel() for p in net.parameters())}
        return TableScorer(pre, net, member=name, family="net", target_scale=scale, **common), info

    # --- evaluation ---------------------------------------------------------------------------

    def evaluate(self, scores: np.ndarray, frame: pd.DataFrame) -> dict[str, float]:
        return metrics.evaluate(self.cfg.task, self.y(frame), scores)

    def primary_interval(self, scores: np.ndarray, frame: pd.DataFrame) -> stats.Interval:
        """Seeded bootstrap interval of the primary metric on ``frame``'s rows."""
        p = self.cfg.promotion
        return metrics.bootstrap(self.cfg.task, self.primary_metric, self.y(frame), scores,
                                 resamples=p.resamples, confidence=p.confidence, seed=p.seed)

    def primary_gain(self, challenger: np.ndarray, champion: np.ndarray, frame: pd.DataFrame) -> stats.Interval:
        """Paired bootstrap of primary(challenger) - primary(champion) on the same resampled rows."""
        p = self.cfg.promotion
        return metrics.bootstrap(self.cfg.task, self.primary_metric, self.y(frame), challenger, champion,
                                 resamples=p.resamples, confidence=p.confidence, seed=p.seed)

    def threshold(self, val_scores: np.ndarray, val: pd.DataFrame) -> float:
        """Binary: ``threshold:`` of the entry, else the best F1 on the validation split; else 0.5
        (multiclass decides by the arg-max class, regression has no decision)."""
        if self.cfg.task != "binary":
            return 0.5
        if self.cfg.threshold is not None:
            return float(self.cfg.threshold)
        return plots.best_f1_threshold(self.y(val), val_scores)

    def figures(self, member: str, scores: np.ndarray, frame: pd.DataFrame, threshold: float):
        y, task, title = self.y(frame), self.cfg.task, f"{self.name} {member}"
        if task == "regression":
            return {"plots/predicted_vs_actual.png": figures.predicted_vs_actual(y, scores, f"{title}: test"),
                    "plots/residuals.png": figures.residuals(y, scores, f"{title}: test residuals")}
        if task == "binary":
            decisions = (scores >= threshold).astype(int)
            return {"plots/pr_curve.png": plots.pr_curve(y, scores, f"{title}: test PR curve ({self.cfg.classes[1]})"),
                    "plots/confusion_matrix.png": plots.confusion(y, decisions, list(self.cfg.classes),
                                                                  f"{member} @ {threshold:.3g}")}
        return {"plots/confusion_matrix.png": plots.confusion(y, scores.argmax(1), list(self.cfg.classes),
                                                              f"{title}: test")}

    def explanation_background(self, scorer, train: pd.DataFrame) -> pd.DataFrame:
        return explain.background_sample(train, scorer.features, seed=self.cfg.promotion.seed)

    def reports(self, member: str, scorer, scores: np.ndarray, frame: pd.DataFrame) -> dict:
        """The model card's "what the model relies on" (``card/importance.md``): Shapley values and
        permutation importance of the raw columns on the test split, its plot and the sentence the
        bake-off report lists."""
        task, classes = self.cfg.task, list(self.cfg.classes)
        unit = {"binary": f"probability of {classes[-1]!r}" if classes else "probability",
                "multiclass": "class probabilities (summed over the classes)",
                "regression": "predicted value"}[task]
        imp = importance.column_importance(
            scorer.predict, frame, explain.background_or_sample(scorer, frame, scorer.features), self.primary_metric,
            lambda s, rows: metrics.value(task, self.primary_metric, self.y(rows), s), unit,
            permutation_rows=2000, seed=self.cfg.promotion.seed)
        roles = {f: scorer.preprocessor.role(f) for f in scorer.features}
        return importance.column_reports(member, self.name, imp, roles)

    def input_example(self, frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
        """Five raw rows (the most complete ones) in the prepared dtypes, so MLflow infers a signature:
        numbers and booleans double, categories string, dates datetime. A column missing in all five
        gets a known value (a category) so its type can still be inferred."""
        cols = list(columns or self.cfg.features())
        order = np.argsort(frame[cols].isna().sum(axis=1).to_numpy(), kind="stable")[:5]
        example = frame[cols].iloc[order].reset_index(drop=True)
        for c in cols:
            spec = self.cfg.columns.get(c)
            if spec is not None and spec.role == "categorical":
                example[c] = example[c].astype(object).where(example[c].notna(), None)
                if example[c].isna().all():
                    example[c] = (spec.categories or ["other"])[0]
        return example

