"""The ``tabular`` kind's use case: binary classification of rows with numeric features.

Data, contract, candidates (shallow MLP, deep residual MLP, autoencoder, entity-sequence model),
classical baselines, metrics (AUPRC, ROC-AUC, entity precision@k when the entry names an entity
and a time column) and plots. Every entry of kind ``tabular`` (a ``datasets/<name>.yaml``) is
this class over its own config.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score

from deepflow import explain, importance, plots, stats, training, usecase
from deepflow.config import ConfigError
from deepflow.kinds.tabular import baselines, sequences
from deepflow.kinds.tabular.config import TabularConfig
from deepflow.kinds.tabular.metrics import binary_metrics
from deepflow.kinds.tabular.models import Standardize, TabularSystem, build_net, sequence_scalers
from deepflow.scoring import TorchScorer

SPLITS = ("train", "val", "test")
CANDIDATES = ("shallow", "deep", "autoencoder", "sequence")


class TabularUseCase(usecase.UseCase):
    kind = "tabular"
    primary_metric = "auprc"  # logged as val/auprc and test/auprc
    families = {"shallow": "shallow", "deep": "deep", "autoencoder": "deep", "sequence": "deep"}  # bake-off verdict

    def __init__(self, entry: usecase.Entry, cfg: TabularConfig) -> None:
        super().__init__(entry, cfg)
        if not cfg.features:
            raise ConfigError(f"{entry.path}: config.features is empty (name the feature columns)")
        if not cfg.prepared_dir:
            raise ConfigError(f"{entry.path}: config.prepared_dir is not set")
        if len(cfg.class_names) != 2:
            raise ConfigError(f"{entry.path}: config.class_names must name label 0 and label 1")
        for key, names, known in (("candidates", cfg.candidates, CANDIDATES),
                                  ("baselines", cfg.baselines, baselines.KNOWN)):
            if unknown := [n for n in names if n not in known]:
                raise ConfigError(f"{key}: unknown {unknown[0]!r} (known: {', '.join(known)})")

    # --- data ---------------------------------------------------------------------------------

    @property
    def summary_metrics(self) -> tuple[str, ...]:  # the CLI's table: the metrics binary_metrics logs
        return ("auprc", "roc_auc", f"card_precision_at_{self.cfg.top_k}")

    def schema(self) -> dict:
        return {"kind": self.kind, "label": self.cfg.label, "classes": list(self.cfg.class_names),
                "features": list(self.cfg.features)}

    def load_splits(self) -> dict[str, pd.DataFrame]:
        return usecase.read_splits(self.name, self.prepared_dir, SPLITS)

    def validation_inputs(self, splits: dict[str, pd.DataFrame]) -> tuple[dict, dict]:
        """(frames, suites) for ``validation.validate``."""
        from deepflow.kinds.tabular import expectations

        return expectations.frames(self.cfg, splits), expectations.suites(self.cfg)

    def members(self) -> list[tuple[str, str]]:
        """(name, kind) of everything trained in a run; kind is "candidate" or "baseline"."""
        return [(c, "candidate") for c in self.cfg.candidates] + [
            (b, "baseline") for b in self.cfg.baselines
        ]

    def member_features(self, name: str) -> list[str]:
        """The columns a member reads: the sequence model adds the entity's history (sequences.py)."""
        if name == "sequence":
            return [*self.cfg.features, *sequences.columns(self.cfg.features, self.cfg.model.seq_length)]
        return list(self.cfg.features)

    # --- training -----------------------------------------------------------------------------

    def fit(self, name: str, kind: str, splits: dict[str, pd.DataFrame], log=None,
            fast_dev_run: bool = False, time_limit_s: float | None = None):
        """Train one member; returns (scorer, info). Baselines ignore ``time_limit_s``."""
        cfg = self.cfg
        training.seed_everything(cfg.train.seed, cfg.train.threads)
        if kind == "baseline":
            return baselines.fit_baseline(name, cfg, splits["train"]), {}
        train = splits["train"]
        features = self.member_features(name)
        if missing := [c for c in features if c not in train.columns]:
            raise ValueError(f"{self.name}: the prepared data has no {missing[0]} column; the {name} candidate "
                             f"needs the entity history columns (see sequences.py)")
        x_train = _tensor(train[features])
        step_scaler = None
        if name == "sequence":
            scaler, step_scaler = sequence_scalers(x_train.numpy(), len(cfg.features), cfg.model.seq_length)
        else:
            scaler = Standardize(x_train.mean(0).numpy(), x_train.std(0).numpy())
        net, objective = build_net(name, scaler, cfg.model, step_scaler)
        y_train = _tensor(train[cfg.label])
        if objective == "reconstruction":  # the autoencoder learns what a negative row looks like
            x_train, y_train = x_train[y_train == 0], y_train[y_train == 0]
        system = TabularSystem(net, objective, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        val = splits["val"]
        result = training.fit(
            system,
            training.batches(x_train, y_train, batch_size=cfg.train.batch_size, shuffle=True,
                             seed=cfg.train.seed),
            training.batches(_tensor(val[features]), _tensor(val[cfg.label]),
                             batch_size=8192, shuffle=False),
            max_epochs=cfg.train.epochs,
            monitor="val/auprc",
            patience=cfg.train.patience,
            log=log,
            fast_dev_run=fast_dev_run,
            time_limit_s=time_limit_s,
            devices=cfg.train.devices, nodes=cfg.train.nodes,
        )
        output = "score" if objective == "reconstruction" else "logit"
        info = {
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "steps": result.steps,
            "fit_seconds": result.seconds,
            "parameters": sum(p.numel() for p in net.parameters()),
        }
        return TorchScorer(net, features, output), info

    # --- evaluation ---------------------------------------------------------------------------

    def evaluate(self, scores: np.ndarray, frame: pd.DataFrame) -> dict[str, float]:
        c = self.cfg
        return binary_metrics(frame, scores, k=c.top_k, entity=c.entity_column, label=c.label,
                             time=c.time_column)

    def primary_interval(self, scores: np.ndarray, frame: pd.DataFrame) -> stats.Interval:
        """Bootstrap interval of test AUPRC (seeded by the promotion policy)."""
        p = self.cfg.promotion
        return stats.bootstrap_ap(frame[self.cfg.label].to_numpy(), scores, resamples=p.resamples,
                                  confidence=p.confidence, seed=p.seed)

    def primary_gain(self, challenger: np.ndarray, champion: np.ndarray, frame: pd.DataFrame) -> stats.Interval:
        """Paired-bootstrap interval of AUPRC(challenger) - AUPRC(champion) on the same rows."""
        p = self.cfg.promotion
        return stats.paired_bootstrap_ap(frame[self.cfg.label].to_numpy(), challenger, champion,
                                         resamples=p.resamples, confidence=p.confidence, seed=p.seed)

    def threshold(self, val_scores: np.ndarray, val: pd.DataFrame) -> float:
        if self.cfg.threshold is not None:
            return self.cfg.threshold
        return plots.best_f1_threshold(val[self.cfg.label].to_numpy(), val_scores)

    def figures(self, member: str, scores: np.ndarray, frame: pd.DataFrame, threshold: float):
        y = frame[self.cfg.label].to_numpy()
        return {
            "plots/pr_curve.png": plots.pr_curve(y, scores, f"{self.name} {member}: test PR curve"),
            "plots/confusion_matrix.png": plots.confusion(
                y, (scores >= threshold).astype(int), list(self.cfg.class_names),
                f"{member} @ {threshold:.3g}",
            ),
        }

    # --- explanations (deepflow.explain) ---------------------------------------------------------

    def explanation_background(self, scorer, train: pd.DataFrame) -> pd.DataFrame:
        return explain.background_sample(train, scorer.features, seed=self.cfg.promotion.seed)

    def reports(self, member: str, scorer, scores: np.ndarray, frame: pd.DataFrame) -> dict:
        """The model card's "what the model relies on": Shapley values and permutation importance of
        the features on the test split, with a plot and the sentence the bake-off report lists."""
        label = self.cfg.label
        unit = ("anomaly score" if getattr(scorer, "output", "logit") == "score"
                else f"probability of {self.cfg.class_names[1]!r}")

        def auprc(s: np.ndarray, rows: pd.DataFrame) -> float:
            y = rows[label].to_numpy()
            return float(average_precision_score(y, s)) if 0 < y.sum() < len(y) else float("nan")

        background = explain.background_or_sample(scorer, frame, scorer.features)
        imp = importance.column_importance(scorer.predict, frame, background, self.primary_metric, auprc, unit,
                                        permutation_rows=10_000, seed=self.cfg.promotion.seed)
        return importance.column_reports(member, self.name, imp)

    def input_example(self, frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
        """Five rows of the columns a scorer reads (``columns``, default: the entry's features)."""
        # Every feature as double: an integer column could not carry a missing value.
        return frame[list(columns or self.cfg.features)].head(5).reset_index(drop=True).astype("float64")


def _tensor(values: pd.DataFrame | pd.Series) -> torch.Tensor:
    return torch.from_numpy(values.to_numpy(dtype=np.float32, copy=True))
