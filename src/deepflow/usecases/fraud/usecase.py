"""The fraud use case, wired for the pipeline: data, contract, candidates, metrics, plots.

The same class serves any transaction schema through config alone (``paysim.yaml``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deepflow import plots, stats, training, usecase
from deepflow.config import ConfigError
from deepflow.scoring import TorchScorer
from deepflow.usecases.fraud import baselines, sequences
from deepflow.usecases.fraud.config import FraudConfig
from deepflow.usecases.fraud.metrics import fraud_metrics
from deepflow.usecases.fraud.models import FraudSystem, Standardize, build_net, sequence_scalers

SPLITS = ("train", "val", "test")
CANDIDATES = ("shallow", "deep", "autoencoder", "sequence")


class FraudUseCase:
    config_cls = FraudConfig
    primary_metric = "auprc"  # logged as val/auprc and test/auprc
    families = {"shallow": "shallow", "deep": "deep", "autoencoder": "deep", "sequence": "deep"}  # bake-off verdict

    def __init__(self, name: str, cfg: FraudConfig) -> None:
        self.name, self.cfg = name, cfg
        for key, names, known in (("candidates", cfg.candidates, CANDIDATES),
                                  ("baselines", cfg.baselines, baselines.KNOWN)):
            if unknown := [n for n in names if n not in known]:
                raise ConfigError(f"{key}: unknown {unknown[0]!r} (known: {', '.join(known)})")

    # --- data ---------------------------------------------------------------------------------

    @property
    def prepared_dir(self) -> Path:
        return usecase.project_path(self.cfg.prepared_dir)

    def load_splits(self) -> dict[str, pd.DataFrame]:
        return usecase.read_splits(self.name, self.prepared_dir, SPLITS)

    def validation_inputs(self, splits: dict[str, pd.DataFrame]) -> tuple[dict, dict]:
        """(frames, suites) for ``validation.validate``."""
        from deepflow.usecases.fraud import expectations

        return expectations.frames(self.cfg, splits), expectations.suites(self.cfg)

    def members(self) -> list[tuple[str, str]]:
        """(name, kind) of everything trained in a run; kind is "candidate" or "baseline"."""
        return [(c, "candidate") for c in self.cfg.candidates] + [
            (b, "baseline") for b in self.cfg.baselines
        ]

    def registrable(self, kind: str) -> bool:
        return kind == "candidate" or self.cfg.register_baselines

    def member_features(self, name: str) -> list[str]:
        """The columns a member reads: the sequence model adds the card's history (sequences.py)."""
        if name == "sequence":
            return [*self.cfg.features, *sequences.columns(self.cfg.features, self.cfg.model.seq_length)]
        return list(self.cfg.features)

    # --- training -----------------------------------------------------------------------------

    def fit(self, name: str, kind: str, splits: dict[str, pd.DataFrame], log=None,
            fast_dev_run: bool = False):
        """Train one member; returns (scorer, info)."""
        cfg = self.cfg
        training.seed_everything(cfg.train.seed, cfg.train.threads)
        if kind == "baseline":
            return baselines.fit_baseline(name, cfg, splits["train"]), {}
        train = splits["train"]
        features = self.member_features(name)
        if missing := [c for c in features if c not in train.columns]:
            raise ValueError(f"{self.name}: the prepared data has no {missing[0]} column; the {name} candidate "
                             f"needs the card history (`dvc repro {cfg.dvc_stage}`)")
        x_train = _tensor(train[features])
        step_scaler = None
        if name == "sequence":
            scaler, step_scaler = sequence_scalers(x_train.numpy(), len(cfg.features), cfg.model.seq_length)
        else:
            scaler = Standardize(x_train.mean(0).numpy(), x_train.std(0).numpy())
        net, objective = build_net(name, scaler, cfg.model, step_scaler)
        y_train = _tensor(train[cfg.label])
        if objective == "reconstruction":  # the autoencoder learns what genuine looks like
            x_train, y_train = x_train[y_train == 0], y_train[y_train == 0]
        system = FraudSystem(net, objective, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
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
        return fraud_metrics(frame, scores, k=c.top_k, entity=c.entity_column, label=c.label,
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
                y, (scores >= threshold).astype(int), ["genuine", "fraud"],
                f"{member} @ {threshold:.3g}",
            ),
        }

    def input_example(self, frame: pd.DataFrame, features: list[str] | None = None) -> pd.DataFrame:
        """Five rows of the columns a scorer reads (``features``, default: the per-transaction ones)."""
        # Every feature as double: an integer column could not carry a missing value.
        return frame[list(features or self.cfg.features)].head(5).reset_index(drop=True).astype("float64")


def _tensor(values: pd.DataFrame | pd.Series) -> torch.Tensor:
    return torch.from_numpy(values.to_numpy(dtype=np.float32, copy=True))
