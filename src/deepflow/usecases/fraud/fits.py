"""Fitting and assessing one model on the prequential folds (``protocol.py``).

Classical models are built by ``deepflow.kinds.tabular.baselines`` with seed :data:`CLASSICAL_SEED`
(the seed of the benchmark numbers recorded in docs/benchmarks.md); the isolation forest and the
Lightning networks use the config's ``train.seed``. :func:`run_folds` fits and assesses a model on
each fold; :func:`summarise` gives the mean and std over folds that the search and the report read.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from deepflow import training
from deepflow.kinds.tabular import baselines, sequences
from deepflow.kinds.tabular.config import TabularConfig
from deepflow.kinds.tabular.metrics import binary_metrics
from deepflow.kinds.tabular.models import Standardize, TabularSystem, build_net, sequence_scalers
from deepflow.scoring import TorchScorer
from deepflow.usecases.fraud.protocol import FoldData

SKLEARN = baselines.KNOWN  # logistic regression, random forest, XGBoost
TORCH = ("ffn", "sequence")
UNSUPERVISED = ("autoencoder", "isolation_forest")
KNOWN = (*SKLEARN, *TORCH)
CLASSICAL_SEED = 0  # the classical models' seed in every recorded prequential run: keep it


def features_of(cfg: TabularConfig, model: str, params: dict[str, Any]) -> list[str]:
    """The input columns of ``model``: the sequence model adds ``params["seq_length"]`` history steps."""
    if model == "sequence":
        return [*cfg.features, *sequences.columns(cfg.features, int(params["seq_length"]))]
    return list(cfg.features)


def fit_predict(cfg: TabularConfig, model: str, params: dict[str, Any], train: pd.DataFrame,
                assess: pd.DataFrame, extra: list[str] = ()) -> tuple[np.ndarray, dict[str, float]]:
    """Fit ``model`` with ``params`` on ``train``; scores of ``assess`` and fit facts.

    ``extra``: further input columns (the autoencoder's reconstruction error)."""
    threads = cfg.prequential.threads
    features = [*features_of(cfg, model, params), *extra]
    start = time.perf_counter()
    if model in SKLEARN or model == "isolation_forest":
        estimator = _estimator(model, params, cfg.train.seed, threads)
        x = train[features].to_numpy(dtype=np.float32)
        if model == "isolation_forest":
            estimator.fit(x)
            fitted = time.perf_counter() - start
            scores = -estimator.score_samples(assess[features].to_numpy(dtype=np.float32))
        else:
            estimator.fit(x, train[cfg.label].to_numpy())
            fitted = time.perf_counter() - start
            scores = estimator.predict_proba(assess[features].to_numpy(dtype=np.float32))[:, 1]
        return np.asarray(scores, dtype=np.float64), {"fit_s": fitted, "parameters": 0}
    net, output = fit_net(cfg, model, params, train, features)
    fitted = time.perf_counter() - start
    scores = TorchScorer(net, features, output).predict(assess)
    return scores, {"fit_s": fitted, "parameters": sum(p.numel() for p in net.parameters())}


def _estimator(model: str, params: dict[str, Any], seed: int, threads: int) -> Any:
    """The unfitted sklearn/XGBoost model: classical ones (the handbook scales inputs for every
    model) seeded with CLASSICAL_SEED, the isolation forest with ``seed``."""
    if model in SKLEARN:
        return baselines.build(model, params, seed=CLASSICAL_SEED, threads=threads)
    if model == "isolation_forest":
        from sklearn.ensemble import IsolationForest

        return IsolationForest(n_estimators=int(params.get("n_estimators", 100)), n_jobs=threads or None,
                               random_state=seed)
    raise KeyError(f"unknown prequential model {model!r} (known: {', '.join(KNOWN + UNSUPERVISED)})")


def fit_net(cfg: TabularConfig, model: str, params: dict[str, Any], train: pd.DataFrame,
            features: list[str]) -> tuple[Any, str]:
    """Train a Lightning candidate for exactly ``params["epochs"]`` epochs (no early stopping: the
    assessment week is never looked at). Returns (network, output kind)."""
    training.seed_everything(cfg.train.seed, cfg.prequential.threads)
    x = torch_tensor(train[features])
    y = torch_tensor(train[cfg.label])
    m = dataclasses.replace(cfg.model, **{k: v for k, v in params.items() if hasattr(cfg.model, k)})
    step_scaler = None
    if model == "sequence":
        scaler, step_scaler = sequence_scalers(x.numpy(), len(cfg.features), m.seq_length)
        if len(features) > len(cfg.features) + len(sequences.columns(cfg.features, m.seq_length)):
            raise ValueError("extra inputs are for the flat models only")
    else:
        scaler = Standardize(x.mean(0).numpy(), x.std(0).numpy())
    net, objective = build_net(model, scaler, m, step_scaler)
    if objective == "reconstruction":  # the autoencoder learns what genuine looks like
        x, y = x[y == 0], y[y == 0]
    system = TabularSystem(net, objective, lr=float(params.get("lr", cfg.train.lr)),
                           weight_decay=float(params.get("weight_decay", cfg.train.weight_decay)))
    loader = training.batches(x, y, batch_size=int(params.get("batch_size", cfg.train.batch_size)), shuffle=True,
                              seed=cfg.train.seed)
    with warnings.catch_warnings():  # "validation_step but no val_dataloader": on purpose
        warnings.filterwarnings("ignore", message=".*val_dataloader.*")
        training.fit(system, loader, None, max_epochs=int(params["epochs"]), monitor="val/auprc", patience=0)
    return net, ("score" if objective == "reconstruction" else "logit")


def torch_tensor(values: pd.DataFrame | pd.Series) -> Any:
    import torch

    return torch.from_numpy(values.to_numpy(dtype=np.float32, copy=True))


def metrics(cfg: TabularConfig, frame: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    """The kind's binary metrics of ``scores`` on ``frame`` (AP, ROC-AUC, entity precision@top_k)."""
    return binary_metrics(frame, scores, k=cfg.top_k, entity=cfg.entity_column, label=cfg.label,
                          time=cfg.time_column)


def run_folds(cfg: TabularConfig, model: str, params: dict[str, Any], data: FoldData,
              on_fold: Callable[[int, list[dict]], None] | None = None,
              extra: list[str] = ()) -> dict[str, Any]:
    """Fit and assess ``model`` on each fold; ``on_fold(i, so_far)`` may raise to stop early."""
    per: list[dict[str, Any]] = []
    for i, (fold, train, assess) in enumerate(data):
        start = time.perf_counter()
        scores, facts = fit_predict(cfg, model, params, train, assess, extra)
        per.append({"fold": fold.name, "train_start": fold.train_start, **metrics(cfg, assess, scores),
                    **facts, "seconds": time.perf_counter() - start, "train_rows": len(train),
                    "assess_rows": len(assess)})
        if on_fold is not None:
            on_fold(i, per)
    return summarise(per)


def summarise(per: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and (population, as sklearn's GridSearchCV and the handbook) std of each metric."""
    names = [k for k in per[0] if k not in ("fold", "train_start", "fit_s", "parameters", "seconds",
                                             "train_rows", "assess_rows")]
    return {
        "folds": per,
        "mean": {k: float(np.mean([f[k] for f in per])) for k in names},
        "std": {k: float(np.std([f[k] for f in per])) for k in names},
        "seconds": float(sum(f.get("seconds", 0.0) for f in per)),
        "parameters": int(per[-1].get("parameters", 0)),
    }
